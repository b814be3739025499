"""P(next category | history) for the category term of retrieval: three estimates, mixed.

1. **recent flow**: the first-order category transitions of the last events, decayed by age (the
   category-transition baseline's rule; before this module it was the only estimate);
2. **last two**: the transitions from the last TWO categories (a second-order chain: after tent then
   stove comes gas, after pan then stove comes a kettle), backed off to the first-order flow where a
   pair was seldom seen;
3. **habit**: the shopper's own category mix over the whole history, smoothed by the shop's.

Why three: the first-order flow of the last events cannot see a category that follows a PAIR of
categories, nor the categories a shopper keeps coming back to. On logs with that structure it left
most of the category signal unused (bench/RESULTS.md "The category of the next event").

The mixture weights are fitted by EM on the likelihood of the validation events' categories (positions
the counts never saw), so a log without second-order structure or habits gives those estimates ~0
weight and the recent flow alone, as before. A model saved without these tables has weights (1, 0, 0):
its scores are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossrec_core.data.dataset import Sequences, gather_ranges

N_PARTS = 3  # recent flow, last two, habit
RECENT_ONLY = np.array([1.0, 0.0, 0.0], dtype=np.float32)
PAIR_BACKOFF = 2.0  # pseudo-count of the first-order flow in each pair's row
HABIT_SMOOTHING = 1.0  # pseudo-count of the shop's category share in each history's mix
EM_ITERATIONS = 200
_ROWS = 512  # histories at a time: bounds the (parts, rows, categories) block


@dataclass(frozen=True)
class CategoryHistory:
    """The tables and mixture weights of P(next category | history)."""

    n_categories: int
    pair_keys: np.ndarray  # int64 sorted unique (c2 * C + c1) * C + c of observed (c2, c1 -> c) steps
    pair_counts: np.ndarray  # float32 count of each key
    category_share: np.ndarray  # float64 (C,) the shop's share of events per category
    mix: np.ndarray = field(default_factory=RECENT_ONLY.copy)  # float32 (3,) weights of (recent flow, last two, habit)

    @property
    def recent_only(self) -> bool:
        return bool(self.mix[1] == 0 and self.mix[2] == 0)

    def with_mix(self, mix: np.ndarray) -> "CategoryHistory":
        return CategoryHistory(self.n_categories, self.pair_keys, self.pair_counts, self.category_share,
                               np.asarray(mix, dtype=np.float32))


def fit_category_history(seqs: Sequences, item_category: np.ndarray, n_categories: int, category_share: np.ndarray) -> CategoryHistory:
    """Return the tables counted over ``seqs`` (the training part), mixture weights (1, 0, 0) until ``fit_mix``."""
    C = max(int(n_categories), 1)
    if seqs.n_events < 3:
        return CategoryHistory(C, np.zeros(0, np.int64), np.zeros(0, np.float32), np.asarray(category_share, np.float64))
    user = seqs.user_of_event()
    cats = np.asarray(item_category, dtype=np.int64)[seqs.items]
    same = (user[2:] == user[:-2])  # three consecutive events of one user
    key = (cats[:-2][same] * C + cats[1:-1][same]) * C + cats[2:][same]
    keys, counts = np.unique(key, return_counts=True)
    return CategoryHistory(C, keys.astype(np.int64), counts.astype(np.float32), np.asarray(category_share, np.float64))


def _pair_rows(model: CategoryHistory, flow: np.ndarray, c2: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Return float64 (B, C) P(next | c2, c1): pair counts plus PAIR_BACKOFF x the first-order row of c1."""
    C = model.n_categories
    ctx = c2 * C + c1
    lo = np.searchsorted(model.pair_keys, ctx * C)
    hi = np.searchsorted(model.pair_keys, ctx * C + C)
    rows, pos = gather_ranges(lo, hi - lo)
    counts = np.zeros((len(c1), C), dtype=np.float64)
    counts[rows, model.pair_keys[pos] % C] = model.pair_counts[pos]
    out = counts + PAIR_BACKOFF * flow[c1]
    return out / out.sum(axis=1, keepdims=True)


def _habit_rows(model: CategoryHistory, cats: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return float64 (B, C) each history's category share, smoothed by the shop's."""
    rows, pos = seqs.history_positions(users, ends)
    items = seqs.items[pos].astype(np.int64)
    ok = (items >= 0) & (items < len(cats))
    counts = np.zeros((len(users), model.n_categories), dtype=np.float64)
    np.add.at(counts, (rows[ok], cats[items[ok]]), 1.0)
    counts += HABIT_SMOOTHING * model.category_share[None, :]
    return counts / counts.sum(axis=1, keepdims=True)


def category_parts(
    model: CategoryHistory, recent: np.ndarray, flow: np.ndarray, item_category: np.ndarray,
    seqs: Sequences, users: np.ndarray, ends: np.ndarray,
) -> np.ndarray:
    """Return float64 (3, B, C): the recent flow (given, ``recent``), last-two and habit estimates.

    ``flow`` is the (C, C) first-order transition table the pairs back off to; users with fewer than two
    events use their last category twice.
    """
    cats = np.asarray(item_category, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    starts = seqs.offsets[users]
    last = np.clip(ends - 1, starts, None)
    before = np.clip(ends - 2, starts, None)
    n = len(cats)
    c1 = cats[np.clip(seqs.items[np.clip(last, 0, max(seqs.n_events - 1, 0))].astype(np.int64), 0, n - 1)]
    c2 = cats[np.clip(seqs.items[np.clip(before, 0, max(seqs.n_events - 1, 0))].astype(np.int64), 0, n - 1)]
    return np.stack([recent, _pair_rows(model, flow, c2, c1), _habit_rows(model, cats, seqs, users, ends)])


def mix_parts(model: CategoryHistory, parts: np.ndarray) -> np.ndarray:
    """Return float64 (B, C) the mixture of ``parts`` (3, B, C) with the model's weights."""
    return np.tensordot(model.mix.astype(np.float64), parts, axes=1)


def fit_mix(parts: np.ndarray, next_category: np.ndarray, iterations: int = EM_ITERATIONS) -> np.ndarray:
    """Return float32 (3,) mixture weights maximising the likelihood of ``next_category`` (B,) under ``parts`` (3, B, C).

    Plain EM for the weights of a fixed-component mixture; it starts from equal weights and each step
    cannot lower the likelihood.
    """
    if parts.shape[1] == 0:
        return RECENT_ONLY.copy()
    lik = np.maximum(parts[:, np.arange(parts.shape[1]), np.asarray(next_category, dtype=np.int64)], 1e-12)  # (3, B)
    w = np.full(len(parts), 1.0 / len(parts))
    for _ in range(iterations):
        r = w[:, None] * lik
        r /= r.sum(axis=0, keepdims=True)
        w = r.mean(axis=1)
    return w.astype(np.float32)


def chunks(n: int):
    """Yield slices of at most _ROWS rows covering range(n)."""
    for s in range(0, n, _ROWS):
        yield slice(s, min(s + _ROWS, n))
