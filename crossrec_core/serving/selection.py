"""Cutting a list from scored candidates: deterministic tie-breaking, top-N, and the greedy MMR /
per-category-cap selection every recommend path uses."""

from __future__ import annotations

import numpy as np
import torch

from crossrec_core.serving.types import RecommendOptions

# Scores closer than this are one tie (float noise of batch vs single matrix products is ~1e-6), and a
# tie is broken by the smaller item index: single, batch, page, CLI and evaluator cut lists identically.
TIE_RESOLUTION = 2.0**-12
# stable_top_n reads this many scores past the n-th from torch.topk, to see where a tie bucket ends
TOP_MARGIN = 16


def tie_keys(scores: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
    """Return float64 keys ordering ``scores`` (B, M) high to low, equal-within-TIE_RESOLUTION scores by
    item index (``item_idx`` (B, M), default the column); -inf stays -inf."""
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[1] if item_idx is None else max(int(item_idx.max(initial=0)) + 1, 1)
    idx = np.broadcast_to(np.arange(s.shape[1]), s.shape) if item_idx is None else item_idx
    with np.errstate(invalid="ignore"):
        q = np.round(s / TIE_RESOLUTION)
    return np.where(np.isfinite(s), q - idx / (2.0 * n), -np.inf)


def stable_top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Return int64 (B, n) columns of each row's n best scores, best first, ties by the smaller column.

    float32 rows take ``torch.topk`` of the raw scores with a margin of TOP_MARGIN columns, then order
    that short list by tie_keys: exact whenever the n-th kept score's tie bucket lies strictly above the
    margin's last score (every score outside the list is in a lower bucket); the other rows (a tie bucket
    crossing the margin, NaN or +inf among the best) take the float64 tie keys of the whole row."""
    scores = np.asarray(scores)
    B, M = scores.shape
    n = min(int(n), M)
    k = min(M, n + TOP_MARGIN)
    if n <= 0 or B == 0 or scores.dtype != np.float32 or k >= M:
        return _exact_top_n(scores, n)
    vals_t, idx_t = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), k, dim=1, sorted=False)
    vals, idx = vals_t.numpy(), idx_t.numpy().astype(np.int64)
    keys = tie_keys(vals, idx)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :n]
    top = np.take_along_axis(idx, order, axis=1)
    with np.errstate(invalid="ignore"):
        q_last = np.round(np.take_along_axis(vals, order[:, -1:], axis=1)[:, 0].astype(np.float64) / TIE_RESOLUTION)
        low = vals.min(axis=1).astype(np.float64)
        q_low = np.round(low / TIE_RESOLUTION)
    ok = (low == -np.inf) | (q_last > q_low)
    ok &= ~(np.isnan(vals) | (vals == np.inf)).any(axis=1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        top[bad] = _exact_top_n(scores[bad], n)
    return top


def _exact_top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """stable_top_n by the float64 tie keys of whole rows (the reference the fast path must equal)."""
    keys = torch.from_numpy(tie_keys(scores))
    return torch.topk(keys, min(n, scores.shape[1]), dim=1, sorted=True).indices.numpy().astype(np.int64)


def greedy_select(
    cand: np.ndarray, rel: np.ndarray, valid: np.ndarray, opts: RecommendOptions, item_category: np.ndarray, unit_vecs: np.ndarray
) -> np.ndarray:
    """Return int64 (B, k) chosen positions into the candidate axis (-1 when none is left).

    Each step takes, for every user at once, the candidate maximising
    (1 - diversity) * relevance - diversity * max cosine to the items already chosen (MMR), among
    those still valid (threshold, per-category cap). With diversity 0 and no cap this is a stable
    sort by relevance, ties (tie_keys) by the smaller item index. NumPy, not torch: these are many small ops, and
    torch's thread pool spins badly on them when the CPU is shared (20x slower measured)."""
    B, N = cand.shape
    k = min(opts.k, N)
    lam = float(opts.diversity)
    chosen = np.full((B, opts.k), -1, dtype=np.int64)
    if lam == 0.0 and opts.per_category_cap is None:
        key = tie_keys(np.where(valid, rel, -np.inf), cand)
        order = np.argsort(-key, axis=1, kind="stable")[:, :k]  # (B, k)
        ok = np.isfinite(np.take_along_axis(key, order, axis=1))
        chosen[:, :k] = np.where(ok, order, -1)
        return chosen
    valid = valid.copy()
    rows = np.arange(B)
    base = ((1.0 - lam) + 1e-6) * rel.astype(np.float32)  # tiny relevance term breaks MMR ties
    max_sim = np.full((B, N), -np.inf, dtype=np.float32) if lam > 0 else None
    cand_vecs = unit_vecs[cand] if lam > 0 else None  # (B, N, d)
    cand_cat = item_category[cand] if opts.per_category_cap is not None else None
    cat_count = np.zeros((B, N), dtype=np.int32) if cand_cat is not None else None
    for step in range(k):  # k steps, each vectorised over users and candidates
        key = base if max_sim is None or step == 0 else base - lam * max_sim
        key = np.where(valid, key, -np.inf)
        j = np.argmax(key, axis=1)
        ok = np.isfinite(key[rows, j])
        if not ok.any():
            break
        chosen[:, step] = np.where(ok, j, -1)
        valid[rows[ok], j[ok]] = False
        if cat_count is not None:
            same = cand_cat == cand_cat[rows, j][:, None]  # (B, N)
            cat_count += same & ok[:, None]
            valid &= cat_count < int(opts.per_category_cap)
        if cand_vecs is not None:
            sim = np.matmul(cand_vecs, cand_vecs[rows, j][:, :, None])[:, :, 0]  # (B, N)
            max_sim = np.where(ok[:, None], np.maximum(max_sim, sim), max_sim)
    return chosen
