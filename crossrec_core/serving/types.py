"""The public value types of recommending: options, one recommendation, a list, and what a model must offer.

Kept apart from crossrec_core.serving.recommender (the pipeline) so pages and the CLI can name them cheaply;
crossrec_core.serving.recommender re-exports every one of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import Sequences
from crossrec_core.errors import ConfigError
from crossrec_core.serving.explain import Explanation


class RecommendableModel(Protocol):
    """What the recommender needs from a model (crossrec_core.models.trained.TrainedModel has it all)."""

    item_ids: np.ndarray
    item_titles: np.ndarray
    category_names: np.ndarray
    item_category: np.ndarray
    event_names: np.ndarray
    popularity: np.ndarray
    category_transitions: np.ndarray

    def item_index(self, ids) -> np.ndarray: ...
    def event_index(self, names) -> np.ndarray: ...
    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray: ...
    def item_vectors(self) -> np.ndarray: ...
    def fusion_proba(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RecommendOptions:
    """Filters and re-ranking knobs shared by the single-user and batch paths (validated)."""

    k: int = 10
    cross_category_only: bool = False  # keep only categories absent from the history
    exclude_categories: tuple[str, ...] = ()
    include_categories: tuple[str, ...] | None = None  # None = every category
    threshold: float | None = None  # drop items whose fusion probability is below this
    diversity: float = 0.0  # 0 = pure relevance, 1 = as different from each other as possible (MMR)
    per_category_cap: int | None = None  # at most this many items per category
    # re-ranked by the fusion scorer. None = the depth the model's fusion scorer was trained on
    # (config.train.fusion_candidates): deeper candidates are items it never learned to score, and
    # each extra candidate costs one MLP pass per user. 200 when the model does not say.
    n_candidates: int | None = None

    @classmethod
    def merged(cls, options: "RecommendOptions | None" = None, **fields: Any) -> "RecommendOptions":
        """Return ``options`` (default: the defaults) with the given fields replaced (None = keep), validated.

        Unknown names raise ConfigError naming the valid ones, so a typo never silently does nothing.
        """
        base = options if options is not None else cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(f"Unknown recommendation option(s) {', '.join(unknown)}; the options are {', '.join(sorted(known))}.")
        # k=None means "not given"; for the other fields None is a value (no threshold, every category)
        changes = {name: v for name, v in fields.items() if not (name == "k" and v is None)}
        if "exclude_categories" in changes:
            changes["exclude_categories"] = tuple(changes["exclude_categories"] or ())
        return dataclasses.replace(base, **changes) if changes else base

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ConfigError(f"K (number of recommendations) must be a whole number of at least 1, got {self.k!r}.")
        if self.threshold is not None and not (0.0 <= float(self.threshold) <= 1.0):
            raise ConfigError(f"The probability threshold must be between 0 and 1, got {self.threshold}.")
        if not (0.0 <= float(self.diversity) <= 1.0):
            raise ConfigError(f"Diversity must be between 0 (pure relevance) and 1, got {self.diversity}.")
        if self.per_category_cap is not None and int(self.per_category_cap) < 1:
            raise ConfigError(f"The per-category cap must be at least 1, got {self.per_category_cap}.")
        if self.n_candidates is not None and int(self.n_candidates) < 1:
            raise ConfigError(f"The candidate pool must hold at least 1 item, got {self.n_candidates}.")
        object.__setattr__(self, "exclude_categories", tuple(str(c) for c in self.exclude_categories))
        if self.include_categories is not None:
            object.__setattr__(self, "include_categories", tuple(str(c) for c in self.include_categories))


@dataclass(frozen=True)
class Recommendation:
    """One recommended item (row of a RecommendationList)."""

    rank: int
    item_idx: int  # index in the model's catalogue
    item_id: str
    title: str
    category: str
    score: float  # retrieval score: dot product of user state and item vector
    probability: float  # fusion probability, used for ranking and the threshold
    explanation: Explanation


@dataclass(frozen=True)
class RecommendationList:
    """The recommendations for one history, best first, plus what happened to the history."""

    items: tuple[Recommendation, ...]
    user_id: str | None = None
    history_item_ids: tuple[str, ...] = ()  # the history as used (items known to the model)
    unknown_item_ids: tuple[str, ...] = ()  # history ids the model does not know (ignored)
    cold_start: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]

    def to_frame(self) -> pd.DataFrame:
        """Return one row per recommendation: rank, item_id, title, category, score, probability,
        explanation (plain text), because (ids of the contributing history items, ';'-joined)."""
        return pd.DataFrame(
            {
                "rank": pd.Series([r.rank for r in self.items], dtype=np.int64),
                "item_id": pd.Series([r.item_id for r in self.items], dtype=object),
                "title": pd.Series([r.title for r in self.items], dtype=object),
                "category": pd.Series([r.category for r in self.items], dtype=object),
                "score": pd.Series([r.score for r in self.items], dtype=np.float32),
                "probability": pd.Series([r.probability for r in self.items], dtype=np.float32),
                "explanation": pd.Series([r.explanation.sentence for r in self.items], dtype=object),
                "because": pd.Series([";".join(r.explanation.because_item_ids) for r in self.items], dtype=object),
            }
        )
