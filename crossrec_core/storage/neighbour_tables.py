"""The item-neighbour tables of a saved model (aux.safetensors): the term of retrieval (``knn_*``, with its
weight) and the next-item rules the fusion scorer reads (``rules_*``), each a CSR similarity with the settings
it scores histories by. Written by ``registry.save_model``, checked and read back by ``registry.load_model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crossrec_core.errors import ModelError
from crossrec_core.models.item_knn import ItemKNNRanker


def neighbour_tensors(model) -> dict[str, torch.Tensor]:
    """Return the item-neighbour tables' CSR arrays, settings and weight as tensors: ``knn_*`` for the term of
    retrieval, ``rules_*`` for the next-item rules the fusion scorer reads (empty when the model has none)."""
    out: dict[str, torch.Tensor] = {}
    knn, rules = getattr(model, "knn", None), getattr(model, "rules", None)
    for prefix, table in (("knn", knn), ("rules", rules)):
        if table is None or (prefix == "rules" and rules is knn):
            continue  # the rules ARE the term of retrieval: saved once, read back as both
        out.update({
            f"{prefix}_offsets": torch.from_numpy(np.array(table.sim_offsets_, dtype=np.int64)),
            f"{prefix}_items": torch.from_numpy(np.array(table.sim_items_, dtype=np.int32)),
            f"{prefix}_values": torch.from_numpy(np.array(table.sim_values_, dtype=np.float32)),
            f"{prefix}_popularity": torch.from_numpy(np.array(table.popularity_, dtype=np.float32)),
            # how histories are scored (window, n_recent, decay, directed): a directed table needs its own
            f"{prefix}_params": torch.tensor([table.window, table.n_recent, table.decay, float(table.directed)], dtype=torch.float64),
        })
    if "knn_offsets" in out:
        out["knn_weight"] = torch.tensor([float(model.knn_weight)], dtype=torch.float32)
    return out


def _table_from_aux(aux: dict, prefix: str, popularity: np.ndarray, n_items: int, folder: Path):
    """Return the ItemKNNRanker saved under ``prefix`` (knn / rules) in aux tensors, or None; ModelError when inconsistent."""
    if f"{prefix}_offsets" not in aux:
        return None
    offsets = aux[f"{prefix}_offsets"].numpy()
    items = aux[f"{prefix}_items"].numpy() if f"{prefix}_items" in aux else np.zeros(0, np.int32)
    values = aux[f"{prefix}_values"].numpy() if f"{prefix}_values" in aux else np.zeros(0, np.float32)
    ok = (
        len(offsets) == n_items + 1 and len(items) == len(values) and int(offsets[-1]) == len(items)
        and bool(np.all(np.diff(offsets) >= 0)) and (len(items) == 0 or (int(items.min()) >= 0 and int(items.max()) < n_items))
    )
    if not ok:
        raise ModelError(f"{folder.name}/aux.safetensors holds an inconsistent item-neighbour table. Save or train the model again.")
    if f"{prefix}_popularity" in aux and aux[f"{prefix}_popularity"].shape[0] == n_items:
        popularity = aux[f"{prefix}_popularity"].numpy()
    params = None  # models saved before session 11: the co-occurrence table with its defaults
    if f"{prefix}_params" in aux:
        raw = aux[f"{prefix}_params"].numpy().reshape(-1).astype(np.float64)
        ok = len(raw) == 4 and bool(np.all(np.isfinite(raw))) and raw[0] >= 1 and raw[1] >= 1 and 0 < raw[2] <= 1 and raw[3] in (0, 1)
        if not ok:
            raise ModelError(f"{folder.name}/aux.safetensors holds unreadable item-neighbour settings. Save or train the model again.")
        params = {"window": int(raw[0]), "n_recent": int(raw[1]), "decay": float(raw[2]), "directed": bool(raw[3])}
    return ItemKNNRanker.from_arrays(offsets, items, values, popularity, params)


def neighbours_from_aux(aux: dict, popularity: np.ndarray, n_items: int, folder: Path):
    """Return (item-neighbour term | None, its weight, next-item rules | None) from aux tensors."""
    knn = _table_from_aux(aux, "knn", popularity, n_items, folder)
    weight = float(aux["knn_weight"].numpy().reshape(-1)[0]) if knn is not None and "knn_weight" in aux else 0.0
    rules = _table_from_aux(aux, "rules", popularity, n_items, folder)
    if rules is None and knn is not None and knn.directed:
        rules = knn  # saved once (see neighbour_tensors)
    return knn, weight, rules
