"""The log-prior blended into retrieval: item popularity plus the category flow from the user's last events.

final score = dot(user, item) + w_pop * log P(item) + w_cat * (log P(cat(item) | history) - log P(cat(item)))

P(category | history) is the flow from the last events' categories, mixed with the last two categories and
the shopper's habit where validation says so (models/category_history.py). With w_pop = w_cat = 1 and the
flow alone this is the log of the category-transition baseline (popular items of the categories that
follow the user's recent ones); with w_cat = 0 it adds popularity only. The weights are chosen on
validation NDCG@10 after training (0, 0 = off) and stored in the network (``CrossRecNet.prior_weights``).

The prior is folded into the vectors themselves (extra columns on both sides), so ``user_vectors @
item_vectors.T`` -- the path every caller uses -- already includes it. Item columns are scaled down by
``PRIOR_EPS`` (user columns up by 1 / PRIOR_EPS): the product is unchanged while item vectors used for
maps and diversity stay dominated by the learned part. Many categories are hashed into at most
``PRIOR_MAX_BUCKETS`` buckets to bound the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossrec_core.data.dataset import Sequences
from crossrec_core.models.category_history import CategoryHistory, category_parts, chunks, mix_parts

PRIOR_EPS = 0.02
PRIOR_MAX_BUCKETS = 256
PRIOR_RECENT = 5  # the last events that vote for the next category
PRIOR_DECAY = 0.7  # weight of an event = decay ** its age (0 = most recent)
PRIOR_SMOOTHING = 0.01  # added to every transition count
POP_SMOOTHING = 0.1  # added to every item count (cold items are not -inf)


@dataclass(frozen=True)
class ItemPrior:
    """Per-item and per-bucket tables of the prior (all numpy, built once per model)."""

    log_pop: np.ndarray  # float32 (n_items,) log popularity share
    bucket: np.ndarray  # int64 (n_items,) category bucket of each item
    n_buckets: int
    transition_proba: np.ndarray  # float32 (C, C) row-normalised category -> category
    category_prior: np.ndarray  # float32 (C,) share of events per category
    category_bucket: np.ndarray  # int64 (C,)
    log_bucket_prior: np.ndarray  # float32 (n_buckets,)


def category_flow(transitions: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Return float64 (C, C) P(next category | category): transition counts + ``smoothing``, row-normalised.

    Rows without any count (and no smoothing) stay 0. The one estimate of the category flow: the
    retrieval prior uses it smoothed, the cold-shopper fallback (serving/recommender.py) raw.
    """
    t = np.asarray(transitions, dtype=np.float64) + smoothing
    rows = t.sum(axis=1, keepdims=True)
    return np.divide(t, rows, out=np.zeros_like(t), where=rows > 0)


def category_mass(item_category: np.ndarray, item_weights: np.ndarray, n_categories: int) -> np.ndarray:
    """Return float64 (C,) the sum of ``item_weights`` over each category's items (a category's weight)."""
    return np.bincount(np.asarray(item_category, dtype=np.int64), weights=np.asarray(item_weights, dtype=np.float64), minlength=n_categories)


def build_item_prior(popularity: np.ndarray, item_category: np.ndarray, category_transitions: np.ndarray) -> ItemPrior:
    """Return the ItemPrior tables from training counts (popularity (n_items,), transitions (C, C))."""
    pop = np.asarray(popularity, dtype=np.float64) + POP_SMOOTHING
    cat = np.asarray(item_category, dtype=np.int64)
    trans = np.asarray(category_transitions, dtype=np.float64)
    n_cat = max(trans.shape[0], int(cat.max(initial=-1)) + 1, 1)
    if trans.shape[0] < n_cat:
        trans = np.pad(trans, ((0, n_cat - trans.shape[0]), (0, n_cat - trans.shape[0])))
    t = category_flow(trans, PRIOR_SMOOTHING)
    cat_pop = category_mass(cat, pop, n_cat)
    cat_prior = cat_pop / max(cat_pop.sum(), 1e-12)
    n_buckets = min(n_cat, PRIOR_MAX_BUCKETS)
    cat_bucket = np.arange(n_cat, dtype=np.int64) % n_buckets
    bucket_prior = np.bincount(cat_bucket, weights=cat_prior, minlength=n_buckets)
    return ItemPrior(
        log_pop=np.log(pop / pop.sum()).astype(np.float32),
        bucket=cat_bucket[cat] if len(cat) else np.zeros(0, dtype=np.int64),
        n_buckets=int(n_buckets),
        transition_proba=t.astype(np.float32),
        category_prior=cat_prior.astype(np.float32),
        category_bucket=cat_bucket,
        log_bucket_prior=np.log(np.maximum(bucket_prior, 1e-12)).astype(np.float32),
    )


def recent_flow(prior: ItemPrior, item_category: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (float64 (B, C) P(next category | last events), bool (B,) has history); rows without history are 0.

    P(next category | history) = sum_j decay**age_j T[c_j] / sum_j decay**age_j over the last PRIOR_RECENT
    events (the category-transition baseline's rule).
    """
    users = np.asarray(users, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    B = len(users)
    C = prior.transition_proba.shape[0]
    proba = np.zeros((B, C), dtype=np.float64)
    if B == 0 or seqs.n_events == 0:
        return proba, np.zeros(B, dtype=bool)
    starts = seqs.offsets[users]
    age = np.arange(PRIOR_RECENT, dtype=np.int64)
    pos = ends[:, None] - 1 - age[None, :]  # (B, R)
    valid = pos >= starts[:, None]
    items = seqs.items[np.clip(pos, 0, seqs.n_events - 1)].astype(np.int64)
    n_items = len(item_category)
    valid &= (items >= 0) & (items < n_items)
    cats = np.asarray(item_category, dtype=np.int64)[np.clip(items, 0, max(n_items - 1, 0))]
    w = np.where(valid, PRIOR_DECAY ** age[None, :], 0.0).astype(np.float32)  # (B, R)
    mass = w.sum(axis=1)
    has = mass > 0
    if has.any():
        proba[has] = np.einsum("br,brc->bc", w[has], prior.transition_proba[cats[has]]) / mass[has, None]
    return proba, has


def category_lift(
    prior: ItemPrior, item_category: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray,
    history: CategoryHistory | None = None,
) -> np.ndarray:
    """Return float32 (B, n_buckets) log P(bucket | history) - log P(bucket); 0 for empty histories.

    P(next category | history) is the recent flow (``recent_flow``), or with ``history`` its mixture with
    the last-two and habit estimates (models/category_history.py).
    """
    users = np.asarray(users, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    out = np.zeros((len(users), prior.n_buckets), dtype=np.float32)
    proba, has = recent_flow(prior, item_category, seqs, users, ends)
    if not has.any():
        return out
    if history is not None and not history.recent_only:
        rows = np.flatnonzero(has)
        for part in chunks(len(rows)):
            r = rows[part]
            parts = category_parts(history, proba[r], prior.transition_proba.astype(np.float64), item_category, seqs, users[r], ends[r])
            proba[r] = mix_parts(history, parts)
    proba = proba[has]
    if prior.n_buckets < proba.shape[1]:
        binned = np.zeros((proba.shape[0], prior.n_buckets), dtype=np.float64)
        np.add.at(binned.T, prior.category_bucket, proba.T)
        proba = binned
    out[has] = np.log(np.maximum(proba, 1e-12)) - prior.log_bucket_prior[None, :]
    return out


def learned_category_lift(prior: ItemPrior, log_proba: np.ndarray) -> np.ndarray:
    """Return float32 (B, n_buckets) log P(bucket | history) - log P(bucket) from a next-category head's
    log-probabilities (B, C) (categories past the prior's table, if any, are ignored)."""
    C = len(prior.category_bucket)
    proba = np.exp(np.asarray(log_proba, dtype=np.float64))[:, :C]
    if proba.shape[1] < C:
        proba = np.pad(proba, ((0, 0), (0, C - proba.shape[1])))
    if prior.n_buckets < C:
        binned = np.zeros((proba.shape[0], prior.n_buckets))
        np.add.at(binned.T, prior.category_bucket, proba.T)
        proba = binned
    return (np.log(np.maximum(proba, 1e-12)) - prior.log_bucket_prior[None, :]).astype(np.float32)


def item_prior_columns(prior: ItemPrior, weights: tuple[float, float]) -> np.ndarray:
    """Return float32 (n_items, P) extra item columns for the active prior weights (P = 0 when off)."""
    w_pop, w_cat = weights
    cols = []
    if w_pop != 0:
        cols.append(PRIOR_EPS * prior.log_pop[:, None])
    if w_cat != 0:
        onehot = np.zeros((len(prior.bucket), prior.n_buckets), dtype=np.float32)
        onehot[np.arange(len(prior.bucket)), prior.bucket] = PRIOR_EPS
        cols.append(onehot)
    if not cols:
        return np.zeros((len(prior.bucket), 0), dtype=np.float32)
    return np.concatenate(cols, axis=1).astype(np.float32)


def user_prior_columns(lift: np.ndarray | None, n_users: int, weights: tuple[float, float]) -> np.ndarray:
    """Return float32 (B, P) extra user columns matching item_prior_columns (lift: (B, n_buckets) or None)."""
    w_pop, w_cat = weights
    cols = []
    if w_pop != 0:
        cols.append(np.full((n_users, 1), w_pop / PRIOR_EPS, dtype=np.float32))
    if w_cat != 0:
        assert lift is not None and lift.shape[0] == n_users
        cols.append((w_cat / PRIOR_EPS) * lift)
    if not cols:
        return np.zeros((n_users, 0), dtype=np.float32)
    return np.concatenate(cols, axis=1).astype(np.float32)
