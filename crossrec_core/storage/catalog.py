"""The list of saved models: JSON only, so pages and `crossrec models` list models without importing torch.

Loading weights lives in registry.py (which imports torch); this module only reads each model folder's
config.json and metrics.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from crossrec_core.errors import CrossrecError, ModelError
from crossrec_core.storage.workspace import models_dir

log = logging.getLogger(__name__)

# The model folder format registry.py writes and reads (2: the fusion scorer over cross-category
# features + calibration.json); kept here so light modules can check it without importing torch.
MODEL_FORMAT_VERSION = 2


@dataclass(frozen=True)
class ModelInfo:
    """One saved model in the workspace, as shown by `crossrec models`."""

    name: str
    path: Path
    n_items: int
    best_epoch: int | None
    valid_ndcg10: float | None
    encoder: str
    size_bytes: int
    modified: float



def read_json(path: Path) -> dict:
    """Return a JSON file's content; ModelError when missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"{path.name} is missing from {path.parent}. The model folder is incomplete.") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"{path.name} in {path.parent} is not valid JSON ({err}).") from err


def list_models(root=None) -> list[ModelInfo]:
    """Return the models saved in the workspace models folder, newest first (damaged ones skipped)."""
    out = []
    for folder in models_dir(root).iterdir():
        if not folder.is_dir() or folder.name.startswith(".") or not (folder / "config.json").is_file():
            continue
        try:
            meta = read_json(folder / "config.json")
            metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            out.append(
                ModelInfo(
                    name=folder.name,
                    path=folder,
                    n_items=int(meta.get("sizes", {}).get("n_items", 0)),
                    best_epoch=metrics.get("best_epoch"),
                    valid_ndcg10=(metrics.get("valid") or {}).get("ndcg10"),
                    encoder=str(meta.get("config", {}).get("user", {}).get("kind", "?")),
                    size_bytes=size,
                    modified=(folder / "config.json").stat().st_mtime,
                )
            )
        except (CrossrecError, OSError) as err:
            log.warning("skipping %s: %s", folder.name, err)
    return sorted(out, key=lambda m: -m.modified)


