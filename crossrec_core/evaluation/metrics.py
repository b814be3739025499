"""Ranking and beyond-accuracy metrics: pure numpy, vectorised over users.

Conventions shared by every function here:

* ``topk`` is an int array (U, K) of item_idx ranked best first; ``-1`` marks an empty slot (fewer than
  K items could be recommended) and never matches anything.
* ``targets`` is an int array (U,) with the one held-out item per user (leave-last-out); ``-1`` marks a
  target the ranker cannot know (an item outside its vocabulary) and always counts as a miss.
* Histories are given like everywhere else in crossrec as ``(seqs, users, ends)``: the history of
  ``users[i]`` is ``seqs.items[seqs.offsets[users[i]]:ends[i]]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossrec_core.data.dataset import Sequences

RANKING_METRICS = ("HR", "NDCG", "P", "R", "F1", "MRR")


# -- helpers -----------------------------------------------------------------------------------
def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return int64 (U,) 1-based rank of each target within its top-K list, 0 when it is absent."""
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    if topk.ndim != 2 or len(topk) != len(targets):
        raise ValueError(f"topk must be (U, K) and targets (U,), got {topk.shape} and {targets.shape}")
    match = (topk == targets[:, None]) & (targets[:, None] >= 0)
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1) + 1, 0).astype(np.int64)


# -- per-user ranking metrics ------------------------------------------------------------------
def per_user_ranking_metrics(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> dict[str, np.ndarray]:
    """Return per-user float64 arrays {HR, NDCG, P, R, F1, MRR} at K for one held-out target per user.

    With a single relevant item: HR = R = 1 on a hit; P = 1/K; F1 = 2PR/(P+R) = 2/(K+1);
    NDCG = 1/log2(rank+1) (the ideal DCG is 1); MRR = 1/rank. Misses score 0 everywhere.
    """
    topk = np.asarray(topk)
    if k is not None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        topk = topk[:, :k]
    k_eff = int(k if k is not None else topk.shape[1])
    rank = target_ranks(topk, targets)
    hit = (rank > 0).astype(np.float64)
    safe_rank = np.maximum(rank, 1)
    precision = hit / k_eff
    recall = hit
    f1 = np.where(hit > 0, 2.0 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {
        "HR": hit,
        "NDCG": hit / np.log2(safe_rank + 1.0),
        "P": precision,
        "R": recall,
        "F1": f1,
        "MRR": hit / safe_rank,
    }


def mean_ranking_metrics(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> dict[str, float]:
    """Return the mean over users of each per-user ranking metric (NaN for zero users)."""
    per_user = per_user_ranking_metrics(topk, targets, k)
    return {name: (float(v.mean()) if len(v) else float("nan")) for name, v in per_user.items()}


def ndcg_hr(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """Return {"ndcg<k>", "hr<k>", "n"} from 0-based ranks of one target per user (what validation
    uses: ranks over the whole catalogue are cheaper than top-K lists when only the target matters)."""
    if len(ranks) == 0:
        return {f"ndcg{k}": 0.0, f"hr{k}": 0.0, "n": 0}
    hit = ranks < k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {f"ndcg{k}": float(ndcg.mean()), f"hr{k}": float(hit.mean()), "n": int(len(ranks))}


def hit_rate(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Return per-user HR@K (1.0 when the target is in the top K)."""
    return per_user_ranking_metrics(topk, targets, k)["HR"]


def ndcg(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Return per-user NDCG@K = 1/log2(rank+1) for one relevant item."""
    return per_user_ranking_metrics(topk, targets, k)["NDCG"]


def mrr(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Return per-user reciprocal rank (0 beyond K)."""
    return per_user_ranking_metrics(topk, targets, k)["MRR"]


def precision_at_k(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Return per-user Precision@K (hits / K)."""
    return per_user_ranking_metrics(topk, targets, k)["P"]


def recall_at_k(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Return per-user Recall@K (hits / 1 relevant item)."""
    return per_user_ranking_metrics(topk, targets, k)["R"]


def f1_at_k(topk: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Return per-user F1@K, the harmonic mean of Precision@K and Recall@K."""
    return per_user_ranking_metrics(topk, targets, k)["F1"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over the same users, with a paired-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n_users: int
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (the sign of the difference is unlikely to be noise)."""
        return bool(self.low > 0 or self.high < 0)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Return the mean per-user difference ``a - b`` and its percentile bootstrap interval.

    ``a`` and ``b`` hold one value per user for the SAME users (e.g. NDCG@10 of two methods); users are
    resampled with replacement, which keeps each user's pair together. With one held-out item per user
    most values are 0, so small test sets give wide intervals: read a "win" only when ``significant``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D arrays of the same length, got {a.shape} and {b.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(a)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), 0, level)
    diff = a - b
    rng = np.random.default_rng(seed)
    # resample in blocks so memory stays at ~8 MB whatever n_boot is
    means = np.empty(int(n_boot), dtype=np.float64)
    block = max(1, 2**20 // max(n, 1))
    for start in range(0, int(n_boot), block):
        stop = min(int(n_boot), start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return PairedDifference(float(diff.mean()), float(low), float(high), n, level)


# -- probability quality -----------------------------------------------------------------------
def average_ranks(values: np.ndarray) -> np.ndarray:
    """Return float64 1-based ranks of ``values`` ascending, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last element of each tie group
    avg = last - (counts - 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = avg[inverse]
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC AUC of ``scores`` for binary ``labels`` (Mann-Whitney U; ties count one half).

    NaN when only one class is present.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in shape: {labels.shape} vs {scores.shape}")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# -- beyond accuracy ---------------------------------------------------------------------------
def catalogue_coverage(topk: np.ndarray, n_items: int) -> float:
    """Return the share of the ``n_items`` catalogue recommended to at least one user."""
    if n_items <= 0:
        return float("nan")
    rec = np.asarray(topk).ravel()
    rec = rec[rec >= 0]
    return float(len(np.unique(rec)) / n_items)


def category_coverage(topk: np.ndarray, item_category: np.ndarray, n_categories: int | None = None) -> float:
    """Return the share of categories with at least one recommended item."""
    item_category = np.asarray(item_category)
    n_categories = int(n_categories if n_categories is not None else (item_category.max() + 1 if len(item_category) else 0))
    if n_categories <= 0:
        return float("nan")
    rec = np.asarray(topk).ravel()
    rec = rec[rec >= 0]
    return float(len(np.unique(item_category[rec])) / n_categories)


def intra_list_diversity(
    topk: np.ndarray,
    *,
    item_vectors: np.ndarray | None = None,
    item_category: np.ndarray | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Return per-user float64 (U,) intra-list diversity; NaN for lists with fewer than two items.

    With ``item_vectors``: the mean pairwise cosine distance (1 - cosine) over distinct pairs.
    Otherwise with ``item_category``: 1 - the share of distinct pairs in the same category.
    """
    topk = np.asarray(topk)
    if item_vectors is None and item_category is None:
        raise ValueError("intra_list_diversity needs item_vectors or item_category")
    out = np.full(len(topk), np.nan)
    if item_vectors is not None:
        vec = np.asarray(item_vectors, dtype=np.float32)
        norm = np.linalg.norm(vec, axis=1, keepdims=True)
        unit = vec / np.maximum(norm, 1e-12)
    for a in range(0, len(topk), batch_size):
        t = topk[a : a + batch_size]
        valid = t >= 0
        safe = np.where(valid, t, 0)
        pair_ok = valid[:, :, None] & valid[:, None, :]
        kk = t.shape[1]
        pair_ok &= ~np.eye(kk, dtype=bool)[None]
        if item_vectors is not None:
            v = unit[safe]  # (B, K, d)
            dist = 1.0 - np.einsum("bkd,bjd->bkj", v, v)  # (B, K, K)
        else:
            c = np.asarray(item_category)[safe]
            dist = (c[:, :, None] != c[:, None, :]).astype(np.float64)
        n_pairs = pair_ok.sum(axis=(1, 2))
        total = np.where(pair_ok, dist, 0.0).sum(axis=(1, 2))
        out[a : a + batch_size] = np.where(n_pairs > 0, total / np.maximum(n_pairs, 1), np.nan)
    return out


def novelty(topk: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Return per-user float64 (U,) mean self-information -log2(popularity share) of the recommended items.

    The share is an item's count over the total count; items never seen count as seen once (so their
    novelty is finite and the highest). NaN for an empty list.
    """
    topk = np.asarray(topk)
    pop = np.maximum(np.asarray(popularity, dtype=np.float64), 1.0)
    total = float(np.asarray(popularity, dtype=np.float64).sum())
    total = max(total, 1.0)
    info = -np.log2(np.minimum(pop / total, 1.0))
    valid = topk >= 0
    vals = np.where(valid, info[np.where(valid, topk, 0)], 0.0)
    n = valid.sum(axis=1)
    return np.where(n > 0, vals.sum(axis=1) / np.maximum(n, 1), np.nan)


def cross_category_share(
    topk: np.ndarray,
    item_category: np.ndarray,
    seqs: Sequences,
    users: np.ndarray,
    ends: np.ndarray,
) -> np.ndarray:
    """Return per-user float64 (U,) share of recommended items whose category is absent from the history.

    ``topk`` and ``seqs`` must use the same item space as ``item_category``. NaN for an empty list.
    """
    topk = np.asarray(topk)
    item_category = np.asarray(item_category, dtype=np.int64)
    n_cat = int(item_category.max()) + 1 if len(item_category) else 1
    rows, pos = seqs.history_positions(users, ends)
    hist_keys = np.unique(rows * n_cat + item_category[seqs.items[pos]])
    valid = topk >= 0
    rec_cat = item_category[np.where(valid, topk, 0)]
    rec_keys = np.arange(len(topk), dtype=np.int64)[:, None] * n_cat + rec_cat
    novel = ~np.isin(rec_keys, hist_keys) & valid
    n = valid.sum(axis=1)
    return np.where(n > 0, novel.sum(axis=1) / np.maximum(n, 1), np.nan)


# -- calibration -------------------------------------------------------------------------------
CALIBRATION_BINS = 15


def calibration_report(proba: np.ndarray, hit: np.ndarray, n_bins: int = CALIBRATION_BINS) -> dict:
    """Return how well probabilities match outcomes over shown rows (one per recommended item).

    ``proba`` (n,) predicted chance that the item is the user's next one; ``hit`` (n,) whether it was.
    Returns {"ece", "brier", "mean_proba", "positive_rate", "n", "bins"}: ECE is the row-weighted mean
    |mean predicted - observed rate| over ``n_bins`` equal-width bins of [0, 1]; "bins" lists each
    non-empty bin's {"lo", "hi", "n", "mean_proba", "rate"} (the reliability diagram).
    """
    p = np.asarray(proba, dtype=np.float64).ravel()
    y = np.asarray(hit, dtype=np.float64).ravel()
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    if len(p) == 0:
        return {"ece": float("nan"), "brier": float("nan"), "mean_proba": float("nan"), "positive_rate": float("nan"), "n": 0, "bins": []}
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for i in range(n_bins):
        m = b == i
        if not m.any():
            continue
        mp, rate = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(p) * abs(mp - rate)
        bins.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": int(m.sum()), "mean_proba": mp, "rate": rate})
    return {
        "ece": float(ece), "brier": float(np.mean((p - y) ** 2)), "mean_proba": float(p.mean()),
        "positive_rate": float(y.mean()), "n": int(len(p)), "bins": bins,
    }
