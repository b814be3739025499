"""Smaller model folders for CPU serving: the item tables and the layers' weights in int8, optionally pruned.

What takes the room in a model folder is the per-item tables: the title embeddings (n_items x 384 floats,
80 % of the hm model's weights) and the ID embeddings (n_items x d). ``compress_model`` writes a copy of a
model folder whose 2-D float tables with one row per item are stored as int8 with one float scale per row
(symmetric: row / scale rounded to -127..127, scale = the row's largest |value| / 127), a quarter of the
bytes. Loading (storage/registry.load_model) turns them back into float32, so a compressed model loads,
recommends and evaluates like any other; only the rounding differs, and bench/RESULTS.md says by how
much on each log.

Optionally, ``prune`` zeroes that share of the smallest-magnitude weights of every dense layer (magnitude
pruning). The folder does not shrink from it (safetensors stores zeros as zeros); it is here to measure
what the layers can lose.

Every other weight matrix (the Linear layers of the encoders and the fusion scorer, the recurrent layers' matrices,
the small embedding tables) is stored the same way, with one scale per output row: weight-only int8. Loading turns
them back into float32 too, so the arithmetic at run time is float32. Why not dynamic int8 arithmetic
(torch.ao.quantization.quantize_dynamic, which also quantises each batch's activations): the layers are 64-384 wide,
and on this CPU a quantised 64x192x64 MLP over 50k rows ran 0.75 s against 0.70 s in float32 (one thread,
session 18; session 7: 1.03 s against 1.06 s for 64x128x64 over 200k rows): no speed to win, and torch 2.13
deprecates that API for removal in favour of torchao, which is not a dependency here.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from crossrec_core.errors import ConfigError
from crossrec_core.storage.int8 import COMPRESSION_FILE, INT8, SCALE, quantise_rows
from crossrec_core.storage.registry import load_model, read_safetensors, write_safetensors
from crossrec_core.storage.workspace import atomic_dir, atomic_write_json, disk_full_is_plain



@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """What ``compress_model`` does: int8 item tables, int8 layer weights, the share of dense weights to prune (0 = none)."""

    int8_tables: bool = True
    int8_layers: bool = True
    prune: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.prune) < 1.0:
            raise ConfigError(f"prune must be a share in [0, 1), got {self.prune!r}.")


def prune_smallest(weight: torch.Tensor, share: float) -> torch.Tensor:
    """Return ``weight`` with its ``share`` smallest-magnitude entries set to 0 (ties: any of them)."""
    k = int(share * weight.numel())
    if k <= 0:
        return weight
    flat = weight.detach().abs().flatten()
    cut = torch.kthvalue(flat, k).values
    return torch.where(weight.abs() <= cut, torch.zeros_like(weight), weight)


def compress_weights(weights: dict[str, torch.Tensor], n_items: int, config: CompressConfig) -> tuple[dict, dict]:
    """Return (compressed tensors, the record for compression.json) of a model.safetensors dict.

    Pruning comes first, so a pruned weight is 0 in int8 too.
    """
    out, tables, layers, pruned = {}, [], [], []
    for key, value in weights.items():
        matrix = value.ndim == 2 and value.is_floating_point() and value.numel() > 0
        is_table = matrix and value.shape[0] == n_items and n_items > 1
        if config.int8_tables and key.startswith("item_encoder.") and is_table:
            out[key + INT8], out[key + SCALE] = quantise_rows(value)
            tables.append(key)
            continue
        dense = matrix and key.endswith(".weight") and "emb" not in key and not is_table
        if config.prune > 0 and dense:
            value = prune_smallest(value, config.prune)
            pruned.append(key)
        if config.int8_layers and matrix and not is_table:
            out[key + INT8], out[key + SCALE] = quantise_rows(value)
            layers.append(key)
            continue
        out[key] = value
    return out, {"format": 1, "int8_tables": tables, "int8_layers": layers, "pruned": pruned, "prune": float(config.prune)}


def compress_model(src: str | Path, out: str | Path, config: CompressConfig = CompressConfig()) -> dict:
    """Write a compressed copy of the model folder ``src`` to ``out``; return sizes and what changed.

    The source is loaded first (every check a load does), the copy is written atomically and loaded back
    before this returns, so a folder that comes out of here is one ``load_model`` accepts.
    """
    src, out = Path(src).expanduser(), Path(out).expanduser()
    model = load_model(src)  # validates the source (and refuses pickles, damaged files)
    if (src / COMPRESSION_FILE).is_file():
        raise ConfigError(f"{src.name} is already compressed. Compress the original model instead.")
    if out.resolve() == src.resolve():
        raise ConfigError("--out must be a new folder: compressing keeps the original model.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists. Choose a new name for the compressed copy: compressing never replaces a folder.")
    weights = read_safetensors(src / "model.safetensors")
    small, record = compress_weights(weights, len(model.item_ids), config)
    record["source"] = model.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as staging:
        for f in src.iterdir():
            if f.is_file() and f.name != "model.safetensors" and not f.name.startswith("."):
                with disk_full_is_plain(f"'{out.name}'", out.parent):
                    shutil.copy2(f, staging / f.name)
        write_safetensors(staging / "model.safetensors", small)
        atomic_write_json(staging / COMPRESSION_FILE, record)
    load_model(out)  # what we wrote loads
    size = lambda folder: sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())  # noqa: E731
    return {"source_bytes": size(src), "compressed_bytes": size(out), "int8_tables": record["int8_tables"],
            "int8_layers": record["int8_layers"], "pruned_layers": len(record["pruned"]), "prune": record["prune"]}
