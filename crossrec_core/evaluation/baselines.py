"""Baseline rankers: popularity, item-kNN and next-item rules (models/item_knn.py), and category transitions.

Each implements ``serving.scoring.Ranker`` and learns only from the sequences given to ``fit`` (the training part
of a split), so evaluating them with leave-last-out never leaks the held-out targets. Everything is
vectorised numpy / torch; item-kNN keeps a pruned sparse (CSR) similarity so it runs on catalogues of
tens of thousands of items without a dense n_items x n_items matrix.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.errors import ConfigError
from crossrec_core.models.item_knn import BaselineRanker, ItemKNNRanker, _recent_events

log = logging.getLogger(__name__)


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
        self.transitions_ = seqs.category_transitions(cat, n_cat)
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


def default_baselines() -> dict[str, BaselineRanker]:
    """Return fresh, unfitted baselines keyed by name: popularity, item-kNN (bought together), next-item rules
    (bought next) and category-transition."""
    rankers: list[BaselineRanker] = [PopularityRanker(), ItemKNNRanker(), ItemKNNRanker.next_items(), CategoryTransitionRanker()]
    return {r.name: r for r in rankers}
