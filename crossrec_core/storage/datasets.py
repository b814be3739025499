"""Save and load datasets in the workspace: Parquet files plus a manifest, written atomically.

Layout of ``workspace/datasets/<name>/``::

    manifest.json       name, counts, fingerprint, created_at, report, columns, format_version, file sizes
    events.parquet      the CSR values: item_idx (int32), time (int64), event_idx (int16), time-ordered per user
    users.parquet       user_id (str), n_events (int64) -> the CSR offsets
    items.parquet       the items table (item_id, category, title, attributes, vec_*) + category_idx
    categories.parquet  category names in category_idx order
    event_types.parquet event names in event_idx order
    extra_<key>.parquet optional frames stored with the dataset (e.g. the demo store's journeys)

Nothing is pickled; a SIGKILL during a save leaves the previous version in place (workspace.atomic_dir).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
import shutil
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crossrec_core.data.dataset import DataReport, InteractionDataset, Sequences
from crossrec_core.errors import DataError
from crossrec_core.storage.workspace import atomic_dir, datasets_dir, name_lock, safe_name

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FILES = ("events.parquet", "users.parquet", "items.parquet", "categories.parquet", "event_types.parquet")


@dataclass(frozen=True)
class DatasetInfo:
    """One stored dataset, as listed from its manifest."""

    name: str
    n_users: int
    n_items: int
    n_categories: int
    n_events: int
    created_at: str
    fingerprint: str
    has_timestamps: bool
    path: Path


def save_dataset(
    ds: InteractionDataset,
    name: str | None = None,
    *,
    root=None,
    extras: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """Return the folder where ``ds`` was saved (workspace/datasets/<name>), replacing any previous version.

    Args:
        name: folder name (default ds.name); letters, digits, '.', '_' or '-'.
        extras: named frames stored alongside (read back with load_extra); keys follow the same naming rule.
    """
    name = safe_name(name or ds.name)
    extras = {safe_name(k): v for k, v in (extras or {}).items()}
    target = datasets_dir(root) / name
    seqs = ds.seqs
    with atomic_dir(target) as staging:
        _write(staging / "events.parquet", {"item_idx": seqs.items.astype(np.int32), "time": seqs.times.astype(np.int64),
                                            "event_idx": seqs.events.astype(np.int16)})
        _write(staging / "users.parquet", {"user_id": pa.array(ds.user_ids.tolist(), type=pa.string()),
                                           "n_events": np.diff(seqs.offsets).astype(np.int64)})
        items = ds.items.copy()
        items["category_idx"] = ds.item_category.astype(np.int32)
        pq.write_table(pa.Table.from_pandas(items, preserve_index=False), staging / "items.parquet")
        _write(staging / "categories.parquet", {"name": pa.array([str(c) for c in ds.category_names], type=pa.string())})
        _write(staging / "event_types.parquet", {"name": pa.array([str(c) for c in ds.event_names], type=pa.string())})
        for key, frame in extras.items():
            pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False),
                           staging / f"extra_{key}.parquet")
        files = {p.name: p.stat().st_size for p in staging.iterdir()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "n_users": ds.n_users,
            "n_items": ds.n_items,
            "n_categories": ds.n_categories,
            "n_events": ds.n_events,
            "fingerprint": ds.fingerprint(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "has_timestamps": bool(ds.has_timestamps),
            "event_weights": {str(k): float(v) for k, v in ds.event_weights.items()},
            "report": ds.report.to_dict(),
            "attribute_columns": list(ds.attribute_columns),
            "vector_columns": list(ds.vector_columns),
            "extras": sorted(extras),
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    log.info("saved dataset %s (%d events) to %s", name, ds.n_events, target)
    return target


def _write(path: Path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path)


def _manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"Dataset '{folder.name}' is damaged: its manifest.json is missing. Ingest the log again.") from None
    except (OSError, ValueError) as err:
        raise DataError(f"Dataset '{folder.name}' is damaged ({err}). Ingest the log again.") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"Dataset '{folder.name}' was saved in an unknown format "
            f"(version {manifest.get('format_version') if isinstance(manifest, dict) else '?'}). Ingest the log again."
        )
    for fname in _FILES:
        p = folder / fname
        expected = manifest.get("files", {}).get(fname)
        if not p.is_file() or (expected is not None and p.stat().st_size != expected):
            raise DataError(f"Dataset '{folder.name}' is damaged: {fname} is missing or truncated. Ingest the log again.")
    return manifest


def load_dataset(name: str, *, root=None) -> InteractionDataset:
    """Return the dataset saved under ``name``.

    Raises:
        DataError: no such dataset, or its files are missing, truncated or inconsistent.
    """
    name = safe_name(name)
    folder = datasets_dir(root) / name
    if not folder.is_dir():
        known = ", ".join(i.name for i in list_datasets(root)) or "none yet"
        raise DataError(f"There is no dataset named '{name}' (stored datasets: {known}). Ingest it first.")
    manifest = _manifest(folder)
    try:
        ev = pq.read_table(folder / "events.parquet")
        users = pq.read_table(folder / "users.parquet")
        items = pq.read_table(folder / "items.parquet").to_pandas()
        cats = pq.read_table(folder / "categories.parquet").column("name").to_pylist()
        evn = pq.read_table(folder / "event_types.parquet").column("name").to_pylist()
    except (pa.ArrowException, OSError, KeyError) as err:
        raise DataError(f"Dataset '{name}' is damaged ({str(err)[:120]}). Ingest the log again.") from None
    lengths = users.column("n_events").to_numpy()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    seqs = Sequences(
        offsets=offsets,
        items=ev.column("item_idx").to_numpy().astype(np.int32, copy=False),
        times=ev.column("time").to_numpy().astype(np.int64, copy=False),
        events=ev.column("event_idx").to_numpy().astype(np.int16, copy=False),
    )
    item_category = items.pop("category_idx").to_numpy(dtype=np.int32)
    n_ok = (
        seqs.n_events == manifest["n_events"] == len(seqs.items)
        and len(lengths) == manifest["n_users"]
        and len(items) == manifest["n_items"]
        and len(cats) == manifest["n_categories"]
        and (len(seqs.items) == 0 or (int(seqs.items.max()) < len(items) and int(seqs.items.min()) >= 0))
        and (len(item_category) == 0 or int(item_category.max()) < len(cats))
    )
    if not n_ok:
        raise DataError(f"Dataset '{name}' is damaged: its files disagree with its manifest. Ingest the log again.")
    ds = InteractionDataset(
        name=manifest["name"],
        user_ids=np.asarray(users.column("user_id").to_pylist(), dtype=object),
        item_ids=items["item_id"].to_numpy(dtype=object),
        category_names=np.asarray(cats, dtype=object),
        event_names=np.asarray(evn, dtype=object),
        item_category=item_category,
        items=items,
        seqs=seqs,
        attribute_columns=tuple(manifest.get("attribute_columns", ())),
        vector_columns=tuple(manifest.get("vector_columns", ())),
        has_timestamps=bool(manifest.get("has_timestamps", True)),
        event_weights=dict(manifest.get("event_weights", {})),
        report=DataReport.from_dict(manifest.get("report")),
    )
    ds.__dict__["_fingerprint_cache"] = manifest["fingerprint"]
    return ds


def list_datasets(root=None) -> list[DatasetInfo]:
    """Return the stored datasets sorted by name; damaged folders are skipped with a logged warning."""
    out = []
    for folder in sorted(datasets_dir(root).iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            m = _manifest(folder)
            out.append(
                DatasetInfo(
                    name=folder.name,
                    n_users=int(m["n_users"]),
                    n_items=int(m["n_items"]),
                    n_categories=int(m["n_categories"]),
                    n_events=int(m["n_events"]),
                    created_at=str(m.get("created_at", "")),
                    fingerprint=str(m.get("fingerprint", "")),
                    has_timestamps=bool(m.get("has_timestamps", True)),
                    path=folder,
                )
            )
        except (DataError, KeyError, TypeError, ValueError) as err:
            log.warning("skipping damaged dataset folder %s: %s", folder, err)
    return out


def delete_dataset(name: str, root=None) -> None:
    """Delete the stored dataset ``name`` (DataError if there is none)."""
    name = safe_name(name)
    folder = datasets_dir(root) / name
    if not folder.is_dir():
        raise DataError(f"There is no dataset named '{name}' to delete.")
    with name_lock(folder):
        # move aside first so a crash mid-delete never leaves a half-deleted dataset under its name
        trash = folder.parent.parent / "tmp" / f".old-{name}-{uuid.uuid4().hex[:8]}"
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    log.info("deleted dataset %s", name)


def load_extra(name: str, key: str, root=None) -> pd.DataFrame | None:
    """Return the extra frame ``key`` stored with dataset ``name``, or None if it has none."""
    folder = datasets_dir(root) / safe_name(name)
    path = folder / f"extra_{safe_name(key)}.parquet"
    if not path.is_file():
        return None
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"Extra '{key}' of dataset '{name}' is damaged ({str(err)[:120]}). Ingest it again.") from None
