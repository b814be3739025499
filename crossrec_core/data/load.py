"""load_log: the one entry point from a user's files (or frames) to a validated InteractionDataset.

Hard problems (no rows, no id column, mostly empty ids, mostly unreadable timestamps) raise a DataError or
SchemaError naming the file, the column, how many rows, an example and what to do. Soft problems (duplicates,
a few bad rows, conflicting categories, items without metadata, single-event users) are fixed, counted and
reported in ``ds.report``; they never stop ingestion.

Why one module of ~530 lines: it is the one ingestion path (CLI, studio upload, benches), and its
checks run in an order that matters (mapping, ids, timestamps, events, items, dedup); file formats
live in data/readers.py and column guessing in data/schema.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crossrec_core.data.dataset import DEFAULT_EVENT, UNKNOWN_CATEGORY, DataReport, InteractionDataset, from_frames, user_time_order
from crossrec_core.data.readers import frame_as_text, read_table
from crossrec_core.data.schema import (
    MAP_ADVICE,
    attribute_name,
    normalize_events,
    parse_timestamps,
    resolve_mapping,
    vector_columns,
)
from crossrec_core.errors import DataError
from crossrec_core.storage.workspace import slugify, workspace_root

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 512  # longer "ids" are almost always a wrongly mapped text column
MAX_BAD_SHARE = 0.5  # above this share of bad ids the mapping is wrong: refuse instead of dropping
MAX_BAD_TIME_SHARE = 0.05  # above this share of unreadable timestamps the format is not understood
_NULL_TOKENS = ("", "nan", "NaN", "NAN", "null", "NULL", "Null", "None", "none", "N/A", "n/a", "#N/A")
_INDEX_LIKE = ("unnamed", "column_", "index", "level_0")


def load_log(
    interactions: Any,
    items: Any = None,
    *,
    mapping: dict[str, str] | None = None,
    items_mapping: dict[str, str] | None = None,
    name: str | None = None,
    event_weights: dict[str, float] | None = None,
    max_bytes: int | None = None,
    pseudonymize: bool = False,
    salt: str | None = None,
    interactions_name: str | None = None,
    items_name: str | None = None,
    delimiter: str | None = None,
    max_rows: int | None = None,
) -> InteractionDataset:
    """Return a validated, indexed InteractionDataset read from an interaction log and an optional items table.

    Args:
        interactions: path, DataFrame, bytes or binary file-like with one row per event.
        items: optional path / DataFrame / bytes / file-like with one row per item (item_id, category, title,
            attribute columns, vec_* columns). Item metadata may also sit in the log itself.
        mapping: canonical -> source column for the log (e.g. {"user_id": "customer_no"}); wins over guesses.
        items_mapping: the same for the items table.
        name: the dataset name (default: the log's file name without extension).
        event_weights: overrides of DEFAULT_EVENT_WEIGHTS by canonical event name.
        max_bytes: size limit per file (default readers.DEFAULT_MAX_BYTES, 2 GB), also applied to what a gzip or
            Parquet file unpacks to.
        pseudonymize: replace user ids by a salted SHA-256 (16 hex chars) so raw ids are never stored.
        salt: the salt for pseudonymize; default: the workspace salt (created once).
        interactions_name / items_name: file names for bytes/file-like input (format detection, messages).
        delimiter: force the delimiter of delimited text files.
        max_rows: row limit per file (default readers.DEFAULT_MAX_ROWS, 200 million).
    Returns:
        The dataset (built with from_frames): users indexed in order of first appearance in the file, items in
        order of first appearance in the per-user time-ordered log, then cold items of the items table.
    Raises:
        DataError / SchemaError with a message a merchandiser can act on.
    """
    report = DataReport()
    raw, label = _read_any(interactions, interactions_name, "the interactions file", max_bytes, delimiter, max_rows)
    n_rows = len(raw)
    report.counts["rows_read"] = n_rows
    m = resolve_mapping(list(raw.columns), mapping, table="interactions", file_label=label)
    _refuse_nested(raw, m, label)
    keep = np.ones(n_rows, dtype=bool)

    # ids are factorized once; trimming and validation run on the distinct values only
    u_codes, u_uniques = _factorize_ids(raw[m["user_id"]])
    i_codes, i_uniques = _factorize_ids(raw[m["item_id"]])

    # a header row repeated inside the file (logs concatenated with `cat`)
    hdr = (u_codes == _position(u_uniques, m["user_id"])) & (i_codes == _position(i_uniques, m["item_id"]))
    if hdr.any():
        keep &= ~hdr
        report.warn(f"{label}: dropped {int(hdr.sum())} repeated header row(s) inside the file.", "header_rows", hdr.sum())

    for col_canon, codes in (("user_id", u_codes), ("item_id", i_codes)):
        bad = (codes < 0) & keep
        if bad.any():
            _bad_rows(report, raw, label, m[col_canon], col_canon, bad, int(keep.sum()))
            keep &= ~bad

    has_timestamps = True
    if "timestamp" in m:
        parsed = parse_timestamps(raw[m["timestamp"]])
        bad = ~parsed.valid & keep
        if bad.any():
            n_bad, n_live = int(bad.sum()), int(keep.sum())
            row = int(np.flatnonzero(bad)[0])
            example = raw[m["timestamp"]].iloc[row]
            example = "(empty)" if pd.isna(example) else f"'{str(example)[:40]}'"
            if n_bad > MAX_BAD_TIME_SHARE * n_live or n_bad == n_live:
                raise DataError(
                    f"{label}: {n_bad:,} of {n_live:,} rows have a timestamp in column '{m['timestamp']}' that "
                    f"cannot be read or is out of range (e.g. row {row + 2}: {example}). Use epoch seconds or "
                    "dates like 2024-03-07 14:02 (before 2100, not negative), or map another column as timestamp."
                )
            report.warn(
                f"{label}: dropped {n_bad:,} row(s) whose timestamp in '{m['timestamp']}' cannot be read or is out "
                f"of range (e.g. row {row + 2}: {example}).",
                "bad_timestamps",
                n_bad,
            )
            keep &= ~bad
        times = parsed.seconds
        if parsed.note:
            report.notes.append(parsed.note)
        if parsed.kind == "order":
            has_timestamps = False
            report.notes.append(
                f"Column '{m['timestamp']}' holds small numbers (positions, not clock times): "
                "they are used only to order each user's events."
            )
        else:
            live = times[keep]
            if len(live) > 1 and live.min() == live.max():
                # a warning, not a note: a sequence model learns the order of events, and here the order
                # is only the file's (a one-day export); the most important thing to know about such a log
                report.warn(
                    "All events have the same timestamp: each user's events keep the order of the file, so the "
                    "model learns that order. If the log has real times, map that column as the time of the event."
                )
    else:
        times = np.arange(n_rows, dtype=np.int64)
        has_timestamps = False
        report.notes.append(
            f"{label} has no timestamp column: each user's events are ordered by their row order in the file."
        )

    if "event" in m:
        e_codes, e_raw = pd.factorize(raw[m["event"]], sort=False)
        names = normalize_events(pd.Series(np.append(np.asarray(e_raw, dtype=object), None), dtype="str"))
        names = names.where(names != "", DEFAULT_EVENT).to_numpy(dtype=object)
        remap, e_uniques = pd.factorize(names, sort=False)
        e_codes = remap[e_codes]  # -1 (missing) picks the appended None -> DEFAULT_EVENT
    else:
        e_codes, e_uniques = np.zeros(n_rows, dtype=np.int64), np.array([DEFAULT_EVENT], dtype=object)

    if not keep.any():
        raise DataError(f"{label}: no usable rows left after removing rows with empty ids or timestamps.")

    idx = np.flatnonzero(keep) if not keep.all() else None
    sel = (lambda a: a[idx]) if idx is not None else (lambda a: a)
    u_codes, i_codes, times, e_codes = sel(u_codes), sel(i_codes), sel(times), sel(e_codes)
    order, dup = _order_and_duplicates(u_codes, i_codes, times, e_codes, report)

    log_meta = _log_item_metadata(raw, m, idx, i_codes, i_uniques, report, label) if (
        "category" in m or "title" in m
    ) else None
    # hand the rows to from_frames already sorted by (user, time) without duplicates, so it does not sort again
    if dup is not None:
        order = order[~dup[order]]
    if dup is not None or not np.array_equal(order, np.arange(len(order))):
        u_codes, i_codes, times, e_codes = u_codes[order], i_codes[order], times[order], e_codes[order]
    if log_meta is not None:  # items seen only in dropped rows (bad ids, bad times, header rows) are not items
        log_meta = log_meta[np.bincount(i_codes, minlength=len(i_uniques)) > 0].reset_index(drop=True)
    table = None
    if items is not None:
        table = _read_items(items, items_name, items_mapping, max_bytes, delimiter, report, max_rows)
    item_frame = _merge_metadata(log_meta, table, report)
    _report_items(i_codes, i_uniques, item_frame, report)
    _report_users(u_codes, report)

    if pseudonymize:
        u_uniques = pseudonymize_ids(pd.Series(u_uniques, dtype=object), salt=salt).to_numpy(dtype=object)
        report.notes.append("User ids are pseudonymized (salted SHA-256); raw ids are not stored.")
    inter = pd.DataFrame(
        {
            "user_id": _categorical(u_codes, u_uniques),
            "item_id": _categorical(i_codes, i_uniques),
            "timestamp": times.astype(np.int64, copy=False),
            "event": _categorical(e_codes, e_uniques),
        }
    )

    ds_name = name or _default_name(interactions, interactions_name)
    ds = from_frames(
        inter,
        item_frame,
        name=ds_name,
        has_timestamps=has_timestamps,
        event_weights=event_weights,
        report=report,
    )
    log.info("loaded %s: %d users, %d items, %d events", ds_name, ds.n_users, ds.n_items, ds.n_events)
    return ds


# -- reading --------------------------------------------------------------------------------------
def _read_any(source: Any, name: str | None, default: str, max_bytes, delimiter, max_rows=None) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        label = name or default
        return frame_as_text(source, label), label
    if isinstance(source, (str, os.PathLike)):
        label = name or Path(source).name
    else:
        label = name or Path(str(getattr(source, "name", "") or default)).name or default
    return read_table(source, label if not isinstance(source, (str, os.PathLike)) else name, max_bytes=max_bytes,
                      delimiter=delimiter, max_rows=max_rows), label


def _default_name(source: Any, name: str | None) -> str:
    if name:
        base = name
    elif isinstance(source, (str, os.PathLike)):
        base = Path(source).name
    else:
        base = str(getattr(source, "name", "") or "dataset")
    base = Path(base).name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".parquet", ".jsonl", ".json", ".inter", ".ndjson"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    if base.lower() in {"interactions", "events", "log", "transactions", "dataset"}:
        return "dataset" if base.lower() == "dataset" else base.lower()
    return slugify(base)


def _refuse_nested(raw: pd.DataFrame, m: dict[str, str], label: str) -> None:
    nested = set(raw.attrs.get("nested_columns", []))
    for canon in ("user_id", "item_id"):
        if m.get(canon) in nested:
            raise DataError(
                f"{label}: column '{m[canon]}' ({canon}) holds nested values (lists or records), not ids. "
                "Store ids as text or whole numbers, or map another column."
            )


def _clean_ids(col: pd.Series) -> pd.Series:
    """Return ids trimmed of surrounding spaces, NaN where empty, a null token or longer than MAX_ID_LENGTH."""
    s = col.astype("str").str.strip()
    bad = s.isin(_NULL_TOKENS) | (s.str.len() > MAX_ID_LENGTH)
    return s.mask(bad)


def _factorize_ids(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes int64, -1 for missing/invalid ids; distinct trimmed ids in order of first appearance)."""
    codes, uniques = pd.factorize(col, sort=False)
    cleaned = _clean_ids(pd.Series(uniques, dtype="str"))
    remap, clean_uniques = pd.factorize(cleaned, sort=False)  # " a" and "a" become one id
    remap = np.append(remap, -1)  # code -1 stays -1
    return remap[codes].astype(np.int64), np.asarray(clean_uniques, dtype=object)


def _position(uniques: np.ndarray, value: str) -> int:
    hits = np.flatnonzero(uniques == value) if len(uniques) else []
    return int(hits[0]) if len(hits) else -2  # -2 never matches a code


def _categorical(codes: np.ndarray, categories: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object), validate=False)


def _bad_rows(report: DataReport, raw, label: str, col: str, canon: str, bad: np.ndarray, n_live: int) -> None:
    n_bad = int(bad.sum())
    row = int(np.flatnonzero(bad)[0])
    value = raw[col].iloc[row]
    example = "empty" if pd.isna(value) or not str(value).strip() else f"'{str(value)[:40]}{'...' if len(str(value)) > 40 else ''}'"
    what = "user" if canon == "user_id" else "item"
    if n_bad > MAX_BAD_SHARE * n_live:
        raise DataError(
            f"{label}: {n_bad:,} of {n_live:,} rows have no usable {what} id in column '{col}' "
            f"(e.g. row {row + 2} is {example}; ids must be non-empty and at most {MAX_ID_LENGTH} characters). "
            f"Check that '{col}' is the {what} column, or map another one ({MAP_ADVICE.format(canon=canon)})."
        )
    report.warn(
        f"{label}: dropped {n_bad:,} row(s) with an empty or invalid {what} id in '{col}' (e.g. row {row + 2} is {example}).",
        f"bad_{canon}",
        n_bad,
    )


def _order_and_duplicates(u, i, t, e, report: DataReport) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (stable (user, time) order of the rows, mask of exact duplicate events or None).

    A duplicate has the same user, item, time and event as an earlier row; the first row stays.
    """
    order = user_time_order(u, t)
    us, ts = u[order], t[order]
    same_ut = (us[1:] == us[:-1]) & (ts[1:] == ts[:-1])
    if not same_ut.any():
        return order, None
    # only events sharing (user, time) with a neighbour can be duplicates: sort that subset by item and event
    run_id = np.cumsum(np.r_[True, ~same_ut]) - 1
    in_multi = np.r_[same_ut, False] | np.r_[False, same_ut]
    pos = order[in_multi]  # rows, still in (user, time, row) order
    rid = run_id[in_multi]
    sub = np.lexsort((e[pos], i[pos], rid))  # stable: equal keys keep row order, so the first row is kept
    p, r = pos[sub], rid[sub]
    same = (r[1:] == r[:-1]) & (i[p][1:] == i[p][:-1]) & (e[p][1:] == e[p][:-1])
    n_dup = int(same.sum())
    if not n_dup:
        return order, None
    dup = np.zeros(len(u), dtype=bool)
    dup[p[1:][same]] = True
    report.warn(
        f"Dropped {n_dup:,} exact duplicate event(s) (same user, item, time and event type).", "duplicate_events", n_dup
    )
    return order, dup


# -- item metadata --------------------------------------------------------------------------------
def _log_item_metadata(raw, m, idx, i_codes, i_uniques, report, label) -> pd.DataFrame:
    """Return item_id, category, title taken from the log itself (most frequent category, first title)."""
    n_items = len(i_uniques)
    out = pd.DataFrame({"item_id": pd.Series(i_uniques, dtype="str")})
    pick = (lambda col: col.to_numpy()[idx]) if idx is not None else (lambda col: col.to_numpy())
    if "category" in m:
        cc, cu = _factorize_ids(raw[m["category"]])
        cc = pick(pd.Series(cc))
        ok = cc >= 0
        k = max(len(cu), 1)
        pair = np.sort(i_codes[ok].astype(np.int64) * k + cc[ok])
        starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        pu, pcnt = pair[starts], np.diff(np.r_[starts, len(pair)])
        pi, pcat = pu // k, pu % k
        order = np.lexsort((-pcnt, pi))  # per item, the most frequent category first (ties: lowest code)
        first = np.r_[True, pi[order][1:] != pi[order][:-1]] if len(order) else np.zeros(0, bool)
        best = np.full(n_items, -1, dtype=np.int64)
        best[pi[order][first]] = pcat[order][first]
        n_conf = int((np.bincount(pi, minlength=n_items) > 1).sum())
        if n_conf:
            report.warn(
                f"{label}: {n_conf:,} item(s) appear with more than one category in '{m['category']}'; "
                "the most frequent category was kept.",
                "conflicting_categories",
                n_conf,
            )
        cats = np.append(np.asarray(cu, dtype=object), None)
        out["category"] = pd.Series(cats[best], dtype="str")
    if "title" in m:
        tc, tu = _factorize_ids(raw[m["title"]])
        tc = pick(pd.Series(tc))
        ok = tc >= 0
        items_ok = i_codes[ok]
        order = np.argsort(items_ok, kind="stable")  # first title per item, in row order
        starts = np.r_[True, items_ok[order][1:] != items_ok[order][:-1]] if len(order) else np.zeros(0, bool)
        t = np.full(n_items, -1, dtype=np.int64)
        t[items_ok[order][starts]] = tc[ok][order][starts]
        out["title"] = pd.Series(np.append(np.asarray(tu, dtype=object), None)[t], dtype="str")
    return out


def _read_items(items, items_name, items_mapping, max_bytes, delimiter, report, max_rows=None) -> pd.DataFrame:
    raw, label = _read_any(items, items_name, "the items file", max_bytes, delimiter, max_rows)
    m = resolve_mapping(list(raw.columns), items_mapping, table="items", file_label=label)
    nested = set(raw.attrs.get("nested_columns", []))
    if m["item_id"] in nested:
        _refuse_nested(raw, {"item_id": m["item_id"]}, label)
    ids = _clean_ids(raw[m["item_id"]])
    hdr = (raw[m["item_id"]] == m["item_id"]).to_numpy(dtype=bool, na_value=False)
    bad = ids.isna().to_numpy() & ~hdr
    keep = ~bad & ~hdr
    if bad.sum() > MAX_BAD_SHARE * len(raw):
        _bad_rows(report, raw, label, m["item_id"], "item_id", bad, len(raw))  # raises
    if bad.any():
        report.warn(f"{label}: dropped {int(bad.sum()):,} item row(s) with an empty item id.", "bad_item_rows", bad.sum())
    out = pd.DataFrame({"item_id": ids[keep].astype("str").reset_index(drop=True)})
    for canon in ("category", "title"):
        if canon in m:
            col = raw.loc[keep, m[canon]].astype("str").str.strip().reset_index(drop=True)
            out[canon] = col.mask(col.isin(_NULL_TOKENS))
    used = set(m.values())
    vecs = [c for c in vector_columns([c for c in raw.columns if c not in used]) if c not in nested]
    for k, c in enumerate(vecs):
        vals = pd.to_numeric(raw.loc[keep, c], errors="coerce").reset_index(drop=True)
        n_bad = int(vals.isna().sum() - raw.loc[keep, c].isna().sum())
        if n_bad:
            report.warn(f"{label}: {n_bad:,} non-numeric value(s) in vector column '{c}' were set to 0.", "bad_vector_values", n_bad)
        out[f"vec_{k}"] = vals.fillna(0.0).astype(np.float32)
    skipped = []
    for c in raw.columns:
        if c in used or c in vecs:
            continue
        if c in nested or str(c).strip().lower().startswith(_INDEX_LIKE) or str(c).strip() == "":
            skipped.append(str(c))
            continue
        attr = attribute_name(c)
        if attr in out.columns or attr.startswith("vec_"):
            attr = f"attr_{attr}"
        out[attr] = raw.loc[keep, c].astype("str").str.strip().reset_index(drop=True)
    if skipped:
        report.notes.append(f"{label}: ignored column(s) {', '.join(skipped[:8])} (index or nested values).")
    dup = out["item_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        report.warn(
            f"{label}: {int(dup.sum()):,} item id(s) are listed more than once; the first row of each was kept.",
            "duplicate_item_rows",
            dup.sum(),
        )
        out = out.loc[~dup].reset_index(drop=True)
    return out


def _merge_metadata(log_meta: pd.DataFrame | None, table: pd.DataFrame | None, report: DataReport):
    """Return one metadata row per item: the items table wins over metadata found in the log (counted)."""
    if table is None:
        return log_meta
    if log_meta is None:
        return table
    merged = log_meta.merge(table, on="item_id", how="left", suffixes=("_log", ""), indicator=True)
    in_table = (merged["_merge"] == "both").to_numpy()
    if "category_log" in merged and "category" in merged:
        a, b = merged["category_log"], merged["category"]
        n = int((in_table & a.notna().to_numpy() & b.notna().to_numpy() & (a != b).to_numpy(dtype=bool, na_value=False)).sum())
        if n:
            report.warn(
                f"{n:,} item(s) have a different category in the items table than in the log; the items table wins.",
                "category_contradictions",
                n,
            )
    for canon in ("category", "title"):
        if f"{canon}_log" in merged:
            if canon in merged:
                merged[canon] = merged[canon].where(merged[canon].notna(), merged[f"{canon}_log"])
            else:
                merged[canon] = merged[f"{canon}_log"]
            merged = merged.drop(columns=f"{canon}_log")
    merged = merged.drop(columns="_merge")
    extra = table[~_isin(table["item_id"], merged["item_id"])]
    return pd.concat([merged, extra], ignore_index=True) if len(extra) else merged


def _report_items(i_codes: np.ndarray, i_uniques: np.ndarray, meta: pd.DataFrame | None, report: DataReport) -> None:
    used = np.bincount(i_codes, minlength=len(i_uniques)) > 0
    log_items = i_uniques[used]
    if meta is None or not len(meta):
        report.warn(
            f"No item metadata (category or title) was given: all {len(log_items):,} items go to category "
            f"'{UNKNOWN_CATEGORY}'. Add an items table or category/title columns for cross-category features.",
            "items_without_metadata",
            len(log_items),
        )
        return
    has_cat = meta["category"].notna().to_numpy() if "category" in meta else np.zeros(len(meta), bool)
    has_title = (meta["title"].notna() & (meta["title"] != "")).to_numpy(dtype=bool, na_value=False) \
        if "title" in meta else np.zeros(len(meta), bool)
    with_meta = meta["item_id"].to_numpy(dtype=object)[has_cat | has_title]
    missing = int((~_isin(log_items, with_meta)).sum())
    if missing:
        report.warn(
            f"{missing:,} item(s) in the log have no category or title; they go to category '{UNKNOWN_CATEGORY}'.",
            "items_without_metadata",
            missing,
        )
    cold = int((~_isin(meta["item_id"], log_items)).sum())
    if cold:
        report.notes.append(f"{cold:,} item(s) of the items table never occur in the log (kept as cold items).")
        report.counts["cold_items"] = cold


def _report_users(u_codes: np.ndarray, report: DataReport) -> None:
    counts = np.bincount(u_codes)
    counts = counts[counts > 0]
    single = int((counts == 1).sum())
    if single == len(counts):
        report.warn(
            f"Every user ({single:,}) has exactly one event: the log loads, but a sequence model cannot be trained "
            "on it (training needs users with 2 or more events). Check that the user column is right.",
            "single_event_users",
            single,
        )
    elif single:
        report.warn(
            f"{single:,} user(s) have a single event: kept (for cold-start previews), but training skips them.",
            "single_event_users",
            single,
        )


def _isin(values, candidates) -> np.ndarray:
    """Return a bool mask of ``values`` found in ``candidates`` (pyarrow hash set: pandas' string isin is
    a Python loop for large candidate sets)."""
    a = pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)
    b = pa.array(np.asarray(candidates, dtype=object), type=pa.string(), from_pandas=True)
    return pc.is_in(a, value_set=b).to_numpy(zero_copy_only=False).astype(bool)


# -- privacy --------------------------------------------------------------------------------------
def workspace_salt(root=None) -> str:
    """Return the workspace's pseudonymization salt, creating ``workspace_root()/salt`` once."""
    path = workspace_root(root) / "salt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    salt = secrets.token_hex(16)
    tmp = path.with_name(f".salt.{secrets.token_hex(4)}")
    tmp.write_text(salt, encoding="utf-8")
    try:
        os.link(tmp, path)  # atomic create-if-absent: a concurrent process keeps the first salt
    except FileExistsError:
        pass
    except OSError:
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.read_text(encoding="utf-8").strip()


def pseudonymize_ids(ids: pd.Series, *, salt: str | None = None) -> pd.Series:
    """Return a salted SHA-256 (16 hex chars) of every id; each distinct id is hashed once."""
    salt = salt if salt is not None else workspace_salt()
    codes, uniques = pd.factorize(ids)
    prefix = salt.encode("utf-8")
    hashed = np.array([hashlib.sha256(prefix + str(u).encode("utf-8")).hexdigest()[:16] for u in uniques], dtype=object)
    return pd.Series(hashed[codes], index=ids.index, dtype="str")
