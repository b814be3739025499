"""The fusion scorer's inputs: every (history, candidate) pair described by the signals of a cross-category step.

Recommending is retrieval (user state . item vector, plus the validated prior and item-kNN terms) over
the whole catalogue, then a re-rank of the top-N candidates by the fusion scorer (models/fusion.py),
whose output, mapped by ``Calibration`` (models/calibration.py), is the probability a merchandiser
tunes thresholds by. ``candidate_features`` serves both the fit (training/fusion_fit.py) and every
recommend call (serving/recommender.py), so the scorer sees at serving time exactly what it learned on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossrec_core.data.dataset import Sequences

FEATURES = (
    "retrieval",  # the shipped retrieval score (cold users: the cold-start score)
    "retrieval_gap",  # retrieval minus the user's best unseen retrieval score (<= 0)
    "dot",  # the model's own user . item (no prior, no kNN)
    "dot_gap",  # dot minus the best dot among the user's candidates
    "knn",  # log1p of the item-neighbour score (co-occurrence or next-item rules) with the recent history
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
    # appended in session 11 (a scorer saved before reads the columns before it, FusionScorer.n_features)
    "next_rules",  # log1p of the next-item rules' score (what followed the history's last items), 0 without them
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
    keep = np.flatnonzero(ctx.weights)  # the last HISTORY_RECENT events of each row
    if len(keep):
        # index_add_, not np.add.at: the same sums, several times faster (np.add.at was a tenth of recommending)
        part = vectors[ctx.items[keep]].astype(np.float32, copy=False) * ctx.weights[keep, None]
        torch.from_numpy(out).index_add_(0, torch.from_numpy(ctx.rows[keep]), torch.from_numpy(part))
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
    rules: np.ndarray | None = None,
) -> np.ndarray:
    """Return float32 (B, N, N_FEATURES) fusion inputs for candidate item_idx ``cand`` (B, N).

    Args:
        retrieval: (B, N) shipped retrieval score of each candidate (cold rows: the cold-start score);
        best: (B,) the user's best retrieval score over unseen items before any category filter (so an
            item's features do not depend on the filters); dot: (B, N) the model's own user . item;
        knn: (B, N) unweighted item-kNN scores or None; rules: (B, N) next-item rules' scores or None; cold: bool (B,);
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
    if rules is not None:
        f[..., col["next_rules"]] = np.log1p(np.maximum(rules, 0.0))
    prior = model.prior
    f[..., col["log_pop"]] = prior.log_pop[cand]
    item_cat = np.asarray(model.item_category, dtype=np.int64)
    ccat = item_cat[cand]  # (B, N)
    n_cat = prior.transition_proba.shape[0]
    hist_cat = item_cat[ctx.items] if len(ctx.items) else np.zeros(0, np.int64)
    counts = np.bincount(ctx.rows * n_cat + hist_cat, minlength=B * n_cat).reshape(B, n_cat).astype(np.float32)
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
        # up to 64 items per candidate, one product with every title is faster than gathering each row's N titles
        # (a BLAS product against a memory-bound gather and float16 conversion: 10 ms against 86 ms for 256 rows
        # of 116 candidates at 2,000 items, session 18)
        table = unit_text.astype(np.float32) if len(unit_text) <= 64 * max(N, 1) else None
        for s in range(0, B, 256):  # (256, N, 384) floats at a time
            if table is not None:
                f[s : s + 256, :, col["text_sim"]] = np.take_along_axis(tv[s : s + 256] @ table.T, cand[s : s + 256], axis=1)
            else:
                chunk = unit_text[cand[s : s + 256]].astype(np.float32)
                f[s : s + 256, :, col["text_sim"]] = np.einsum("bnd,bd->bn", chunk, tv[s : s + 256])
    f[..., col["cold"]] = cold.astype(np.float32)[:, None]
    f[..., col["log_history"]] = np.log1p(ctx.lengths).astype(np.float32)[:, None]
    f[..., col["log_last_gap"]] = (np.log1p(ctx.last_gap) / 10.0)[:, None]
    return f



def fusion_logits(fusion: nn.Module, features: np.ndarray, device: torch.device, batch: int = 1024) -> np.ndarray:
    """Return float32 (B, N) fusion logits for features (B, N, F)."""
    out = np.zeros(features.shape[:2], dtype=np.float32)
    fusion.eval()
    with torch.no_grad():
        for s in range(0, len(features), batch):
            out[s : s + batch] = fusion(torch.from_numpy(np.ascontiguousarray(features[s : s + batch])).to(device)).float().cpu().numpy()
    return out


