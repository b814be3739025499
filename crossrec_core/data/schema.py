"""Canonical columns, column-name mapping, event names and timestamp parsing.

The log's canonical columns are user_id, item_id, timestamp and optional event (plus optional item
metadata category / title in the log itself); the items table's are item_id, category, title, optional
attribute columns (brand, tags, price band ...) and optional numeric vector columns (renamed vec_0..vec_k).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crossrec_core.errors import SchemaError

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id")
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp", "event", "category", "title")
# how to fix a wrong column, for both places a log comes in: the studio's Data page and the terminal
MAP_ADVICE = "choose it under Column mapping on the Data page, or pass --map {canon}=<column> to the crossrec command"
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "category", "title")

# canonical -> accepted source names (compared after lower-casing and removing spaces, '_', '-', '.')
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": (
        "user_id", "user", "userid", "customer", "customer_id", "customerid", "customer_no", "customer_number",
        "visitor", "visitorid", "visitor_id", "member", "member_id", "client_id", "session_id", "uid", "reviewerid",
    ),
    "item_id": (
        "item_id", "item", "itemid", "sku", "product", "product_id", "productid", "article_id", "article",
        "asin", "parent_asin", "iid", "offer_id",
    ),
    "timestamp": (
        "timestamp", "ts", "time", "date", "datetime", "t_dat", "event_time", "created_at", "event_date",
        "time_stamp", "unix_time", "unixreviewtime", "order_date", "when", "occurred_at", "purchased_at",
    ),
    "event": ("event", "event_type", "behavior", "behaviour", "behavior_type", "behaviour_type", "action", "type"),
    "category": (
        "category", "cat", "category_id", "category_name", "categories", "department", "aisle",
        "product_group_name", "index_group_name", "main_category",
    ),
    "title": ("title", "name", "prod_name", "product_name", "item_name", "product_title", "description"),
}

# source event name -> canonical event name (everything else is lower-cased and kept)
EVENT_ALIASES: dict[str, str] = {
    "pv": "view", "view": "view", "views": "view", "viewed": "view", "click": "view", "clicks": "view",
    "page_view": "view", "pageview": "view", "detail": "view", "product_view": "view", "impression": "view",
    "buy": "purchase", "purchase": "purchase", "purchased": "purchase", "order": "purchase", "orders": "purchase",
    "transaction": "purchase", "checkout": "purchase", "sale": "purchase", "bought": "purchase",
    "cart": "cart", "addtocart": "cart", "add_to_cart": "cart", "add-to-cart": "cart", "add to cart": "cart",
    "basket": "cart", "add_to_basket": "cart", "carted": "cart",
    "fav": "fav", "favorite": "fav", "favourite": "fav", "like": "fav", "wishlist": "fav", "add_to_wishlist": "fav",
    "rating": "rating", "rate": "rating", "rated": "rating", "review": "review", "reviewed": "review",
    "search": "search",
}

_VECTOR_RE = re.compile(r"^(?:vec|emb|embedding|vector|v|e)[_\-\s]?(\d+)$", re.IGNORECASE)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", str(name).strip().lower())


def suggest_mapping(columns: list[str], *, table: str = "interactions") -> dict[str, str]:
    """Return a proposed mapping canonical -> source column from common column names.

    Args:
        columns: the source column names.
        table: "interactions" (user_id, item_id, timestamp, event, category, title) or "items"
            (item_id, category, title).
    Returns:
        Only the canonical columns that could be matched; each source column is used at most once. An exact
        canonical name wins over an alias; aliases are tried in the order of COLUMN_ALIASES.
    """
    wanted = INTERACTION_COLUMNS if table == "interactions" else ITEM_COLUMNS
    normed: dict[str, str] = {}
    for c in columns:
        normed.setdefault(_norm(c), c)
    used: set[str] = set()
    out: dict[str, str] = {}
    for canon in wanted:
        for alias in COLUMN_ALIASES[canon]:
            src = normed.get(_norm(alias))
            if src is not None and src not in used:
                out[canon] = src
                used.add(src)
                break
    return out


def resolve_mapping(
    columns: list[str],
    mapping: dict[str, str] | None,
    *,
    table: str = "interactions",
    file_label: str = "the log",
) -> dict[str, str]:
    """Return the final mapping canonical -> source: the explicit ``mapping`` wins, suggestions fill the rest.

    Raises:
        SchemaError: an explicit source column does not exist, a canonical name is unknown, or a required
            column (user_id, item_id; item_id for the items table) cannot be found.
    """
    wanted = INTERACTION_COLUMNS if table == "interactions" else ITEM_COLUMNS
    available = ", ".join(f"'{c}'" for c in columns[:30]) + (" ..." if len(columns) > 30 else "")
    explicit = {}
    for canon, src in (mapping or {}).items():
        canon = str(canon).strip()
        if canon not in wanted:
            raise SchemaError(
                f"'{canon}' is not a column crossrec uses for {file_label}. Use one of: {', '.join(wanted)}."
            )
        if src is None or src == "":
            explicit[canon] = None
            continue
        if src not in columns:
            raise SchemaError(
                f"{file_label} has no column '{src}' (mapped to {canon}). Available columns: {available}."
            )
        explicit[canon] = src
    used = {s for s in explicit.values() if s}
    out = {k: v for k, v in explicit.items() if v}
    for canon, src in suggest_mapping([c for c in columns if c not in used], table=table).items():
        if canon not in explicit:
            out[canon] = src
    required = REQUIRED_COLUMNS if table == "interactions" else ("item_id",)
    for canon in required:
        if canon not in out:
            raise SchemaError(
                f"{file_label} has no '{canon}' column (looked for names like "
                f"{', '.join(COLUMN_ALIASES[canon][:6])}). Available columns: {available}. "
                f"Map the right one ({MAP_ADVICE.format(canon=canon)})."
            )
    return out


def vector_columns(columns: list[str]) -> list[str]:
    """Return the source columns that look like a numeric vector (vec_0, emb_1, embedding_2 ...), in index order."""
    found = [(int(m.group(1)), c) for c in columns if (m := _VECTOR_RE.match(str(c).strip()))]
    return [c for _, c in sorted(found)]


def attribute_name(column: str) -> str:
    """Return a clean snake_case attribute name for a source column ("Price Band" -> "price_band")."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", str(column).strip()).strip("_").lower()
    return name or "attribute"


def normalize_events(values: pd.Series) -> pd.Series:
    """Return canonical event names: lower-cased, trimmed, with aliases (pv -> view, buy -> purchase ...) applied."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    canon = np.array(
        [EVENT_ALIASES.get(u, EVENT_ALIASES.get(u.replace(" ", "_"), u.replace(" ", "_"))) for u in
         (re.sub(r"\s+", " ", str(x).strip().lower()) for x in uniques)],
        dtype=object,
    )
    canon = np.append(canon, "")  # index -1 (missing) -> ""
    return pd.Series(canon[codes], index=values.index, dtype=object)


# -- timestamps ------------------------------------------------------------------------------------
MAX_EPOCH_SECONDS = 4102444800  # 2100-01-01: later values are typos or wrong units
_DMY_RE = r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{2}|\d{4})(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*$"


@dataclass(frozen=True)
class ParsedTimes:
    """Parsed timestamps: int64 epoch seconds (0 where invalid), a validity mask, and how they were read."""

    seconds: np.ndarray
    valid: np.ndarray
    kind: str  # "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "yyyymmdd", "datetime", "order"
    note: str = ""


def parse_timestamps(values: pd.Series) -> ParsedTimes:
    """Return ParsedTimes for a text column of timestamps.

    Accepted: epoch seconds / milliseconds / microseconds / nanoseconds (unit chosen from the column's median
    magnitude), small integers (positions, used as order), yyyymmdd numbers, ISO date-times and dates
    ("2024-03-07 14:02", "2024-03-07T14:02:03Z"), and d/m/y or m/d/y dates with '/', '.' or '-' (day-first when
    a day above 12 proves it or the separator is '.'; month-first when a month position above 12 proves the
    other order). Negative values and anything after 2100 are invalid.
    """
    s = values.astype("str") if values.dtype != "str" else values
    n = len(s)
    seconds = np.zeros(n, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    present = s.notna().to_numpy() & (s.str.strip().str.len() > 0).fillna(False).to_numpy()
    if not present.any():
        return ParsedTimes(seconds, valid, "order")

    num = _fast_numeric(s)
    num_ok = np.isfinite(num) & present
    if num_ok.sum() >= 0.5 * present.sum():
        return _numeric_times(num, num_ok)

    # text dates: parse each distinct value once (dates repeat a lot)
    codes, uniques = pd.factorize(s[present].str.strip())
    u = pd.Series(uniques, dtype="str")
    secs_u = np.zeros(len(u), dtype=np.int64)
    ok_u = np.zeros(len(u), dtype=bool)
    note = ""
    iso = pd.to_datetime(u, format="ISO8601", errors="coerce", utc=True)
    iso_ok = iso.notna().to_numpy()
    secs_u[iso_ok] = _dt_seconds(iso[iso_ok])
    ok_u |= iso_ok
    rest = ~ok_u
    if rest.any():
        parts = u[rest].str.extract(_DMY_RE)
        has = parts[0].notna().to_numpy()
        if has.any():
            a = pd.to_numeric(parts[0], errors="coerce").to_numpy()
            b = pd.to_numeric(parts[1], errors="coerce").to_numpy()
            dot = u[rest].str.contains(".", regex=False).to_numpy()
            day_first = bool(np.any(a[has] > 12)) or (bool(dot[has].mean() > 0.5) and not np.any(b[has] > 12))
            if not day_first and not np.any(b[has] > 12):
                note = "Dates like 03/07/2024 are ambiguous; read them month-first (US). Use ISO dates (2024-07-03) to be sure."
            elif day_first and not np.any(a[has] > 12):
                note = "Dates like 03.07.2024 are ambiguous; read them day-first (European)."
            day, month = (a, b) if day_first else (b, a)
            year = pd.to_numeric(parts[2], errors="coerce").to_numpy()
            year = np.where(year < 100, 2000 + year, year)
            frame = pd.DataFrame(
                {
                    "year": year,
                    "month": month,
                    "day": day,
                    "hour": pd.to_numeric(parts[3], errors="coerce").fillna(0).to_numpy(),
                    "minute": pd.to_numeric(parts[4], errors="coerce").fillna(0).to_numpy(),
                    "second": pd.to_numeric(parts[5], errors="coerce").fillna(0).to_numpy(),
                }
            )
            dt = pd.to_datetime(frame, errors="coerce", utc=True)
            dok = dt.notna().to_numpy() & has
            idx = np.flatnonzero(rest)
            secs_u[idx[dok]] = _dt_seconds(dt[dok])
            ok_u[idx[dok]] = True
    rest = ~ok_u
    if rest.any() and rest.sum() <= 20000:  # last resort: free-form dates, per distinct value (slow, so bounded)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mixed = pd.to_datetime(u[rest], format="mixed", errors="coerce", utc=True)
        mok = mixed.notna().to_numpy()
        idx = np.flatnonzero(rest)
        secs_u[idx[mok]] = _dt_seconds(mixed[mok])
        ok_u[idx[mok]] = True
    ok_u &= (secs_u >= 0) & (secs_u <= MAX_EPOCH_SECONDS)
    pos = np.flatnonzero(present)
    seconds[pos] = np.where(ok_u[codes], secs_u[codes], 0)
    valid[pos] = ok_u[codes]
    return ParsedTimes(seconds, valid, "datetime", note)


def _fast_numeric(s: pd.Series) -> np.ndarray:
    """Return float64 values of a text column (NaN where not a number); tries a strict pyarrow cast first."""
    arr = pa.array(s, type=pa.string(), from_pandas=True)
    try:
        return pc.cast(pc.utf8_trim_whitespace(arr), pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return pd.to_numeric(s.str.strip(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _numeric_times(num: np.ndarray, ok: np.ndarray) -> ParsedTimes:
    vals = num[ok]
    med = float(np.median(np.abs(vals))) if len(vals) else 0.0
    # yyyymmdd numbers (20240307) look like 1970 epoch seconds; accept them when every value is a real date
    if len(vals) and np.all((vals >= 19000101) & (vals <= 21001231) & (np.mod(vals, 1) == 0)):
        iv = vals.astype(np.int64)
        dt = pd.to_datetime(
            pd.DataFrame({"year": iv // 10000, "month": iv // 100 % 100, "day": iv % 100}), errors="coerce", utc=True
        )
        if dt.notna().all():
            seconds = np.zeros(len(num), dtype=np.int64)
            seconds[ok] = _dt_seconds(dt)
            return ParsedTimes(seconds, ok.copy(), "yyyymmdd")
    if med >= 1e17:
        scale, kind = 1e9, "epoch_ns"
    elif med >= 1e14:
        scale, kind = 1e6, "epoch_us"
    elif med >= 1e11:
        scale, kind = 1e3, "epoch_ms"
    else:
        scale, kind = 1.0, "epoch_s"
    secs = np.where(ok, np.floor(np.where(ok, num, 0) / scale), 0)
    valid = ok & (secs >= 0) & (secs <= MAX_EPOCH_SECONDS)
    seconds = np.where(valid, secs, 0).astype(np.int64)
    if kind == "epoch_s" and valid.any() and seconds[valid].max() < 100_000_000:
        kind = "order"  # all before 1973: positions or counters, not clock times
    return ParsedTimes(seconds, valid, kind)


def _dt_seconds(dt: pd.Series) -> np.ndarray:
    """Return int64 epoch seconds of a tz-aware datetime Series (any resolution)."""
    return dt.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[s]").to_numpy().astype(np.int64)
