"""Category affinity (observed in the log vs learned by the model) and planted-journey recall.

* ``observed_affinity``: P(next event's category = B | current event's category = A) from the log.
* ``learned_affinity``: for histories ending in category A, the mean share of the model's softmax
  probability mass (over the whole catalogue) that falls on category B.
* ``journey_recall``: on the demo store, whether what-if histories built from a planted journey's first
  step(s) get the next step's products in the model's top-K.

Both affinity frames are square (rows = from-category A, columns = to-category B); a row sums to 1, or is
all NaN when there is no data for A (no transitions out of A / no sampled user whose history ends in A).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.errors import ConfigError, DataError
from crossrec_core.evaluation.evaluator import is_model_like, rank_all, ranker_space
from crossrec_core.serving.scoring import Ranker

JOURNEY_COLUMNS = ("journey_id", "name", "step", "category", "product", "item_ids")


def _normalise_rows(counts: np.ndarray, exclude_self: bool) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64).copy()
    if exclude_self:
        np.fill_diagonal(counts, 0.0)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1.0), np.nan)


def _top_categories(ds: InteractionDataset, top: int | None) -> np.ndarray | None:
    """Return the names of the ``top`` categories with the most events (None = keep all)."""
    if top is None:
        return None
    if int(top) < 1:
        raise ConfigError(f"top must be at least 1, got {top}.")
    counts = np.bincount(ds.item_category[ds.seqs.items], minlength=ds.n_categories)
    order = np.lexsort((np.arange(ds.n_categories), -counts))[: int(top)]
    return np.asarray(ds.category_names, dtype=object)[np.sort(order)]


def _restrict(frame: pd.DataFrame, names: np.ndarray | None, exclude_self: bool) -> pd.DataFrame:
    """Keep only ``names`` (rows and columns) and renormalise the rows over the kept columns."""
    if names is None:
        return frame
    keep = [n for n in names if n in frame.index]
    sub = frame.loc[keep, keep].to_numpy(dtype=np.float64)
    return pd.DataFrame(_normalise_rows(np.nan_to_num(sub), exclude_self), index=pd.Index(keep, name=frame.index.name),
                        columns=pd.Index(keep, name=frame.columns.name))


def observed_affinity(ds: InteractionDataset, top: int | None = None, *, exclude_self: bool = False) -> pd.DataFrame:
    """Return the category x category next-event transition probabilities observed in ``ds``.

    Args:
        top: keep only the ``top`` categories with the most events (rows renormalised over them).
        exclude_self: ignore A -> A transitions (shows where shoppers go *next*, across categories).
    """
    counts = ds.seqs.category_transitions(ds.item_category, max(ds.n_categories, 1))
    names = pd.Index(np.asarray(ds.category_names, dtype=object))
    frame = pd.DataFrame(_normalise_rows(counts, exclude_self), index=names.rename("from_category"),
                         columns=names.rename("to_category"))
    return _restrict(frame, _top_categories(ds, top), exclude_self)


def _softmax_category_mass(scores: np.ndarray, item_category: np.ndarray, n_categories: int) -> np.ndarray:
    """Return float64 (B, C): softmax(scores) over items summed per category."""
    s = torch.from_numpy(np.asarray(scores, dtype=np.float64))
    p = torch.softmax(s, dim=1)  # (B, n_items)
    mass = torch.zeros(len(s), n_categories, dtype=torch.float64)
    mass.index_add_(1, torch.from_numpy(np.asarray(item_category, dtype=np.int64)), p)
    return mass.numpy()


def learned_affinity(
    model: Ranker,
    ds: InteractionDataset,
    *,
    max_users: int = 2000,
    top: int | None = None,
    exclude_self: bool = False,
    seed: int = 0,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Return the mean probability mass the model gives to category B after histories ending in category A.

    Every sampled user's whole history (in the model's item space) is scored; scores are turned into a
    softmax over the catalogue and summed per category; rows average over the users whose last item is in
    A. Categories are the model's own (for a TrainedModel) or the dataset's (for a baseline).
    """
    if int(max_users) < 1:
        raise ConfigError(f"max_users must be at least 1, got {max_users}.")
    lengths = ds.seqs.lengths
    users = np.flatnonzero(lengths > 0)
    if len(users) == 0:
        raise DataError(f"Dataset '{ds.name}' has no events, so there is no affinity to learn.")
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=int(max_users), replace=False))
    ends = ds.seqs.offsets[users + 1]
    space = ranker_space(model, ds, users, ends, np.zeros(len(users), dtype=np.int64))
    has_hist = space.ends > space.seqs.offsets[users]
    users, m_ends = users[has_hist], space.ends[has_hist]
    n_cat = len(space.category_names)
    last_cat = space.item_category[space.seqs.items[m_ends - 1]]
    sums = np.zeros((n_cat, n_cat), dtype=np.float64)
    n_rows = np.bincount(last_cat, minlength=n_cat)
    for a in range(0, len(users), batch_size):
        scores = model.score_histories(space.seqs, users[a : a + batch_size], m_ends[a : a + batch_size])
        mass = _softmax_category_mass(scores, space.item_category, n_cat)
        np.add.at(sums, last_cat[a : a + batch_size], mass)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_rows[:, None] > 0, sums / np.maximum(n_rows[:, None], 1), np.nan)
    if exclude_self:
        mean = _normalise_rows(np.nan_to_num(mean), True)
        mean[n_rows == 0] = np.nan
    names = pd.Index(np.asarray(space.category_names, dtype=object))
    frame = pd.DataFrame(mean, index=names.rename("from_category"), columns=names.rename("to_category"))
    frame = _restrict(frame, _top_categories(ds, top), exclude_self)
    return frame


# -- planted journeys ----------------------------------------------------------------------------
@dataclass(frozen=True)
class JourneyReport:
    """How many planted journey steps the model recovers.

    ``steps``: one row per (journey, transition): journey_id, name, from_step, to_product, to_category,
    n_probes, hit_product (share of probe histories whose top-K holds a next-step product), hit_category
    (share whose top-K holds any item of the next step's category), recovered (hit_product >= 0.5).
    ``journeys``: one row per journey: journey_id, name, recovered, total.
    """

    steps: pd.DataFrame
    journeys: pd.DataFrame
    k: int

    @property
    def recovered(self) -> int:
        return int(self.journeys["recovered"].sum())

    @property
    def total(self) -> int:
        return int(self.journeys["total"].sum())

    def summary(self) -> str:
        """Return one line such as "11 of 16 planted journey steps recovered in the top 10"."""
        return f"{self.recovered} of {self.total} planted journey steps recovered in the top {self.k}"

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "recovered": self.recovered,
            "total": self.total,
            "journeys": self.journeys.to_dict(orient="records"),
            "steps": self.steps.to_dict(orient="records"),
        }


def _check_journeys(journeys: pd.DataFrame) -> None:
    missing = [c for c in JOURNEY_COLUMNS if c not in journeys.columns]
    if missing:
        raise DataError(
            f"The journeys table lacks column(s) {', '.join(missing)}. Expected {', '.join(JOURNEY_COLUMNS)} "
            "(as returned by build_demo_dataset)."
        )


def journey_recall(
    model: Ranker,
    ds: InteractionDataset,
    journeys_df: pd.DataFrame,
    k: int = 10,
    *,
    n_probes: int = 5,
    probe_event: str = "purchase",
) -> JourneyReport:
    """Return a JourneyReport: does the model's top-K after a journey's first step(s) hold the next step?

    For each journey and each transition step s -> s+1, ``n_probes`` what-if histories are built from the
    most popular products of the earlier steps (probe j takes the j-th most popular product of every step up
    to s, in step order, each as a ``probe_event``); history items are excluded from the top-K.
    """
    _check_journeys(journeys_df)
    if int(k) < 1 or int(n_probes) < 1:
        raise ConfigError(f"k and n_probes must be at least 1, got {k} and {n_probes}.")
    k, n_probes = int(k), int(n_probes)
    model_like = is_model_like(model)
    space = ranker_space(model, ds, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    to_ranker = (np.asarray(model.item_index(ds.item_ids), dtype=np.int64) if model_like
                 else np.arange(ds.n_items, dtype=np.int64))
    pop = np.bincount(ds.seqs.items, minlength=ds.n_items)
    cat_lookup = {str(n): i for i, n in enumerate(space.category_names)}
    if model_like and callable(getattr(model, "event_index", None)):
        ev = int(np.asarray(model.event_index([probe_event]))[0])
    else:
        hit = ds.event_index([probe_event])[0]
        ev = int(hit) if hit >= 0 else 0

    def step_items(ids) -> np.ndarray:
        """Return ranker item_idx of a step's products, known ones only, most popular first."""
        d = ds.item_index(list(ids))
        d = d[d >= 0]
        d = d[np.lexsort((d, -pop[d]))]
        r = to_ranker[d]
        return r[r >= 0]

    probe_items: list[np.ndarray] = []
    meta: list[tuple] = []
    next_sets: list[np.ndarray] = []
    next_cats: list[int] = []
    for jid, group in journeys_df.sort_values(["journey_id", "step"]).groupby("journey_id", sort=True):
        steps = [step_items(ids) for ids in group["item_ids"]]
        for s in range(1, len(steps)):
            to_row = group.iloc[s]
            pools = steps[:s]
            n = min([n_probes] + [len(p) for p in pools])
            meta.append((int(jid), str(to_row["name"]), int(group.iloc[s - 1]["step"]), str(to_row["product"]),
                         str(to_row["category"]), n))
            next_sets.append(steps[s])
            next_cats.append(cat_lookup.get(str(to_row["category"]), -1))
            for j in range(n):
                probe_items.append(np.array([p[j] for p in pools], dtype=np.int64))
    lengths = np.array([len(p) for p in probe_items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(probe_items) if probe_items else np.zeros(0, dtype=np.int64)
    seqs = Sequences(offsets, flat.astype(np.int32), np.arange(len(flat), dtype=np.int64) * 3600,
                     np.full(len(flat), ev, dtype=np.int16))
    probe_users = np.arange(len(probe_items), dtype=np.int64)
    probe_space = type(space)(seqs, offsets[1:], np.full(len(probe_users), -1), space.to_ds, space.item_category,
                              space.category_names)
    top = rank_all(model, probe_space, probe_users, k) if len(probe_users) else np.zeros((0, k), dtype=np.int64)
    rows = []
    start = 0
    for (jid, name, from_step, product, category, n), nxt, ncat in zip(meta, next_sets, next_cats):
        t = top[start : start + n]
        start += n
        valid = t >= 0
        hit_p = (np.isin(t, nxt) & valid).any(axis=1)
        hit_c = ((space.item_category[np.maximum(t, 0)] == ncat) & valid).any(axis=1)
        share_p = float(hit_p.mean()) if n else 0.0
        rows.append((jid, name, from_step, product, category, n, share_p, float(hit_c.mean()) if n else 0.0, n > 0 and share_p >= 0.5))
    steps_df = pd.DataFrame(rows, columns=["journey_id", "name", "from_step", "to_product", "to_category", "n_probes",
                                           "hit_product", "hit_category", "recovered"])
    journeys = steps_df.groupby(["journey_id", "name"], sort=True).agg(
        recovered=("recovered", "sum"), total=("recovered", "size")
    ).reset_index()
    journeys["recovered"] = journeys["recovered"].astype(np.int64)
    return JourneyReport(steps=steps_df, journeys=journeys, k=k)
