"""Item-kNN: item-item co-occurrence within user sequences, and the plumbing every simple ranker shares.

It is both a baseline (evaluation/baselines.py) and part of every trained model: the validated item-kNN
term of retrieval and one of the fusion scorer's features (models/features.py). Vectorised numpy /
torch with a pruned sparse (CSR) similarity, so it runs on catalogues of tens of thousands of items
without a dense n_items x n_items matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from crossrec_core.kernels import compiled_kernel
from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.errors import ConfigError, NotTrainedError

log = logging.getLogger(__name__)

# Popularity is added with this tiny weight to the kNN / transition scores so that items the main signal
# cannot separate (no neighbours, empty history) are ordered by popularity instead of by item_idx.
_TIE_BREAK = 1e-6


class BaselineRanker:
    """Shared plumbing: fitted state ends in ``_``; scoring before ``fit`` raises NotTrainedError."""

    name: str = "baseline"

    def __init__(self) -> None:
        self.n_items_: int | None = None
        self.popularity_: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        return self.n_items_ is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotTrainedError(f"The {self.name} baseline has not been fitted yet. Call fit(ds, seqs) first.")

    def _fit_popularity(self, ds: InteractionDataset, seqs: Sequences) -> None:
        self.n_items_ = ds.n_items
        self.popularity_ = np.bincount(seqs.items, minlength=ds.n_items).astype(np.float32)

    def _pop_tiebreak(self) -> np.ndarray:
        pop = self.popularity_
        return (_TIE_BREAK * pop / max(float(pop.max()), 1.0)).astype(np.float32)


@dataclass(frozen=True)
class _Recent:
    """The last ``n`` history events of each requested user with recency weights."""

    rows: np.ndarray  # int64 index into users
    items: np.ndarray  # int64 item_idx
    weights: np.ndarray  # float32, 1 for the most recent event, decay**age before it


def _recent_events(seqs: Sequences, users: np.ndarray, ends: np.ndarray, n_recent: int, decay: float) -> _Recent:
    users = np.asarray(users, dtype=np.int64)
    ends = np.clip(np.asarray(ends, dtype=np.int64), seqs.offsets[users], seqs.offsets[users + 1])
    starts = np.maximum(seqs.offsets[users], ends - n_recent)
    rows, pos = seqs.history_positions(users, ends)
    keep = pos >= starts[rows]
    rows, pos = rows[keep], pos[keep]
    age = ends[rows] - 1 - pos  # 0 = most recent
    weights = np.power(np.float32(decay), age.astype(np.float32)).astype(np.float32)
    return _Recent(rows, seqs.items[pos].astype(np.int64), weights)


# From this many similarity entries the best neighbours are chosen by a compiled kernel (numba) rather than a
# lexsort: on the 10M-event log (40M entries) the lexsort took 30 s; below, numba's import and compile cost more.
KERNEL_MIN_ENTRIES = 2_000_000
# neighbour_sums adds a shopper's contributions up in a dense (shoppers x items) array where that array is at most
# this many cells per contribution (and DENSE_SUMS_MAX_CELLS in all), else sorts the contributions' cells. Why:
# before a training's first epoch, drift-s's 2,000 validation shoppers x 1,439 items (2.9M contributions) took 1.36 s
# with the sort, 0.13 s with the dense sums (bench/RESULTS.md, session 22); a 500k-item catalogue's rows would be
# mostly zeros, and there the sort wins.
DENSE_SUMS_PER_CONTRIBUTION = 16
DENSE_SUMS_MAX_CELLS = 1 << 25
# Past the dense sums, from this many contributions a compiled kernel adds each shopper's row up in one item-wide
# array and sorts only the items it touched (np.unique's argsort of every cell took 16 s of 10M recommending's
# 100,000 shoppers: bench/RESULTS.md, session 23); below, numba's import costs more than it saves.
ROW_SUMS_MIN_CONTRIBUTIONS = 200_000


def _row_sums(flat, vals, n):  # pragma: no cover - numba
    """Return (cells, sums) of contributions grouped by row (cell = row * n + item, rows ascending): per row, the
    sums in an item-wide array, added in input order (index_add_'s floats), and the row's touched items sorted."""
    acc = np.zeros(n, np.float32)
    mark = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    cells = np.empty(len(flat), np.int64)
    sums = np.empty(len(flat), np.float32)
    out, i = 0, 0
    while i < len(flat):
        row = flat[i] // n
        t = 0
        while i < len(flat) and flat[i] // n == row:
            item = flat[i] % n
            if not mark[item]:
                mark[item] = True
                touched[t] = item
                t += 1
            acc[item] += vals[i]
            i += 1
        items = np.sort(touched[:t])
        for q in range(t):
            cells[out] = row * n + items[q]
            sums[out] = acc[items[q]]
            acc[items[q]] = 0.0
            mark[items[q]] = False
            out += 1
    return cells[:out], sums[:out]


def _best_per_row(src, sim, n, k, row_start, row_keep):  # pragma: no cover - numba
    """Return the indices of each row's best ``k`` entries by ``sim`` (ties: input order), rows in order."""
    pos = row_start[:-1].copy()
    perm = np.empty(len(src), dtype=np.int64)
    for i in range(len(src)):  # a stable counting sort by row
        perm[pos[src[i]]] = i
        pos[src[i]] += 1
    out = np.empty(row_keep[-1], dtype=np.int64)
    for r in range(n):
        a, b = row_start[r], row_start[r + 1]
        if b == a:
            continue
        seg = perm[a:b]
        best = np.argsort(-sim[seg], kind="mergesort")[:k]
        out[row_keep[r] : row_keep[r] + len(best)] = seg[best]
    return out


def best_neighbours(src: np.ndarray, dst: np.ndarray, sim: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the CSR (offsets, dst, sim) of each item's ``k`` best neighbours, best first (ties: smaller dst).

    ``src`` / ``dst`` / ``sim`` are the similarity entries, each (src, dst) once, with every row's entries in
    increasing ``dst`` order (the compiled path keeps the input order among ties).
    """
    row_counts = np.bincount(src, minlength=n)
    if len(src) < KERNEL_MIN_ENTRIES:
        order = np.lexsort((dst, -sim, src))
        src, dst, sim = src[order], dst[order], sim[order]
        row_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(row_counts, out=row_start[1:])
        keep = np.arange(len(src)) - row_start[src] < k
        idx = np.flatnonzero(keep)
    else:
        row_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(row_counts, out=row_start[1:])
        row_keep = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.minimum(row_counts, k), out=row_keep[1:])
        idx = compiled_kernel(_best_per_row)(src.astype(np.int64), sim.astype(np.float64), int(n), int(k), row_start, row_keep)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.minimum(row_counts, k), out=offsets[1:])
    return offsets, dst[idx], sim[idx]


class ItemKNNRanker(BaselineRanker):
    """Item-item neighbours within user sequences; a history scores the sum of its items' neighbours.

    Co-occurrence (``directed=False``, the default): two items co-occur when they are at most ``window``
    events apart in one user's sequence, in either order; similarity is ``co(a, b) / sqrt(n(a) n(b))``
    (n = event counts).

    What comes next (``directed=True``, sequential rules): b is a neighbour of a when b comes at most
    ``window`` events AFTER a, each time weighted 1 / lag; similarity is that sum over n(a), an estimate of
    P(b follows a). Why both: co-occurrence says "bought together", the directed table says "bought
    next", which is the signal of a shop where a kit is bought piece by piece (a tent, then the stove
    that fits it, then its gas): on such a log the directed table alone ranked the next purchase far
    better (bench/RESULTS.md, session 11). Training chooses between them on validation.

    Either way neighbours are pruned to each item's ``max_neighbors`` best, and a history scores
    ``sum_j decay**age_j * sim(h_j, i)`` over its last ``n_recent`` items.
    """

    def __init__(
        self,
        window: int = 10,
        n_recent: int = 20,
        decay: float = 0.8,
        max_neighbors: int = 200,
        name: str = "item-kNN",
        directed: bool = False,
    ) -> None:
        super().__init__()
        for key, val in (("window", window), ("n_recent", n_recent), ("max_neighbors", max_neighbors)):
            if int(val) < 1:
                raise ConfigError(f"{key} must be at least 1, got {val}.")
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"decay must be in (0, 1], got {decay}.")
        self.window, self.n_recent, self.decay, self.max_neighbors = int(window), int(n_recent), float(decay), int(max_neighbors)
        self.directed = bool(directed)
        self.name = name
        self.sim_offsets_: np.ndarray | None = None
        self.sim_items_: np.ndarray | None = None
        self.sim_values_: np.ndarray | None = None

    @classmethod
    def next_items(cls, name: str = "next-item rules") -> "ItemKNNRanker":
        """Return the directed ranker with the settings training compares with co-occurrence: the next 3 events
        after an item count, the last 3 history items score, each older one at half the weight (measured
        on chain-a, hm and the demo store's validation split; windows of 1-5 were within a few percent)."""
        return cls(window=3, n_recent=3, decay=0.5, name=name, directed=True)

    @property
    def params(self) -> dict:
        """The settings a saved model needs to score histories as it was fitted (window, n_recent, decay, directed)."""
        return {"window": self.window, "n_recent": self.n_recent, "decay": self.decay, "directed": self.directed}

    def fit(self, ds: InteractionDataset, seqs: Sequences) -> "ItemKNNRanker":
        """Return self with the sparse similarity (CSR: sim_offsets_, sim_items_, sim_values_) built from ``seqs``."""
        self._fit_popularity(ds, seqs)
        n = ds.n_items
        keys, counts = self._pair_counts(seqs.items.astype(np.int64), seqs.user_of_event(), n)
        src, dst = keys // n, keys % n
        pop = np.maximum(self.popularity_.astype(np.float64), 1.0)
        sim = counts / pop[src] if self.directed else counts / np.sqrt(pop[src] * pop[dst])
        offsets, dst, sim = best_neighbours(src, dst, sim, n, self.max_neighbors)
        self.sim_offsets_, self.sim_items_, self.sim_values_ = offsets, dst.astype(np.int32), sim.astype(np.float32)
        log.info("item-kNN: %d items, %d similarity entries", n, len(dst))
        return self

    def _pair_counts(self, items: np.ndarray, user: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (keys a * n + b, float64 weights) of every pair of different items at most ``window`` events apart in
        one user's sequence: both orders counting 1 each (co-occurrence), or b after a weighing 1 / lag. Each key
        once, and the keys of one ``a`` in increasing ``b`` order (what best_neighbours needs).

        One sort of every pair's code (key, lag in the low bits) instead of a merge per lag: numpy's plain sort is
        about 10x faster than the argsort a merge needs (on the 10M-event log 136 s -> 6 s for the co-occurrence
        pairs). The weights add up in the same order as before (lag 1, then 2, ...), so the sums are the same floats.
        """
        bits = max(int(self.window).bit_length(), 1)
        if n * n << bits >= 2**63:
            raise ConfigError(f"item-kNN: a catalogue of {n:,} items is too large for a window of {self.window} events.")
        codes = []
        for lag in range(1, self.window + 1):
            if lag >= len(items):
                break
            same = user[lag:] == user[:-lag]
            a, b = items[:-lag][same], items[lag:][same]
            diff = a != b
            a, b = a[diff], b[diff]
            key = a * n + b if self.directed else np.minimum(a, b) * n + np.maximum(a, b)  # undirected: each pair once
            codes.append(key << bits | lag)
        codes = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
        codes.sort()
        keys = codes >> bits
        first = np.ones(len(keys), dtype=bool)
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        group = np.cumsum(first) - 1
        weights = 1.0 / (codes & ((1 << bits) - 1)) if self.directed else np.ones(len(codes))
        counts = np.bincount(group, weights=weights, minlength=int(group[-1]) + 1 if len(group) else 0)
        keys = keys[first]
        if not self.directed:  # each unordered pair in both directions
            src, dst = keys // n, keys % n
            # mirrored first: a row's mirrored b's are below it, its own above, each run increasing
            keys, counts = np.concatenate([dst * n + src, keys]), np.concatenate([counts, counts])
        return keys, counts

    @classmethod
    def from_arrays(cls, offsets: np.ndarray, items: np.ndarray, values: np.ndarray, popularity: np.ndarray,
                    params: dict | None = None) -> "ItemKNNRanker":
        """Return a fitted ranker rebuilt from its saved CSR similarity and ``params`` (used by saved models;
        None = the co-occurrence defaults, what models saved before session 11 used)."""
        r = cls(**(params or {}))
        r.n_items_ = len(offsets) - 1
        r.popularity_ = np.asarray(popularity, dtype=np.float32)
        r.sim_offsets_ = np.asarray(offsets, dtype=np.int64)
        r.sim_items_ = np.asarray(items, dtype=np.int32)
        r.sim_values_ = np.asarray(values, dtype=np.float32)
        return r

    def neighbours(self, item_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (item_idx, similarity) of one item's kept neighbours, best first."""
        self._check_fitted()
        a, b = int(self.sim_offsets_[item_idx]), int(self.sim_offsets_[item_idx + 1])
        return self.sim_items_[a:b].astype(np.int64), self.sim_values_[a:b]

    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, n_items) recency-weighted neighbour sums (plus a tiny popularity tie-break)."""
        flat, vals = self._contributions(seqs, users, ends)
        n = self.n_items_
        out = torch.zeros(len(users) * n, dtype=torch.float32)
        out.index_add_(0, torch.from_numpy(flat), torch.from_numpy(vals))
        scores = out.view(len(users), n).numpy()
        scores += self._pop_tiebreak()[None, :]
        return scores

    def neighbour_sums(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (cells, sums): the sorted cells row * n_items + item that some neighbour reaches and their
        neighbour sums (score_histories minus the tie-break, added in the same order: the same floats)."""
        flat, vals = self._contributions(seqs, users, ends)
        size = len(users) * self.n_items_
        if size <= min(DENSE_SUMS_PER_CONTRIBUTION * len(flat), DENSE_SUMS_MAX_CELLS):
            # few items per shopper's row: the rows' dense sums (score_histories' own, no sort), their nonzero cells
            # (a neighbour sum is positive wherever a neighbour reaches: similarities and recency weights are)
            out = torch.zeros(size, dtype=torch.float32)
            out.index_add_(0, torch.from_numpy(flat), torch.from_numpy(vals))
            dense = out.numpy()
            cells = np.flatnonzero(dense)
            return cells, dense[cells]
        if len(flat) >= ROW_SUMS_MIN_CONTRIBUTIONS and (len(flat) < 2 or (np.diff(flat // self.n_items_) >= 0).all()):
            return compiled_kernel(_row_sums)(flat, vals, int(self.n_items_))
        cells, inv = np.unique(flat, return_inverse=True)
        out = torch.zeros(len(cells), dtype=torch.float32)
        out.index_add_(0, torch.from_numpy(inv.astype(np.int64).ravel()), torch.from_numpy(vals))
        return cells, out.numpy()

    def _contributions(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (cell = row * n_items + item, float32 value) of every neighbour contribution, in order."""
        self._check_fitted()
        n = self.n_items_
        recent = _recent_events(seqs, users, ends, self.n_recent, self.decay)
        valid = (recent.items >= 0) & (recent.items < n)
        rows, hitems, w = recent.rows[valid], recent.items[valid], recent.weights[valid]
        lengths = self.sim_offsets_[hitems + 1] - self.sim_offsets_[hitems]
        total = int(lengths.sum())
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        gather = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths) + np.repeat(self.sim_offsets_[hitems], lengths)
        flat = np.repeat(rows, lengths) * n + self.sim_items_[gather]
        vals = np.repeat(w, lengths) * self.sim_values_[gather]
        return flat.astype(np.int64), vals.astype(np.float32)

    def grow(self, n_items: int) -> None:
        """Extend the fitted tables to ``n_items`` items: the new ones have no neighbours and popularity 0
        (they co-occur with nothing until the model is retrained), so ``score_histories`` has the new width."""
        self._check_fitted()
        add = int(n_items) - int(self.n_items_)
        if add < 0:
            raise ConfigError(f"grow: the catalogue cannot shrink from {self.n_items_} to {n_items} items.")
        self.sim_offsets_ = np.concatenate([self.sim_offsets_, np.full(add, self.sim_offsets_[-1], dtype=np.int64)])
        self.popularity_ = np.concatenate([self.popularity_, np.zeros(add, dtype=np.float32)])
        self.n_items_ = int(n_items)
