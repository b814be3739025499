"""Which workspace dataset each saved model was trained on (JSON only: no torch, cheap enough per page).

A model folder keeps the data fingerprint of its training log (``fingerprint.json``) and a dataset
folder keeps its own (``manifest.json``); equal fingerprints mean the same events, so the match holds
even when a dataset is renamed, and a dataset re-saved with other events no longer claims the model.
"""

from __future__ import annotations

import logging

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.catalog import read_json
from crossrec_core.storage.datasets import list_datasets
from crossrec_core.storage.workspace import models_dir

log = logging.getLogger(__name__)


def model_fingerprint(name: str, root=None) -> str:
    """Return the data fingerprint a saved model was trained on ('' when the folder does not record one)."""
    path = models_dir(root) / name / "fingerprint.json"
    try:
        return str(read_json(path).get("data_fingerprint", "")) if path.is_file() else ""
    except CrossrecError as err:
        log.warning("cannot read %s: %s", path, err)
        return ""


def trained_on(model_names, root=None) -> dict[str, tuple[str, ...]]:
    """Return {model name: names of the workspace datasets holding its training log (sorted; empty: none)}."""
    by_fp: dict[str, list[str]] = {}
    for info in list_datasets(root):
        if info.fingerprint:
            by_fp.setdefault(info.fingerprint, []).append(info.name)
    out = {}
    for name in model_names:
        fp = model_fingerprint(name, root)
        out[name] = tuple(sorted(by_fp.get(fp, ()))) if fp else ()
    return out
