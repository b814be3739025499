"""The interface every ranker implements: the neural model and the baselines alike.

Histories are given as a ``Sequences`` (in the ranker's own item index space) plus, per requested user,
the exclusive end position of the history. This lets the evaluator ask "score user u as of event e"
for leave-last-out without copying sequences, and lets the what-if API score any hand-made history
(a one-user Sequences).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from crossrec_core.data.dataset import Sequences


@runtime_checkable
class Ranker(Protocol):
    """Scores every catalogue item for a batch of histories (higher = more likely next)."""

    name: str

    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (len(users), n_items) scores for the histories seqs[offsets[u]:end]."""
        ...


@runtime_checkable
class ProbabilisticRanker(Ranker, Protocol):
    """A ranker with a calibrated-ish probability for (history, candidate) pairs: the fusion scorer."""

    def fusion_proba(
        self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Return float32 (len(users), C) probabilities for candidate item_idx (len(users), C)."""
        ...

    def item_vectors(self) -> np.ndarray:
        """Return float32 (n_items, d) item vectors used by retrieval (for maps, MMR, explanations)."""
        ...

    def user_vectors(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (len(users), d) user states (dot with item_vectors gives retrieval scores)."""
        ...


def one_user_sequences(items: np.ndarray, events: np.ndarray | None = None, times: np.ndarray | None = None) -> Sequences:
    """Return a one-user Sequences for a hand-made history (what-if)."""
    items = np.asarray(items, dtype=np.int32)
    n = len(items)
    return Sequences(
        offsets=np.array([0, n], dtype=np.int64),
        items=items,
        times=np.arange(n, dtype=np.int64) if times is None else np.asarray(times, dtype=np.int64),
        events=np.zeros(n, dtype=np.int16) if events is None else np.asarray(events, dtype=np.int16),
    )
