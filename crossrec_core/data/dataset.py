"""InteractionDataset: integer-indexed users, items and categories with compact, time-ordered sequences.

Sequences are stored as CSR-style arrays (``offsets`` + values), never as Python lists of lists, so
a 10-million-event log costs a few hundred MB and every operation below is vectorised.

Why one module of ~490 lines: the sequence helpers (history positions, the seen-item mask, windows,
category transitions) are methods of ``Sequences`` so every layer uses the same one, and they need
its CSR layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from crossrec_core.errors import ConfigError

UNKNOWN_CATEGORY = "Unknown"
DEFAULT_EVENT = "interaction"
# Why these weights: a purchase says more about intent than a view; a cart is in between.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "search": 1.0,
    "fav": 2.0,
    "cart": 3.0,
    "rating": 3.0,
    "review": 3.0,
    "purchase": 5.0,
    DEFAULT_EVENT: 1.0,
}


@dataclass
class DataReport:
    """Soft problems found while ingesting: they never stop ingestion, they are shown to the user."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def warn(self, message: str, key: str | None = None, n: int = 0) -> None:
        self.warnings.append(message)
        if key:
            self.counts[key] = self.counts.get(key, 0) + int(n)

    def to_dict(self) -> dict:
        return {"warnings": list(self.warnings), "notes": list(self.notes), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "DataReport":
        d = d or {}
        return cls(list(d.get("warnings", [])), list(d.get("notes", [])), dict(d.get("counts", {})))


@dataclass(frozen=True)
class Sequences:
    """Per-user event sequences in CSR layout.

    Events of user ``u`` are ``items[offsets[u]:offsets[u+1]]`` in time order.
    """

    offsets: np.ndarray  # int64 (n_users + 1,)
    items: np.ndarray  # int32 (n_events,) item_idx
    times: np.ndarray  # int64 (n_events,) seconds since epoch (or row order when the log had no time)
    events: np.ndarray  # int16 (n_events,) event_idx

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def user(self, user_idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (items, times, events) of one user."""
        a, b = int(self.offsets[user_idx]), int(self.offsets[user_idx + 1])
        return self.items[a:b], self.times[a:b], self.events[a:b]

    def user_of_event(self) -> np.ndarray:
        """Return the user_idx of every event, int32 (n_events,)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int32), self.lengths)

    def truncate(self, ends: np.ndarray) -> "Sequences":
        """Return sequences cut at absolute event positions ``ends`` (exclusive), one per user."""
        starts = self.offsets[:-1]
        ends = np.clip(np.asarray(ends, dtype=np.int64), starts, self.offsets[1:])
        lengths = ends - starts
        new_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_offsets[1:])
        _, idx = gather_ranges(starts, lengths)
        return Sequences(new_offsets, self.items[idx], self.times[idx], self.events[idx])

    # -- histories: the events of user users[i] before absolute position ends[i] ------------------
    def history_positions(self, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (rows, positions): every history event of every requested user, flattened.

        ``rows[j]`` is the index into ``users`` (0..len(users)-1) and ``positions[j]`` the absolute event
        position; both int64, in history order. Ends are clipped to each user's own events.
        """
        users = np.asarray(users, dtype=np.int64)
        starts = self.offsets[users]
        ends = np.clip(np.asarray(ends, dtype=np.int64), starts, self.offsets[users + 1])
        return gather_ranges(starts, ends - starts)

    def mask_seen(self, scores: np.ndarray, users: np.ndarray, ends: np.ndarray, fill: float = -np.inf) -> np.ndarray:
        """Set ``scores[i, item]`` to ``fill`` for every item in the history of users[i]; return scores.

        ``scores`` is (len(users), n_items) and modified in place: nothing a shopper already had is
        recommended, ranked or counted as a hit. History items outside the score columns are ignored.
        """
        rows, pos = self.history_positions(users, ends)
        items = self.items[pos].astype(np.int64)
        ok = (items >= 0) & (items < scores.shape[1])
        scores[rows[ok], items[ok]] = fill
        return scores

    def seen_before(self) -> np.ndarray:
        """Return bool (n_events,): the user already had this item earlier in the sequence."""
        if self.n_events == 0:
            return np.zeros(0, dtype=bool)
        df = pd.DataFrame({"u": self.user_of_event(), "i": self.items})
        return df.duplicated(keep="first").to_numpy()

    def windows(self, users: np.ndarray, ends: np.ndarray, width: int, n_time_buckets: int) -> dict[str, np.ndarray]:
        """Return left-padded windows of the last ``width`` events before each end (the encoders' input).

        Returns a dict of (B, T) arrays, T = min(width, longest history) (at least 1): "items" int64
        item_idx (-1 on padding), "events" int64 event_idx + 1 (0 on padding), "gaps" int64 time buckets,
        "valid" bool, and "pos" int64 absolute event positions (clipped; meaningless where not valid).
        """
        users = np.asarray(users, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        starts = self.offsets[users]
        ends = np.clip(ends, starts, self.offsets[users + 1])
        lengths = np.minimum(ends - starts, width)
        T = int(max(1, lengths.max(initial=0)))
        pos = ends[:, None] - T + np.arange(T, dtype=np.int64)[None, :]  # (B, T)
        valid = pos >= (ends - lengths)[:, None]
        safe = np.clip(pos, 0, max(self.n_events - 1, 0))
        if self.n_events == 0:
            items = np.full(pos.shape, -1, dtype=np.int64)
            events = np.zeros(pos.shape, dtype=np.int64)
            times = np.zeros(pos.shape, dtype=np.int64)
        else:
            items = np.where(valid, self.items[safe], -1).astype(np.int64)
            events = np.where(valid, self.events[safe].astype(np.int64) + 1, 0)
            times = self.times[safe]
        gaps = time_gap_buckets(times, n_time_buckets)
        # the first real event of a window has no previous event inside it
        first_valid = np.concatenate([valid[:, :1], valid[:, 1:] & ~valid[:, :-1]], axis=1)
        gaps = np.where(valid & ~first_valid, gaps, 0)
        return {"items": items, "events": events, "gaps": gaps, "valid": valid, "pos": safe}

    def category_transitions(self, item_category: np.ndarray, n_categories: int) -> np.ndarray:
        """Return float64 (C, C) counts of consecutive (category a -> category b) event pairs within users."""
        if self.n_events < 2:
            return np.zeros((n_categories, n_categories), dtype=np.float64)
        user = self.user_of_event()
        same = user[1:] == user[:-1]
        cats = np.asarray(item_category, dtype=np.int64)[self.items]
        a, b = cats[:-1][same], cats[1:][same]
        return np.bincount(a * n_categories + b, minlength=n_categories * n_categories).reshape(n_categories, n_categories).astype(np.float64)


def gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (row (N,), absolute position (N,)) for the concatenated ranges starts[i]:starts[i]+lengths[i]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    first = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths):
        np.cumsum(lengths[:-1], out=first[1:])
    pos = np.arange(total, dtype=np.int64) - first[row] + np.asarray(starts, dtype=np.int64)[row]
    return row, pos


def time_gap_buckets(times: np.ndarray, n_buckets: int) -> np.ndarray:
    """Return int64 log-scale buckets of the gap (seconds) to the previous event, same shape as times.

    ``times`` is (..., T) left-padded; bucket 0 is used for the first column (no previous event)
    and the caller masks padding. Bucket b >= 1 holds gaps with floor(ln(1 + gap)) == b - 1.
    """
    times = np.asarray(times, dtype=np.int64)
    gap = np.zeros(times.shape, dtype=np.float64)
    gap[..., 1:] = np.maximum(times[..., 1:] - times[..., :-1], 0)
    b = 1 + np.minimum(np.floor(np.log1p(gap)), n_buckets - 2).astype(np.int64)
    b[..., 0] = 0
    return b


def index_of(index: pd.Index, values) -> np.ndarray:
    """Return int64 positions of ``values`` (ids, names; one or many, compared as str) in ``index``, -1 where absent."""
    if isinstance(values, (str, bytes)) or np.isscalar(values):
        values = [values]
    arr = pd.Index(pd.Series(list(values) if not isinstance(values, (np.ndarray, pd.Series, pd.Index)) else values, dtype=object).astype(str))
    return index.get_indexer(arr).astype(np.int64)


@dataclass(frozen=True)
class LeaveLastOut:
    """Leave-last-out split, as absolute positions into the dataset's sequence arrays.

    A user with n >= 3 events: train = first n-2, valid target = event n-2, test target = event n-1.
    n == 2: train = first event, test = the second (no valid). n == 1: the event stays in train (cold user).
    The history for a valid target is everything before it; for a test target, everything before it
    (train + valid).
    """

    train_end: np.ndarray  # int64 (n_users,) exclusive end of each user's train events
    valid_users: np.ndarray  # int32 user_idx
    valid_pos: np.ndarray  # int64 absolute event position of the valid target
    test_users: np.ndarray  # int32
    test_pos: np.ndarray  # int64


@dataclass
class InteractionDataset:
    """A validated interaction log, indexed and ready for models, evaluation and the app."""

    name: str
    user_ids: np.ndarray  # object (n_users,) user_idx -> user_id (str)
    item_ids: np.ndarray  # object (n_items,) item_idx -> item_id (str)
    category_names: np.ndarray  # object (n_categories,)
    event_names: np.ndarray  # object (n_event_types,)
    item_category: np.ndarray  # int32 (n_items,) item_idx -> category_idx
    items: pd.DataFrame  # one row per item_idx (RangeIndex): item_id, category, title, attributes..., vectors...
    seqs: Sequences
    attribute_columns: tuple[str, ...] = ()
    vector_columns: tuple[str, ...] = ()
    has_timestamps: bool = True
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    report: DataReport = field(default_factory=DataReport)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @property
    def n_events(self) -> int:
        return self.seqs.n_events

    @property
    def item_titles(self) -> np.ndarray:
        return self.items["title"].to_numpy(dtype=object)

    # -- lookups -----------------------------------------------------------------------------
    def user_index(self, user_ids) -> np.ndarray:
        """Return user_idx for each id (int64), -1 where unknown."""
        return index_of(self._user_lookup, user_ids)

    def item_index(self, item_ids) -> np.ndarray:
        """Return item_idx for each id (int64), -1 where unknown."""
        return index_of(self._item_lookup, item_ids)

    def category_index(self, names) -> np.ndarray:
        return index_of(pd.Index(self.category_names), names)

    def event_index(self, names) -> np.ndarray:
        return index_of(pd.Index(self.event_names), names)

    @property
    def _user_lookup(self) -> pd.Index:
        cached = self.__dict__.get("_user_index_cache")
        if cached is None:
            cached = self.__dict__["_user_index_cache"] = pd.Index(self.user_ids)
        return cached

    @property
    def _item_lookup(self) -> pd.Index:
        cached = self.__dict__.get("_item_index_cache")
        if cached is None:
            cached = self.__dict__["_item_index_cache"] = pd.Index(self.item_ids)
        return cached

    def history(self, user_idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (item_idx, times, event_idx) of one user's time-ordered events."""
        return self.seqs.user(user_idx)

    def event_weight_array(self) -> np.ndarray:
        """Return float32 (n_event_types,) weights by event_idx (unknown events weigh 1)."""
        return np.array([self.event_weights.get(str(e), 1.0) for e in self.event_names], dtype=np.float32)

    # -- splits ------------------------------------------------------------------------------
    def leave_last_out(self) -> LeaveLastOut:
        """Return the leave-last-out split (see LeaveLastOut)."""
        starts, ends = self.seqs.offsets[:-1], self.seqs.offsets[1:]
        n = ends - starts
        train_end = np.where(n >= 3, ends - 2, np.where(n == 2, ends - 1, ends)).astype(np.int64)
        users = np.arange(self.n_users, dtype=np.int32)
        has_valid = n >= 3
        has_test = n >= 2
        return LeaveLastOut(
            train_end=train_end,
            valid_users=users[has_valid],
            valid_pos=(ends - 2)[has_valid].astype(np.int64),
            test_users=users[has_test],
            test_pos=(ends - 1)[has_test].astype(np.int64),
        )

    def temporal_split(self, test_fraction: float = 0.1) -> np.ndarray:
        """Return a boolean (n_events,) mask of test events: everything at or after a global time cut.

        The cut is the (1 - test_fraction) quantile of event times, so no test event precedes any
        train event across the whole log.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
        if self.n_events == 0:
            return np.zeros(0, dtype=bool)
        cut = np.quantile(self.seqs.times, 1.0 - test_fraction, method="higher")
        return self.seqs.times >= cut

    # -- identity ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Return a short content hash of the log and the item table (stable across processes)."""
        cached = self.__dict__.get("_fingerprint_cache")
        if cached:
            return cached
        h = hashlib.sha256()
        for arr in (self.seqs.offsets, self.seqs.items, self.seqs.times, self.seqs.events, self.item_category):
            h.update(np.ascontiguousarray(arr).tobytes())
        for names in (self.user_ids, self.item_ids, self.category_names, self.event_names):
            h.update("\x1f".join(map(str, names)).encode("utf-8", "surrogatepass"))
        h.update("\x1f".join(map(str, self.items["title"])).encode("utf-8", "surrogatepass"))
        fp = h.hexdigest()[:16]
        self.__dict__["_fingerprint_cache"] = fp
        return fp

    def interactions_frame(self) -> pd.DataFrame:
        """Return the canonical log (user_id, item_id, timestamp, event), time-ordered per user."""
        return pd.DataFrame(
            {
                "user_id": self.user_ids[self.seqs.user_of_event()],
                "item_id": self.item_ids[self.seqs.items],
                "timestamp": self.seqs.times,
                "event": self.event_names[self.seqs.events],
            }
        )


def _factorize_ids(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes int64, uniques object array of str) in order of first appearance; -1 for missing."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        raw = col.cat.codes.to_numpy()
        codes, first = pd.factorize(raw, sort=False)
        cats = col.cat.categories.to_numpy(dtype=object)
        if (first < 0).any():  # pandas keeps -1 out of uniques already; this guards older versions
            keep = first >= 0
            first = first[keep]
        return codes.astype(np.int64), np.asarray([str(c) for c in cats[first]], dtype=object)
    codes, uniques = pd.factorize(col.astype(str), sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def user_time_order(user_codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Return the stable order of events by (user, time), ties kept in row order.

    Skips the sort when the rows are already grouped by user and time-ordered (most exports), and sorts one
    combined int64 key instead of a multi-key lexsort when it fits (several times faster on 10M events).
    """
    n = len(user_codes)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    u = np.asarray(user_codes, dtype=np.int64)
    t = np.asarray(times, dtype=np.int64)
    du, dt = np.diff(u), np.diff(t)
    if bool(np.all((du > 0) | ((du == 0) & (dt >= 0)))):
        return np.arange(n, dtype=np.int64)
    tmin = int(t.min())
    span = int(t.max()) - tmin + 1
    if (int(u.max()) + 1) * span < 2**62:
        return np.argsort(u * span + (t - tmin), kind="stable")
    return np.lexsort((t, u))


def from_frames(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    name: str = "dataset",
    has_timestamps: bool = True,
    event_weights: dict[str, float] | None = None,
    report: DataReport | None = None,
) -> InteractionDataset:
    """Build an InteractionDataset from CLEAN canonical frames.

    Args:
        interactions: columns user_id (str), item_id (str), timestamp (int64 seconds, or row order),
            optional event (str). Already validated: no null ids, duplicates dropped.
        items: optional columns item_id (str), category, title, plus attribute / vector columns; one row
            per item. Items listed here but absent from the log become cold items.
    Returns:
        The dataset, users and items indexed in order of first appearance (log first, then item table).
    """
    report = report or DataReport()
    inter = interactions
    n = len(inter)
    # Categorical id columns (as load_log passes them) are factorized through their integer codes: 10M
    # events would otherwise pay for hashing every id string again. The result is the same either way.
    user_codes, user_uniques = _factorize_ids(inter["user_id"])
    item_codes, item_uniques = _factorize_ids(inter["item_id"])
    if items is not None and len(items):
        item_table = items.copy()
        item_table["item_id"] = item_table["item_id"].astype(str)
        item_table = item_table.drop_duplicates("item_id", keep="first")
        table_ids = item_table["item_id"].to_numpy(dtype=object)
        new = pd.Index(item_uniques).get_indexer(table_ids) < 0  # table items absent from the log: cold items
        item_uniques = np.concatenate([item_uniques, table_ids[new]])
    else:
        item_table = pd.DataFrame({"item_id": pd.Series([], dtype=object)})

    if "event" in inter.columns:
        # normalise the (few) distinct event names, not every row
        raw_codes, raw_uniques = _factorize_ids(inter["event"])
        names = pd.Series(raw_uniques, dtype=object).astype(str).str.strip().str.lower()
        names = names.where(names != "", DEFAULT_EVENT).to_numpy(dtype=object)
        names = np.append(names, DEFAULT_EVENT)  # code -1 (missing event) -> the default event
        remap, canon = pd.factorize(names, sort=False)
        # raw_codes == -1 picks the appended default; the second factorize keeps only names that occur,
        # in order of first appearance
        ev_codes, used = pd.factorize(remap[raw_codes], sort=False)
        ev_uniques = np.asarray(canon, dtype=object)[used]
    else:
        ev_codes = np.zeros(n, dtype=np.int64)
        ev_uniques = np.array([DEFAULT_EVENT] if n else [], dtype=object)

    times = inter["timestamp"].to_numpy(dtype=np.int64, copy=False) if "timestamp" in inter else np.arange(n, dtype=np.int64)
    # stable sort: by user, then time, ties keep row order
    order = user_time_order(user_codes, times)
    user_sorted = user_codes[order]
    counts = np.bincount(user_sorted, minlength=len(user_uniques)).astype(np.int64)
    offsets = np.zeros(len(user_uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    seqs = Sequences(
        offsets=offsets,
        items=item_codes[order].astype(np.int32),
        times=times[order].astype(np.int64),
        events=ev_codes[order].astype(np.int16),
    )

    # item table aligned to item_idx
    table = pd.DataFrame({"item_id": pd.Series(item_uniques, dtype=object)})
    table = table.merge(item_table, on="item_id", how="left", sort=False)
    if "category" not in table:
        table["category"] = UNKNOWN_CATEGORY
    cat = table["category"].astype(object).where(table["category"].notna(), UNKNOWN_CATEGORY).astype(str).str.strip()
    table["category"] = cat.where(cat != "", UNKNOWN_CATEGORY)
    if "title" not in table:
        table["title"] = ""
    table["title"] = table["title"].astype(object).where(table["title"].notna(), "").astype(str)
    reserved = {"item_id", "category", "title"}
    vector_columns = tuple(c for c in item_table.columns if c not in reserved and str(c).startswith("vec_"))
    attribute_columns = tuple(c for c in item_table.columns if c not in reserved and c not in vector_columns)
    for c in attribute_columns:
        table[c] = table[c].astype(object).where(table[c].notna(), "").astype(str)
    for c in vector_columns:
        table[c] = pd.to_numeric(table[c], errors="coerce").fillna(0.0).astype(np.float32)
    cat_codes, cat_uniques = pd.factorize(table["category"], sort=True)

    return InteractionDataset(
        name=name,
        user_ids=np.asarray(user_uniques, dtype=object),
        item_ids=np.asarray(item_uniques, dtype=object),
        category_names=np.asarray(cat_uniques, dtype=object),
        event_names=np.asarray(ev_uniques, dtype=object),
        item_category=cat_codes.astype(np.int32),
        items=table.reset_index(drop=True),
        seqs=seqs,
        attribute_columns=attribute_columns,
        vector_columns=vector_columns,
        has_timestamps=has_timestamps,
        event_weights={**DEFAULT_EVENT_WEIGHTS, **(event_weights or {})},
        report=report,
    )
