"""Baseline rankers: popularity, item-kNN and category transitions.

Each implements ``scoring.Ranker`` and learns only from the sequences given to ``fit`` (the training part
of a split), so evaluating them with leave-last-out never leaks the held-out targets. Everything is
vectorised numpy / torch; item-kNN keeps a pruned sparse (CSR) similarity so it runs on catalogues of
tens of thousands of items without a dense n_items x n_items matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.errors import ConfigError, NotTrainedError
from crossrec_core.evaluation.metrics import history_positions

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
    rows, pos = history_positions(seqs, users, ends)
    keep = pos >= starts[rows]
    rows, pos = rows[keep], pos[keep]
    age = ends[rows] - 1 - pos  # 0 = most recent
    weights = np.power(np.float32(decay), age.astype(np.float32)).astype(np.float32)
    return _Recent(rows, seqs.items[pos].astype(np.int64), weights)


class PopularityRanker(BaselineRanker):
    """Scores every item by its (optionally recency-weighted) number of training interactions.

    Args:
        half_life: None for plain counts; otherwise an event at time ``t`` weighs
            ``0.5 ** ((t_max - t) / half_life)`` (same unit as the log's timestamps: seconds, or row
            order for logs without time).
    """

    def __init__(self, half_life: float | None = None, name: str = "popularity") -> None:
        super().__init__()
        if half_life is not None and not half_life > 0:
            raise ConfigError(f"half_life must be positive (or None for plain counts), got {half_life}.")
        self.half_life = half_life
        self.name = name
        self.scores_: np.ndarray | None = None

    def fit(self, ds: InteractionDataset, seqs: Sequences) -> "PopularityRanker":
        """Return self, fitted on the events in ``seqs``."""
        self._fit_popularity(ds, seqs)
        if self.half_life is None or seqs.n_events == 0:
            self.scores_ = self.popularity_.copy()
        else:
            age = (seqs.times.max() - seqs.times).astype(np.float64)
            w = np.power(0.5, age / self.half_life)
            self.scores_ = np.bincount(seqs.items, weights=w, minlength=ds.n_items).astype(np.float32)
        return self

    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, n_items): the same popularity row for every history."""
        self._check_fitted()
        return np.broadcast_to(self.scores_, (len(users), self.n_items_)).copy()


class ItemKNNRanker(BaselineRanker):
    """Item-item co-occurrence cosine within user sequences; a history scores the sum of its neighbours.

    Two items co-occur when they are at most ``window`` events apart in one user's sequence. Similarity
    is ``co(a, b) / sqrt(n(a) n(b))`` (n = event counts), pruned to each item's ``max_neighbors`` best.
    A history scores ``sum_j decay**age_j * sim(h_j, i)`` over its last ``n_recent`` items.
    """

    def __init__(
        self,
        window: int = 10,
        n_recent: int = 20,
        decay: float = 0.8,
        max_neighbors: int = 200,
        name: str = "item-kNN",
    ) -> None:
        super().__init__()
        for key, val in (("window", window), ("n_recent", n_recent), ("max_neighbors", max_neighbors)):
            if int(val) < 1:
                raise ConfigError(f"{key} must be at least 1, got {val}.")
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"decay must be in (0, 1], got {decay}.")
        self.window, self.n_recent, self.decay, self.max_neighbors = int(window), int(n_recent), float(decay), int(max_neighbors)
        self.name = name
        self.sim_offsets_: np.ndarray | None = None
        self.sim_items_: np.ndarray | None = None
        self.sim_values_: np.ndarray | None = None

    def fit(self, ds: InteractionDataset, seqs: Sequences) -> "ItemKNNRanker":
        """Return self with the sparse similarity (CSR: sim_offsets_, sim_items_, sim_values_) built from ``seqs``."""
        self._fit_popularity(ds, seqs)
        n = ds.n_items
        items = seqs.items.astype(np.int64)
        user = seqs.user_of_event()
        keys = np.zeros(0, dtype=np.int64)
        counts = np.zeros(0, dtype=np.int64)
        for lag in range(1, self.window + 1):  # one vectorised pass per lag, merged as we go (bounded memory)
            if lag >= len(items):
                break
            same = user[lag:] == user[:-lag]
            a, b = items[:-lag][same], items[lag:][same]
            diff = a != b
            a, b = a[diff], b[diff]
            lag_keys = np.concatenate([a * n + b, b * n + a])
            keys = np.concatenate([keys, lag_keys])
            counts = np.concatenate([counts, np.ones(len(lag_keys), dtype=np.int64)])
            keys, inv = np.unique(keys, return_inverse=True)
            counts = np.bincount(inv, weights=counts, minlength=len(keys)).astype(np.int64)
        src, dst = keys // n, keys % n
        pop = np.maximum(self.popularity_.astype(np.float64), 1.0)
        sim = counts / np.sqrt(pop[src] * pop[dst])
        # keep each item's best neighbours: sort by (src, -sim), rank within src
        order = np.lexsort((dst, -sim, src))
        src, dst, sim = src[order], dst[order], sim[order]
        row_counts = np.bincount(src, minlength=n)
        row_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(row_counts, out=row_start[1:])
        rank = np.arange(len(src)) - row_start[src]
        keep = rank < self.max_neighbors
        src, dst, sim = src[keep], dst[keep], sim[keep]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=offsets[1:])
        self.sim_offsets_, self.sim_items_, self.sim_values_ = offsets, dst.astype(np.int32), sim.astype(np.float32)
        log.info("item-kNN: %d items, %d similarity entries", n, len(dst))
        return self

    @classmethod
    def from_arrays(cls, offsets: np.ndarray, items: np.ndarray, values: np.ndarray, popularity: np.ndarray) -> "ItemKNNRanker":
        """Return a fitted ranker rebuilt from its saved CSR similarity (used by saved models)."""
        r = cls()
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
        out = torch.zeros(len(users) * n, dtype=torch.float32)
        out.index_add_(0, torch.from_numpy(flat), torch.from_numpy(vals.astype(np.float32)))
        scores = out.view(len(users), n).numpy()
        scores += self._pop_tiebreak()[None, :]
        return scores


class CategoryTransitionRanker(BaselineRanker):
    """Popular items of the categories that most often follow the user's recent categories.

    ``P(next category = c | history) = sum_j decay**age_j T[c_j, c] / sum_j decay**age_j`` over the last
    ``n_recent`` events, with T the row-normalised training category -> category transition counts
    (add-``smoothing``); an item scores ``P(its category) * its popularity share within the category``.
    """

    def __init__(self, n_recent: int = 5, decay: float = 0.7, smoothing: float = 0.01, name: str = "category-transition") -> None:
        super().__init__()
        if int(n_recent) < 1:
            raise ConfigError(f"n_recent must be at least 1, got {n_recent}.")
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"decay must be in (0, 1], got {decay}.")
        if smoothing < 0:
            raise ConfigError(f"smoothing must be zero or positive, got {smoothing}.")
        self.n_recent, self.decay, self.smoothing = int(n_recent), float(decay), float(smoothing)
        self.name = name
        self.transitions_: np.ndarray | None = None  # float64 (C, C) counts
        self.transition_proba_: np.ndarray | None = None  # float32 (C, C) row-normalised
        self.category_prior_: np.ndarray | None = None  # float32 (C,) share of events per category
        self.within_category_: np.ndarray | None = None  # float32 (n_items,) popularity share within category
        self.item_category_: np.ndarray | None = None

    def fit(self, ds: InteractionDataset, seqs: Sequences) -> "CategoryTransitionRanker":
        """Return self fitted on consecutive category pairs and item popularity in ``seqs``."""
        self._fit_popularity(ds, seqs)
        cat = ds.item_category.astype(np.int64)
        n_cat = max(ds.n_categories, 1)
        self.item_category_ = cat
        self.transitions_ = category_transition_counts(seqs, cat, n_cat)
        t = self.transitions_ + self.smoothing
        row = t.sum(axis=1, keepdims=True)
        self.transition_proba_ = np.where(row > 0, t / np.maximum(row, 1e-12), 1.0 / n_cat).astype(np.float32)
        cat_pop = np.bincount(cat, weights=self.popularity_, minlength=n_cat)
        self.category_prior_ = (cat_pop / max(cat_pop.sum(), 1.0)).astype(np.float32)
        self.within_category_ = (self.popularity_ / np.maximum(cat_pop[cat], 1.0)).astype(np.float32)
        return self

    def category_proba(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, n_categories) next-category probabilities (the prior for empty histories)."""
        self._check_fitted()
        n_cat = self.transition_proba_.shape[0]
        recent = _recent_events(seqs, users, ends, self.n_recent, self.decay)
        valid = (recent.items >= 0) & (recent.items < self.n_items_)
        rows, w = recent.rows[valid], recent.weights[valid]
        cats = self.item_category_[recent.items[valid]]
        # sum_j w_j T[c_j] as a scatter of the few recent rows (a dense (B, C) @ (C, C) would cost B*C^2)
        table = torch.from_numpy(self.transition_proba_)
        wt = torch.from_numpy(w)
        proba = torch.zeros(len(users), n_cat, dtype=torch.float32)
        proba.index_add_(0, torch.from_numpy(rows), table[torch.from_numpy(cats)] * wt[:, None])  # (B, C)
        mass = torch.zeros(len(users), 1, dtype=torch.float32).index_add_(0, torch.from_numpy(rows), wt[:, None])
        proba = proba / mass.clamp_min(1e-12)
        prior = torch.from_numpy(self.category_prior_)[None, :].expand_as(proba)
        return torch.where(mass > 0, proba, prior).numpy()

    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, n_items) = P(item's category next) * popularity share within the category."""
        proba = self.category_proba(seqs, users, ends)
        scores = proba[:, self.item_category_] * self.within_category_[None, :]
        scores += self._pop_tiebreak()[None, :]
        return scores.astype(np.float32, copy=False)


def category_transition_counts(seqs: Sequences, item_category: np.ndarray, n_categories: int) -> np.ndarray:
    """Return float64 (C, C) counts of consecutive (category a -> category b) event pairs within users."""
    if seqs.n_events < 2:
        return np.zeros((n_categories, n_categories), dtype=np.float64)
    user = seqs.user_of_event()
    same = user[1:] == user[:-1]
    cats = np.asarray(item_category, dtype=np.int64)[seqs.items]
    a, b = cats[:-1][same], cats[1:][same]
    return np.bincount(a * n_categories + b, minlength=n_categories * n_categories).reshape(n_categories, n_categories).astype(np.float64)


def default_baselines() -> dict[str, BaselineRanker]:
    """Return fresh, unfitted baselines keyed by name: popularity, item-kNN, category-transition."""
    rankers: list[BaselineRanker] = [PopularityRanker(), ItemKNNRanker(), CategoryTransitionRanker()]
    return {r.name: r for r in rankers}
