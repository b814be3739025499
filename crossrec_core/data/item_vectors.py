"""Item vectors from other modalities (`crossrec train --item-vectors FILE`): e.g. image embeddings a team
computed elsewhere (CLIP, a product-photo CNN), fused into the item encoder with a learned projection.

The file is Parquet or CSV with an ``item_id`` column and either one list-valued column (a Parquet list,
or a CSV cell such as ``[0.12, -0.4, ...]`` or ``0.12 -0.4 ...``) or numeric columns ``vec_0 .. vec_k``
(also ``emb_*`` / ``embedding_*``). Every item of the log must have a vector; rows for items the log does
not have are ignored. The vectors become the dataset's ``vec_*`` columns, which the item encoder projects
to its dimension (ItemEncoderConfig.use_vectors, models/item_encoder.py) and adds to every item's vector,
cold items included: an item nobody bought yet is carried by its vector, title and category.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.data.readers import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, PARQUET_MAGIC, Source, parquet_unpacked_bytes, read_table
from crossrec_core.data.schema import vector_columns
from crossrec_core.errors import DataError

MAX_DIM = 4096  # wider vectors are a wrong column, not an embedding worth a projection
_LIST_NAMES = ("vector", "embedding", "vec", "emb", "image_vector", "image_embedding")


def read_item_vectors(source: Source, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (item ids (n,) str, float32 (n, d) vectors) read from a Parquet or CSV file.

    ``source`` is a path or the raw bytes of an upload (then ``name`` is the file's name). The readers'
    limits apply (data/readers.py): a Parquet footer declaring more than DEFAULT_MAX_BYTES unpacked is
    refused before its pages are read, text goes through ``read_table``.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"The item vectors file '{path}' does not exist. Give a Parquet or CSV file with item_id and a vector per item.")
        name = name or path.name
        raw = path.read_bytes()
    else:
        raw = bytes(source)
    label = name or "the item vectors file"
    if raw[:4] == PARQUET_MAGIC or label.lower().endswith((".parquet", ".pq")):
        frame = _read_parquet_vectors(raw, label)
    else:
        frame = read_table(raw, label)  # every column as text: the vector values are parsed below
    if "item_id" not in frame.columns:
        raise DataError(f"The item vectors file '{label}' has no item_id column (columns: {', '.join(map(str, frame.columns[:8]))}).")
    ids = frame["item_id"].astype(str).str.strip().to_numpy(dtype=object)
    cols = vector_columns([c for c in frame.columns if c != "item_id"])
    if cols:
        values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    else:
        values = _list_column(frame, label)
    if values.shape[1] == 0 or values.shape[1] > MAX_DIM:
        raise DataError(f"The vectors in '{label}' have {values.shape[1]} values each; expected 1 to {MAX_DIM}.")
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise DataError(f"{int(bad.sum())} vector(s) in '{label}' have empty or non-numeric values (first: item {ids[bad][0]}). Fix or drop those rows.")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise DataError(f"Item {ids[dup][0]} has more than one vector in '{label}' ({int(dup.sum())} repeated id(s)). Keep one row per item.")
    return ids, values.astype(np.float32)


def _read_parquet_vectors(raw: bytes, label: str) -> pd.DataFrame:
    """Return the Parquet file's table with its own types (a list column stays a list of floats)."""
    try:
        meta = pq.read_metadata(pa.BufferReader(raw))
        if parquet_unpacked_bytes(meta) > DEFAULT_MAX_BYTES or meta.num_rows > DEFAULT_MAX_ROWS:
            raise DataError(f"'{label}' would unpack to more than {DEFAULT_MAX_BYTES // 1024**3} GB or "
                            f"{DEFAULT_MAX_ROWS:,} rows: that is not a table of item vectors.")
        frame = pq.read_table(pa.py_buffer(raw)).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"Could not read the item vectors file '{label}' ({err}). Give a Parquet or CSV file.") from None
    if "item_id" in frame.columns:
        frame["item_id"] = frame["item_id"].astype(str)
    return frame


def _list_column(frame: pd.DataFrame, label: str) -> np.ndarray:
    """Return (n, d) float64 from the one list-valued column; rows of another length are an error."""
    others = [c for c in frame.columns if c != "item_id"]
    named = [c for c in others if str(c).strip().lower() in _LIST_NAMES]
    col = named[0] if named else (others[0] if len(others) == 1 else None)
    if col is None:
        raise DataError(f"'{label}' needs item_id plus one vector column (a list, named e.g. 'vector') or columns vec_0, vec_1, ...")
    rows = [_parse_vector(v) for v in frame[col]]
    lengths = np.array([len(r) for r in rows])
    if len(rows) and (lengths != lengths[0]).any():
        i = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(f"The vectors in '{label}' differ in length: item {frame['item_id'].iloc[i]} has {lengths[i]} values, "
                        f"item {frame['item_id'].iloc[0]} has {lengths[0]}. Every item needs a vector of the same size.")
    return np.array(rows, dtype=np.float64).reshape(len(rows), lengths[0] if len(rows) else 0)


def _parse_vector(v) -> list[float]:  # noqa: ANN001
    if isinstance(v, (list, tuple, np.ndarray)):
        return [float(x) if x is not None else np.nan for x in v]
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    text = str(v).strip()
    try:
        return [float(x) for x in json.loads(text)] if text.startswith("[") else [float(x) for x in text.replace(",", " ").split()]
    except (ValueError, TypeError):  # keep the length, mark the bad values: the caller names the item
        return [_number_or_nan(x) for x in text.strip("[]").replace(",", " ").split()]


def _number_or_nan(x: str) -> float:
    try:
        return float(x)
    except ValueError:
        return np.nan


def attach_item_vectors(ds: InteractionDataset, ids: np.ndarray, vectors: np.ndarray, *, label: str = "the vectors file") -> InteractionDataset:
    """Return ``ds`` whose items table carries ``vectors`` as vec_0..vec_{d-1} (replacing any vec_* it had).

    Every item of the log needs a vector: a missing one is a DataError naming how many and a few ids.
    """
    pos = pd.Index(pd.Series(ids, dtype=object).astype(str)).get_indexer(pd.Series(ds.item_ids, dtype=object).astype(str))
    missing = pos < 0
    if missing.any():
        few = ", ".join(map(str, ds.item_ids[missing][:5]))
        raise DataError(f"{int(missing.sum()):,} of the log's {ds.n_items:,} items have no vector in {label} (e.g. {few}). "
                        "Add a row for every item of the log (a vector for a new item can be computed from its image the same way).")
    items = ds.items.drop(columns=list(ds.vector_columns))
    names = [f"vec_{k}" for k in range(vectors.shape[1])]
    items = pd.concat([items, pd.DataFrame(vectors[pos], columns=names)], axis=1)
    return dataclasses.replace(ds, items=items, vector_columns=tuple(names))
