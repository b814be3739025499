"""The fusion scorer's inputs and its fit on held-out positions: the re-rank and the calibrated probability.

Recommending is retrieval (user state . item vector, plus the validated prior and item-kNN terms) over
the whole catalogue, then a re-rank of the top-N candidates by the fusion scorer, whose output becomes
the probability a merchandiser tunes thresholds by. Both steps must be fitted on positions the
retrieval model did NOT learn from, or the scorer learns how well retrieval fits its own training
events (over-confident: a 0.93 that came true 4 % of the time, issue 14).

So the scorer is fit on the validation targets (each user's second-to-last event; the retrieval model,
the item-kNN table and the priors are fitted on the events before it):

1. ``candidate_features`` describes every (history, candidate) pair with the signals that matter for a
   cross-category step (FEATURES below): the retrieval score and its gap to the user's best item, the
   model's own dot product, item-kNN, popularity, category transition and flow, whether the category is
   new to the user, content and text similarity to the history, and the user's history length, last
   time gap and cold-start flag. The same function serves training and every recommend call.
2. ``fit_fusion`` trains the MLP on the candidates of the validation users (listwise softmax plus a
   small pointwise BCE, see BCE_WEIGHT; users whose target is not among them count as all-negative,
   which keeps logits absolute), in four folds of users first (measured: with two, half-data scorers gave logits on another scale than the final one and the probabilities came out 2-3x too low on hm): each fold's out-of-fold logits say
   honestly whether the re-rank beats retrieval (NDCG@10 on the held-out fold, paired bootstrap, on all
   users and on those whose target is in a new category: it is switched off only when it loses on
   either, significantly; targets in a new category weigh TrainConfig.fusion_novel_weight) and are
   what the probability mapping is fitted on (Platt scaling with a cold-user term, ``Calibration``).
   The final scorer is then fit on every validation user (as scikit-learn's
   CalibratedClassifierCV(ensemble=False) does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossrec_core.data.dataset import Sequences
from crossrec_core.evaluation.metrics import paired_bootstrap

log = logging.getLogger(__name__)

FEATURES = (
    "retrieval",  # the shipped retrieval score (cold users: the cold-start score)
    "retrieval_gap",  # retrieval minus the user's best unseen retrieval score (<= 0)
    "dot",  # the model's own user . item (no prior, no kNN)
    "dot_gap",  # dot minus the best dot among the user's candidates
    "knn",  # log1p of the item-kNN co-occurrence score with the recent history
    "log_pop",  # log popularity share of the item in the training events
    "cat_transition",  # log P(category | last item's category)
    "cat_flow",  # log-lift of the category given the last events (decayed), models/prior.py
    "cat_new",  # 1 when the item's category is absent from the history
    "cat_is_last",  # 1 when it is the last item's category
    "cat_share",  # share of the history's events in the item's category
    "content_sim",  # cosine of the item vector with the recency-weighted history vector
    "text_sim",  # cosine of the title embedding with the history's mean title embedding (0 without text)
    "cold",  # 1 for cold users (<= COLD_MAX_EVENTS known events)
    "log_history",  # log1p(history length)
    "log_last_gap",  # log1p(seconds between the last two events) / 10
)
N_FEATURES = len(FEATURES)
HISTORY_RECENT = 20  # the last events that make the history vectors
HISTORY_DECAY = 0.8


@dataclass
class HistoryContext:
    """Per-chunk history facts the features need, computed once per chunk of users."""

    rows: np.ndarray  # int64 (H,) row of each history event (within the chunk)
    items: np.ndarray  # int64 (H,) item_idx of each history event
    weights: np.ndarray  # float32 (H,) recency weight of each event (decay ** age, last HISTORY_RECENT only)
    lengths: np.ndarray  # int64 (B,)
    last_gap: np.ndarray  # float32 (B,) seconds between the last two events (0 when < 2 events)


def history_context(seqs: Sequences, users: np.ndarray, ends: np.ndarray, rows: np.ndarray, items: np.ndarray) -> HistoryContext:
    """Return the HistoryContext of a chunk: ``rows`` / ``items`` are its history events, oldest first per row."""
    B = len(users)
    lengths = np.bincount(rows, minlength=B).astype(np.int64)
    first = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(lengths, out=first[1:])
    age = (first[rows + 1] - 1 - np.arange(len(rows))) if len(rows) else np.zeros(0, np.int64)
    w = np.where(age < HISTORY_RECENT, HISTORY_DECAY ** np.minimum(age, HISTORY_RECENT), 0.0).astype(np.float32)
    ends = np.asarray(ends, dtype=np.int64)
    starts = seqs.offsets[np.asarray(users, dtype=np.int64)]
    gap = np.zeros(B, dtype=np.float32)
    two = (ends - starts) >= 2
    if two.any() and seqs.n_events:
        t1 = seqs.times[ends[two] - 1].astype(np.float64)
        t0 = seqs.times[ends[two] - 2].astype(np.float64)
        gap[two] = np.maximum(t1 - t0, 0.0)
    return HistoryContext(rows, items, w, lengths, gap)


def _row_normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-8)


def _history_vector(ctx: HistoryContext, vectors: np.ndarray, B: int) -> np.ndarray:
    """Return float32 (B, d): the recency-weighted sum of the history items' unit vectors (unit length)."""
    out = np.zeros((B, vectors.shape[1]), dtype=np.float32)
    if len(ctx.rows):
        np.add.at(out, ctx.rows, vectors[ctx.items].astype(np.float32) * ctx.weights[:, None])
    return _row_normalised(out)


def candidate_features(
    model,
    ctx: HistoryContext,
    cand: np.ndarray,
    retrieval: np.ndarray,
    best: np.ndarray,
    dot: np.ndarray,
    knn: np.ndarray | None,
    cold: np.ndarray,
    cat_lift: np.ndarray,
    unit_vecs: np.ndarray,
    unit_text: np.ndarray | None,
) -> np.ndarray:
    """Return float32 (B, N, N_FEATURES) fusion inputs for candidate item_idx ``cand`` (B, N).

    Args:
        retrieval: (B, N) shipped retrieval score of each candidate (cold rows: the cold-start score);
        best: (B,) the user's best retrieval score over unseen items before any category filter (so an
            item's features do not depend on the filters); dot: (B, N) the model's own user . item;
        knn: (B, N) unweighted item-kNN scores or None; cold: bool (B,);
        cat_lift: (B, n_buckets) model.category_lift of the histories;
        unit_vecs: (n_items, d) unit item vectors; unit_text: (n_items, t) unit title embeddings or None.
    """
    B, N = cand.shape
    f = np.zeros((B, N, N_FEATURES), dtype=np.float32)
    rows = np.arange(B)[:, None]
    col = {name: i for i, name in enumerate(FEATURES)}
    best = np.where(np.isfinite(best), best, 0.0).astype(np.float64)[:, None]
    r = np.where(np.isfinite(retrieval), retrieval, best - 50.0)
    f[..., col["retrieval"]] = r
    f[..., col["retrieval_gap"]] = r - best
    f[..., col["dot"]] = dot
    f[..., col["dot_gap"]] = dot - dot.max(axis=1, keepdims=True) if N else dot
    if knn is not None:
        f[..., col["knn"]] = np.log1p(np.maximum(knn, 0.0))
    prior = model.prior
    f[..., col["log_pop"]] = prior.log_pop[cand]
    item_cat = np.asarray(model.item_category, dtype=np.int64)
    ccat = item_cat[cand]  # (B, N)
    n_cat = prior.transition_proba.shape[0]
    hist_cat = item_cat[ctx.items] if len(ctx.items) else np.zeros(0, np.int64)
    counts = np.zeros((B, n_cat), dtype=np.float32)
    if len(ctx.rows):
        np.add.at(counts, (ctx.rows, hist_cat), 1.0)
    share = counts / np.maximum(ctx.lengths[:, None], 1)
    has_hist = ctx.lengths > 0
    last_pos = np.clip(np.cumsum(ctx.lengths) - 1, 0, max(len(hist_cat) - 1, 0))
    last_cat = np.where(has_hist, hist_cat[last_pos] if len(hist_cat) else 0, -1)
    trans = np.log(np.maximum(prior.transition_proba, 1e-12))
    f[..., col["cat_transition"]] = np.where(
        has_hist[:, None], trans[np.maximum(last_cat, 0)[:, None], ccat], np.log(np.maximum(prior.category_prior[ccat], 1e-12))
    )
    f[..., col["cat_flow"]] = cat_lift[rows, prior.bucket[cand]]
    f[..., col["cat_new"]] = (counts[rows, ccat] == 0).astype(np.float32)
    f[..., col["cat_is_last"]] = (ccat == last_cat[:, None]).astype(np.float32)
    f[..., col["cat_share"]] = share[rows, ccat]
    hv = _history_vector(ctx, unit_vecs, B)
    f[..., col["content_sim"]] = np.einsum("bnd,bd->bn", unit_vecs[cand], hv)
    if unit_text is not None:
        tv = _history_vector(ctx, unit_text, B)
        for s in range(0, B, 256):  # (256, N, 384) floats at a time
            chunk = unit_text[cand[s : s + 256]].astype(np.float32)
            f[s : s + 256, :, col["text_sim"]] = np.einsum("bnd,bd->bn", chunk, tv[s : s + 256])
    f[..., col["cold"]] = cold.astype(np.float32)[:, None]
    f[..., col["log_history"]] = np.log1p(ctx.lengths).astype(np.float32)[:, None]
    f[..., col["log_last_gap"]] = (np.log1p(ctx.last_gap) / 10.0)[:, None]
    return f


# -- the probability mapping -------------------------------------------------------------------
MIN_SLOPE = 1e-3  # the smallest slope the mapping may have (it is increasing by construction)


@dataclass(frozen=True)
class Calibration:
    """Platt scaling with a cold-user term: P = sigmoid(a * logit + b + c * cold + e * cold * logit).

    Fitted on out-of-fold logits of held-out positions (never on positions the scorer learned from).
    """

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    e: float = 0.0

    def apply(self, logits: np.ndarray, cold: np.ndarray) -> np.ndarray:
        """Return float32 probabilities for ``logits`` (B, N) of users with cold flags (B,)."""
        cold = np.asarray(cold, dtype=np.float64)[:, None]
        z = self.a * logits.astype(np.float64) + self.b + cold * (self.c + self.e * logits.astype(np.float64))
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "e": self.e}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{k: float(d[k]) for k in ("a", "b", "c", "e")})

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, cold: np.ndarray, ridge: float = 1.0) -> "Calibration":
        """Return the logistic fit of labels on (logit, 1, cold, cold * logit), increasing in the logit.

        Newton steps on the standardised logit (float64, a small ridge); a slope that comes out <= 0
        (a scorer no better than chance on few held-out users) is fixed at a small positive value and
        the rest refitted, so the probability never falls as the logit rises.
        """
        x = np.asarray(logits, dtype=np.float64).ravel()
        y = np.asarray(labels, dtype=np.float64).ravel()
        c = np.asarray(cold, dtype=np.float64).ravel()
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if len(y) else 1e-6
        mu, sd = (float(x.mean()), float(x.std())) if len(x) else (0.0, 1.0)
        sd = sd if sd > 1e-12 else 1.0
        if y.sum() == 0 or y.sum() == len(y):
            return cls(MIN_SLOPE, float(np.log(rate / (1 - rate))) - MIN_SLOPE * mu, 0.0, 0.0)
        xs = (x - mu) / sd
        use_cold = 0 < c.sum() < len(c) and y[c > 0].sum() > 0
        X = np.stack([xs, np.ones_like(xs), c, c * xs], axis=1) if use_cold else np.stack([xs, np.ones_like(xs)], axis=1)
        w = np.zeros(X.shape[1])
        w[1] = float(np.log(rate / (1 - rate)))
        fixed = np.zeros(X.shape[1], dtype=bool)
        min_std_slope = MIN_SLOPE * sd
        for _ in range(3):  # refit with a slope fixed when one comes out non-increasing
            w = _newton(X, y, w, fixed, ridge)
            if w[0] < min_std_slope and not fixed[0]:
                w[0], fixed[0] = min_std_slope, True
                if use_cold:
                    w[3], fixed[3] = 0.0, True
                continue
            if use_cold and w[0] + w[3] < min_std_slope and not fixed[3]:
                w[3], fixed[3] = min_std_slope - w[0], True
                continue
            break
        a_s, b_s, c_s, e_s = (w[0], w[1], w[2], w[3]) if use_cold else (w[0], w[1], 0.0, 0.0)
        # back to the raw logit: a_s * (x - mu) / sd + b_s
        return cls(float(a_s / sd), float(b_s - a_s * mu / sd), float(c_s - e_s * mu / sd), float(e_s / sd))


def _newton(X: np.ndarray, y: np.ndarray, w: np.ndarray, fixed: np.ndarray, ridge: float) -> np.ndarray:
    """Return logistic-regression weights from ``w`` by damped Newton steps on the free columns."""
    w = w.copy()
    free = ~fixed
    for _ in range(100):
        z = np.clip(X @ w, -60, 60)
        p = 1.0 / (1.0 + np.exp(-z))
        g = X[:, free].T @ (p - y) + ridge * w[free]
        H = (X[:, free] * (p * (1 - p))[:, None]).T @ X[:, free] + ridge * np.eye(int(free.sum()))
        step = np.linalg.solve(H, g)
        step *= min(1.0, 5.0 / max(np.abs(step).max(), 1e-12))  # damped: no overshoot on separable data
        w[free] -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


# -- fitting the scorer ---------------------------------------------------------------------------
@dataclass
class FusionData:
    """Candidates of held-out positions: features (U, N, F), labels (U, N), cold (U,), valid (U, N)."""

    features: np.ndarray
    labels: np.ndarray
    cold: np.ndarray
    valid: np.ndarray


def _ndcg10_per_user(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Return float64 (U,) NDCG@10 of each user's candidates ordered by ``scores`` (ties: column order)."""
    key = np.where(valid, scores, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :10]
    hit = np.take_along_axis(labels & valid, order, axis=1)
    return (hit / np.log2(np.arange(2, hit.shape[1] + 2))[None, :]).sum(axis=1)


# Why both losses: the listwise softmax over a user's candidates is what ranks well (measured: BCE
# alone lost to retrieval on every log, listwise won on demo and hm), and a small pointwise BCE term
# keeps the logits on an absolute scale across users, which is what the probability mapping needs.
BCE_WEIGHT = 0.3
MIN_NOVEL_USERS = 30  # held-out users whose target is in a new category, needed to judge the re-rank on them


def novel_targets(data: FusionData) -> np.ndarray:
    """Return bool (U,): the user's target is among the candidates and in a category new to the user."""
    return (data.labels & (data.features[..., FEATURES.index("cat_new")] > 0.5)).any(axis=1)


def _train_scorer(
    fusion: nn.Module, data: FusionData, idx: np.ndarray, *, epochs: int, seed: int, device: torch.device, novel_weight: float = 1.0
) -> None:
    """Fit ``fusion`` (re-initialised from ``seed``) on the candidates of users ``idx``: listwise softmax
    cross-entropy (users whose target is among their candidates; a target in a category new to the
    user weighs ``novel_weight``) + BCE_WEIGHT * pointwise BCE (all)."""
    fusion.reset_parameters(seed)
    X = torch.from_numpy(data.features[idx]).to(device)
    Y = torch.from_numpy(data.labels[idx].astype(np.float32)).to(device)
    M = torch.from_numpy(data.valid[idx].astype(np.float32)).to(device)
    W = torch.from_numpy(np.where(novel_targets(data)[idx], float(novel_weight), 1.0).astype(np.float32)).to(device)
    fusion.set_normalisation(data.features[idx][data.valid[idx]])
    opt = torch.optim.Adam(fusion.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    bs = 256
    fusion.train()
    for _ in range(epochs):
        perm = torch.randperm(len(idx), generator=gen)
        for s in range(0, len(idx), bs):
            b = perm[s : s + bs].to(device)
            logits, y, m, w = fusion(X[b]), Y[b], M[b], W[b]
            bce = (nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * m).sum() / m.sum().clamp(min=1.0)
            has = (y * m).sum(dim=1) > 0
            per_user = -(torch.log_softmax(logits.masked_fill(m == 0, -1e9), dim=1) * y).sum(dim=1)
            listwise = (per_user * w)[has].sum() / w[has].sum() if has.any() else bce * 0.0
            loss = listwise + BCE_WEIGHT * bce
            opt.zero_grad()
            loss.backward()
            opt.step()
    fusion.eval()


def fusion_logits(fusion: nn.Module, features: np.ndarray, device: torch.device, batch: int = 1024) -> np.ndarray:
    """Return float32 (B, N) fusion logits for features (B, N, F)."""
    out = np.zeros(features.shape[:2], dtype=np.float32)
    fusion.eval()
    with torch.no_grad():
        for s in range(0, len(features), batch):
            out[s : s + batch] = fusion(torch.from_numpy(np.ascontiguousarray(features[s : s + batch])).to(device)).float().cpu().numpy()
    return out


def fit_fusion(
    fusion: nn.Module, data: FusionData, *, epochs: int, seed: int, device: torch.device, n_folds: int = 4, novel_weight: float = 1.0
) -> dict:
    """Fit ``fusion`` on held-out candidates; return {"calibration", "rerank", "ndcg10_retrieval", "ndcg10_fusion", ...}.

    The re-rank is kept ("rerank": True) when its out-of-fold NDCG@10 is at least retrieval's on the same
    users; either way the probability mapping is fitted on out-of-fold logits.
    """
    U = len(data.labels)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(U) % n_folds
    oof = np.zeros(data.labels.shape, dtype=np.float32)
    for k in range(n_folds):
        train_idx, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        _train_scorer(fusion, data, train_idx, epochs=epochs, seed=seed + k, device=device, novel_weight=novel_weight)
        oof[held] = fusion_logits(fusion, data.features[held], device)
    retrieval = data.features[..., FEATURES.index("retrieval")]
    ret_users = _ndcg10_per_user(retrieval, data.labels, data.valid)
    fus_users = _ndcg10_per_user(oof, data.labels, data.valid)
    nd_ret, nd_fus = float(ret_users.mean()), float(fus_users.mean())
    # The re-rank is the design, so it stays on unless held-out users say it hurts: off only when the
    # 95% paired-bootstrap interval of (fusion - retrieval) NDCG@10 lies entirely below 0.
    diff = paired_bootstrap(fus_users, ret_users, seed=seed)
    novel = novel_targets(data)
    # too few novel held-out hits say nothing (taobao has 1, hm 4): the novel check needs MIN_NOVEL_USERS
    diff_novel = paired_bootstrap(fus_users[novel], ret_users[novel], seed=seed) if novel.sum() >= MIN_NOVEL_USERS else None
    # ... on all held-out users, or on those whose target is in a new category (what crossrec is for)
    rerank = not (diff.high < 0 or (diff_novel is not None and diff_novel.high < 0))
    # the probability follows what orders the list: the scorer's logit, or retrieval's score when the
    # re-rank is off (so `score` always falls down a list)
    relevance = oof if rerank else retrieval
    cold = np.broadcast_to(data.cold[:, None], data.labels.shape)[data.valid]
    calib = Calibration.fit(relevance[data.valid], data.labels[data.valid], cold)
    _train_scorer(fusion, data, np.arange(U), epochs=epochs, seed=seed + n_folds, device=device, novel_weight=novel_weight)
    p = calib.apply(relevance, data.cold)
    y = data.labels[data.valid]
    log.info("fusion: out-of-fold NDCG@10 %.4f (retrieval %.4f) on %d held-out users; re-rank %s", nd_fus, nd_ret, U, "on" if rerank else "off")
    return {
        "calibration": calib,
        "rerank": bool(rerank),
        "ndcg10_retrieval": nd_ret,
        "ndcg10_fusion": nd_fus,
        "ndcg10_difference_interval": [diff.low, diff.high],
        "novel_users": int(novel.sum()),
        "ndcg10_novel_difference_interval": None if diff_novel is None else [diff_novel.low, diff_novel.high],
        "n_users": int(U),
        "oof_brier": float(np.mean((p[data.valid] - y) ** 2)),
        "oof_mean_proba": float(p[data.valid].mean()),
        "oof_positive_rate": float(y.mean()),
    }
