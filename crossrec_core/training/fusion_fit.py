"""The fusion scorer's fit on held-out positions: the re-rank and the calibrated probability.

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
2. ``fit_fusion`` trains the scorer -- a residual on the retrieval score that starts at retrieval's own
   order (models/fusion.py) -- on the candidates of the validation users (listwise softmax plus a
   small pointwise BCE, see BCE_WEIGHT; users whose target is not among them count as all-negative,
   which keeps logits absolute; each fit keeps its best epoch on a held-out fifth of its users, epoch
   0 = retrieval's order included), in four folds of users first (measured: with two, half-data
   scorers gave logits on another scale than the final one). Each fold's out-of-fold logits say
   honestly whether the re-rank beats retrieval: NDCG@10 on the held-out fold, with targets in a new
   category weighing TrainConfig.fusion_novel_weight as in the loss, paired bootstrap; it is switched
   off only when that weighted difference is significantly below 0. The all-users and novel-users
   intervals are reported beside it. The same logits are what the probability mapping is fitted on:
   Platt scaling, with a cold-user term, of each candidate's log-softmax over its user's pool
   (``Calibration``).
   The final scorer is then fit on every validation user (as scikit-learn's
   CalibratedClassifierCV(ensemble=False) does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.evaluation.metrics import paired_bootstrap
from crossrec_core.models.calibration import Calibration, log_normaliser
from crossrec_core.models.features import FEATURES, N_FEATURES, fusion_logits
from crossrec_core.models.trained import TrainedModel
from crossrec_core.serving.recommender import Recommender
from crossrec_core.serving.retrieval import BLOCKED_USERS
from crossrec_core.training.progress import Phase

log = logging.getLogger(__name__)

# ~32M score cells per chunk when mining candidates, as recommending does
FUSION_MINING_CELLS = 32_000_000

@dataclass
class FusionData:
    """Candidates of held-out positions: features (U, N, F), labels (U, N), cold (U,), valid (U, N)."""

    features: np.ndarray
    labels: np.ndarray
    cold: np.ndarray
    valid: np.ndarray


def _best_columns(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Return int64 (U, k) each row's ``k`` best valid columns by ``scores``, best first (ties: column order)."""
    return np.argsort(-np.where(valid, scores, -np.inf), axis=1, kind="stable")[:, :k]


def _ndcg10_per_user(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Return float64 (U,) NDCG@10 of each user's candidates ordered by ``scores`` (ties: column order)."""
    order = _best_columns(scores, valid, 10)
    hit = np.take_along_axis(labels & valid, order, axis=1)
    return (hit / np.log2(np.arange(2, hit.shape[1] + 2))[None, :]).sum(axis=1)


# Why both losses: the listwise softmax over a user's candidates is what ranks well (measured: BCE
# alone lost to retrieval on every log, listwise won on demo and hm), and a small pointwise BCE term
# keeps the logits on an absolute scale across users, which is what the probability mapping needs.
BCE_WEIGHT = 0.3
# The probability mapping is fitted on each held-out user's best CALIBRATION_TOP candidates: the rows a
# list shows (K is 10 by default, at most 50 in the studio). Why not all 50: candidates at the bottom
# of the pool (popular items of untouched categories, TrainConfig.fusion_novel_candidates) can sit far
# below the rest, and one logistic curve through them flattens at the top (tests/test_calibration.py
# plants the case). What closed the measured gap (shown probabilities 2-4x below the observed rates on
# test) was the curve's input, each user's log-softmax over the pool (models/calibration.py).
CALIBRATION_TOP = 20
MIN_NOVEL_USERS = 30  # held-out users whose target is in a new category, needed to judge the re-rank on them


def _top_rows(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Return bool (U, N): each row's ``k`` best valid columns by ``scores`` (ties: column order)."""
    top = np.zeros(valid.shape, dtype=bool)
    np.put_along_axis(top, _best_columns(scores, valid, k), True, axis=1)
    return top & valid


def novel_targets(data: FusionData) -> np.ndarray:
    """Return bool (U,): the user's target is among the candidates and in a category new to the user."""
    return (data.labels & (data.features[..., FEATURES.index("cat_new")] > 0.5)).any(axis=1)


def _weighted_ndcg(fusion: nn.Module, data: FusionData, idx: np.ndarray, weights: np.ndarray, device: torch.device) -> float:
    """Return the ``weights``-weighted mean NDCG@10 of users ``idx`` ordered by the scorer's logits."""
    per_user = _ndcg10_per_user(fusion_logits(fusion, data.features[idx], device), data.labels[idx], data.valid[idx])
    return float((per_user * weights[idx]).sum() / max(weights[idx].sum(), 1e-12))


def _train_scorer(
    fusion: nn.Module, data: FusionData, idx: np.ndarray, *, epochs: int, seed: int, device: torch.device, novel_weight: float = 1.0,
    early_stop: bool = False,
) -> int:
    """Fit ``fusion`` (re-initialised from ``seed``) on the candidates of users ``idx``: listwise softmax
    cross-entropy (users whose target is among their candidates; a target in a category new to the
    user weighs ``novel_weight``) + BCE_WEIGHT * pointwise BCE (all). Returns the epochs kept.

    With ``early_stop``, a seeded fifth of ``idx`` is held out and the weights of the epoch with the best
    held-out NDCG@10 (weighted like the loss) are kept -- epoch 0, the residual scorer's starting point
    (retrieval's own order), included. Why: one target per user is little data, and a fixed number of
    epochs let the scorer drift below retrieval on logs where the features add little (bench/RESULTS.md).
    """
    fusion.reset_parameters(seed)
    user_w = np.where(novel_targets(data), float(novel_weight), 1.0).astype(np.float32)
    held = np.zeros(0, dtype=np.int64)
    if early_stop and len(idx) >= 50:
        perm = np.random.default_rng(seed).permutation(len(idx))
        n_held = len(idx) // 5
        held, idx = np.sort(idx[perm[:n_held]]), np.sort(idx[perm[n_held:]])
    X = torch.from_numpy(data.features[idx]).to(device)
    Y = torch.from_numpy(data.labels[idx].astype(np.float32)).to(device)
    M = torch.from_numpy(data.valid[idx].astype(np.float32)).to(device)
    W = torch.from_numpy(user_w[idx]).to(device)
    fusion.set_normalisation(data.features[idx][data.valid[idx]])
    opt = torch.optim.Adam(fusion.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    bs = 256
    best_epoch, best_score, best_state = 0, -np.inf, None
    if len(held):
        best_score = _weighted_ndcg(fusion, data, held, user_w, device)
        best_state = {k: v.detach().clone() for k, v in fusion.state_dict().items()}
    for epoch in range(1, epochs + 1):
        fusion.train()
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
        if len(held):
            score = _weighted_ndcg(fusion, data, held, user_w, device)
            if score > best_score:
                best_epoch, best_score = epoch, score
                best_state = {k: v.detach().clone() for k, v in fusion.state_dict().items()}
    if best_state is not None:
        fusion.load_state_dict(best_state)
    else:
        best_epoch = epochs
    fusion.eval()
    return best_epoch



def retrieval_scale(features: np.ndarray, valid: np.ndarray) -> float:
    """Return the spread of the retrieval score within a user's candidates (pooled standard deviation around
    each user's mean), at least 1: what the scorer's residual base is divided by.

    Why: the residual logit is retrieval + corrections on standardised features, so a correction of a few
    units can reorder candidates only when retrieval's own spread is of that order. The validated blends
    can stretch it a hundredfold (an item-kNN weight of 1000 makes retrieval the neighbour score with the
    model as tie-break), and then the scorer could move nothing without huge weights: on chain-a with
    next-item rules one fusion seed in three drifted to huge logits and lost 0.06 NDCG@10 on test while
    its probabilities doubled (bench/RESULTS.md, session 11). Dividing by the spread keeps retrieval's
    order (the residual's starting point) and puts it on the scale the corrections work in."""
    r = features[..., FEATURES.index("retrieval")].astype(np.float64)
    m = valid.astype(bool)
    n = np.maximum(m.sum(axis=1, keepdims=True), 1)
    mean = np.where(m, r, 0.0).sum(axis=1, keepdims=True) / n
    dev = np.where(m, r - mean, 0.0)
    sd = float(np.sqrt((dev**2).sum() / max(int(m.sum()), 1)))
    return max(sd, 1.0) if np.isfinite(sd) else 1.0


def keep_rerank(fusion_ndcg: np.ndarray, retrieval_ndcg: np.ndarray, novel: np.ndarray, novel_weight: float, seed: int) -> bool:
    """Return whether the re-rank stays on, from held-out users' NDCG@10 under it and under retrieval.

    The switch judges the scorer by what it was fitted for: NDCG@10 with targets in a new category
    weighing ``novel_weight`` (the loss's and the early stopping's weighting). Off only when that
    weighted difference is significantly below 0 (95 % paired bootstrap). Before session 7 it was off
    when either the all-users or the novel-users difference was, and so it switched off exactly where
    the scorer traded a little of everyone's NDCG for a significant novel-category gain (bench/RESULTS.md).
    """
    w = np.where(novel, float(novel_weight), 1.0)
    w = w / w.mean()
    return not paired_bootstrap(fusion_ndcg * w, retrieval_ndcg * w, seed=seed).high < 0


def fit_fusion(
    fusion: nn.Module, data: FusionData, *, epochs: int, seed: int, device: torch.device, n_folds: int = 4, novel_weight: float = 1.0
) -> dict:
    """Fit ``fusion`` on held-out candidates; return {"calibration", "rerank", "ndcg10_retrieval", "ndcg10_fusion", ...}.

    The re-rank is kept ("rerank": True) when its out-of-fold NDCG@10 is at least retrieval's on the same
    users; either way the probability mapping is fitted on out-of-fold logits.
    """
    U = len(data.labels)
    residual = float(fusion.base_weight) != 0.0  # models saved before the residual scorer have no base
    scale = retrieval_scale(data.features, data.valid) if residual else None
    if residual:
        fusion.base_weight.fill_(1.0 / scale)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(U) % n_folds
    oof = np.zeros(data.labels.shape, dtype=np.float32)
    kept = []
    for k in range(n_folds):
        train_idx, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        kept.append(_train_scorer(fusion, data, train_idx, epochs=epochs, seed=seed + k, device=device, novel_weight=novel_weight, early_stop=True))
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
    rerank = keep_rerank(fus_users, ret_users, novel, novel_weight, seed)
    # the probability follows what orders the list: the scorer's logit, or retrieval's score when the
    # re-rank is off (so `score` always falls down a list)
    relevance = oof if rerank else retrieval
    # on each user's log-softmax over the pool, not the raw logit (models/calibration.py says why)
    norm = log_normaliser(relevance, data.valid)
    shown = _top_rows(relevance, data.valid, CALIBRATION_TOP)
    cold = np.broadcast_to(data.cold[:, None], data.labels.shape)[shown]
    calib = Calibration.fit((relevance - norm[:, None])[shown], data.labels[shown], cold, basis="log_softmax")
    # the final scorer: every user, for the mean number of epochs the folds kept (as cross-validated
    # early stopping does); 0 = retrieval's own order, the residual's starting point
    final_epochs = int(round(float(np.mean(kept))))
    _train_scorer(fusion, data, np.arange(U), epochs=final_epochs, seed=seed + n_folds, device=device, novel_weight=novel_weight)
    p = calib.apply(relevance, data.cold, norm)
    y = data.labels[shown]
    log.info("fusion: out-of-fold NDCG@10 %.4f (retrieval %.4f, base 1/%.3g) on %d held-out users; re-rank %s",
             nd_fus, nd_ret, scale or 1.0, U, "on" if rerank else "off")
    return {
        "calibration": calib,
        "rerank": bool(rerank),
        "ndcg10_retrieval": nd_ret,
        "ndcg10_fusion": nd_fus,
        "ndcg10_difference_interval": [diff.low, diff.high],
        "novel_users": int(novel.sum()),
        "ndcg10_novel_difference_interval": None if diff_novel is None else [diff_novel.low, diff_novel.high],
        "n_users": int(U),
        "epochs": final_epochs,
        "retrieval_scale": scale,
        "fold_epochs": [int(e) for e in kept],
        "oof_brier": float(np.mean((p[shown] - y) ** 2)),
        "oof_mean_proba": float(p[shown].mean()),
        "oof_positive_rate": float(y.mean()),
    }


def fit_on_validation(model: TrainedModel, ds: InteractionDataset, users: np.ndarray, ends: np.ndarray, report) -> dict:
    """Fit the fusion scorer and its probability mapping on the validation targets (``fit_fusion`` above).

    The candidates are exactly what recommending retrieves for those histories (Recommender.candidates),
    so the scorer learns on the list it will re-rank. Returns the figures for the model's metrics.
    """
    tc = model.config.train
    if tc.fusion_epochs == 0 or len(users) == 0:
        return {"fusion_rerank": False}
    if len(users) > tc.fusion_max_positions:
        keep = np.sort(np.random.default_rng(tc.seed + 17).choice(len(users), tc.fusion_max_positions, replace=False))
        users, ends = users[keep], ends[keep]
    rec = Recommender(model)
    n = min(tc.fusion_candidates, model.n_items)
    feats = np.zeros((len(users), n, N_FEATURES), dtype=np.float32)
    labels = np.zeros((len(users), n), dtype=bool)
    valid = np.zeros((len(users), n), dtype=bool)
    cold = np.zeros(len(users), dtype=bool)
    targets = ds.seqs.items[ends].astype(np.int64)
    # chunks as recommending takes them: a large catalogue's blocked retrieval holds a chunk's best items only;
    # otherwise ~32M score cells per chunk (a chunk costs a pass over the item table)
    bsz = BLOCKED_USERS if model.n_items >= rec.compact_min_items else max(1, min(4096, FUSION_MINING_CELLS // max(model.n_items, 1)))
    for s in range(0, len(users), bsz):
        report(epoch=0, n_epochs=tc.fusion_epochs, step=s, n_steps=len(users), loss=None, phase=Phase.FUSION_CANDIDATES)
        sc = rec.candidates(ds.seqs, users[s : s + bsz], ends[s : s + bsz], n)
        feats[s : s + bsz] = sc.features
        labels[s : s + bsz] = sc.cand == targets[s : s + bsz, None]
        valid[s : s + bsz] = sc.valid
        cold[s : s + bsz] = sc.cold
    report(epoch=0, n_epochs=tc.fusion_epochs, step=0, n_steps=1, loss=None, phase=Phase.FUSION)
    fit = fit_fusion(
        model.net.fusion, FusionData(feats, labels, cold, valid), epochs=tc.fusion_epochs, seed=tc.seed, device=model.device,
        novel_weight=tc.fusion_novel_weight,
    )
    model.calibration = fit["calibration"]
    model.fusion_rerank = fit["rerank"]
    report(epoch=tc.fusion_epochs, n_epochs=tc.fusion_epochs, step=1, n_steps=1, loss=None, phase=Phase.FUSION)
    for p in model.net.parameters():
        p.grad = None
    return {
        "fusion_rerank": fit["rerank"],
        "ndcg10_fusion_oof": fit["ndcg10_fusion"],
        "ndcg10_retrieval_oof": fit["ndcg10_retrieval"],
        "fusion_users": fit["n_users"],
        "fusion_epochs_kept": fit["epochs"],
        "fusion_retrieval_scale": fit["retrieval_scale"],
        "fusion_novel_users": fit["novel_users"],
        "ndcg10_fusion_minus_retrieval_interval": fit["ndcg10_difference_interval"],
        "ndcg10_novel_fusion_minus_retrieval_interval": fit["ndcg10_novel_difference_interval"],
        "calibration": fit["calibration"].to_dict(),
        "oof_brier": fit["oof_brier"],
        "oof_mean_proba": fit["oof_mean_proba"],
        "oof_positive_rate": fit["oof_positive_rate"],
    }
