"""Per-row int8 tables and weight matrices: what `crossrec compress` writes and what loading a compressed model reads back.

Kept apart from storage/compress.py (which loads and writes whole model folders through the registry) so that
the registry can restore a compressed model's weights without importing the code that makes them.
"""

from __future__ import annotations

import torch

COMPRESSION_FILE = "compression.json"
INT8, SCALE = ".int8", ".int8_scale"  # suffixes of a quantised table's two tensors


def quantise_rows(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (int8 (n, d), float32 (n,) scales) of a float table: symmetric per-row int8."""
    t = table.detach().float()
    scale = (t.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    return torch.round(t / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def dequantise_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Return the float32 table of ``quantise_rows``'s output."""
    return q.float() * scale.float()[:, None]


def restore_weights(weights: dict[str, torch.Tensor], record: dict) -> dict[str, torch.Tensor]:
    """Return the float32 tensors of a compressed model.safetensors dict (``record``: its compression.json)."""
    out = dict(weights)
    for key in [*record.get("int8_tables", []), *record.get("int8_layers", [])]:
        q, scale = out.pop(key + INT8, None), out.pop(key + SCALE, None)
        if q is None or scale is None:
            raise KeyError(f"{key}{INT8}")
        out[key] = dequantise_rows(q, scale)
    return out
