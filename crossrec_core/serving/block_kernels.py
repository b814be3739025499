"""The blocked walk's compiled kernels (serving/blocked.py) and the bound of its bfloat16 product.

``_collect`` keeps each row's best scores of a block; ``cold_block`` scores a block for cold shoppers, only the
chunks whose bound reaches the row's threshold (``cold_floor`` starts it). Where the
walk multiplies in bfloat16 (``blocked.walk_in_bf16``), a cell's bfloat16 score is within a bound of its float32 one
that ``bf16_error_terms`` / ``bf16_item_terms`` and BF16_REL give per row and per item; ``_collect`` scores again in
float32 every cell whose bound reaches the threshold, so the kept scores and lists are those of a float32 walk.
"""

from __future__ import annotations

import numpy as np
import torch

from crossrec_core.kernels import compiled_kernel

# How far a bfloat16 product can be from the float32 one. With l~, w~ the inputs rounded to bfloat16, the product
# sums exact bf16 x bf16 terms in float32 (D terms: at most D 2^-24 |l~| |w~| off) and rounds the result r to
# bfloat16 (at most 2^-8/(1 - 2^-8) |r| off); l~ . w~ - l . w = (l~ - l) . w~ + l . (w~ - w) (Cauchy-Schwarz on
# each); the float32 re-score is at most D 2^-24 |l| |w| off. So per cell:
#   |bf16 - float32| <= BF16_REL |r| + |l~ - l| |w~| + |l| (|w~ - w| + 2 D 2^-24 |w~|),  each term x BF16_SAFETY.
BF16_SAFETY = 1.25
BF16_REL = BF16_SAFETY * 2.0**-8 / (1 - 2.0**-8)


def bf16_error_terms(left: np.ndarray) -> np.ndarray:
    """Return float32 (n, 2): each row's |l~ - l| and |l| (x BF16_SAFETY), its terms of the bfloat16 bound."""
    x = left.astype(np.float64)
    low = torch.from_numpy(left).to(torch.bfloat16).double().numpy()
    return (BF16_SAFETY * np.stack([np.linalg.norm(low - x, axis=1), np.linalg.norm(x, axis=1)], axis=1)).astype(np.float32)


def bf16_item_terms(warm: np.ndarray) -> np.ndarray:
    """Return float32 (n, 2): each row w's |w~| and |w~ - w| + 2 D 2^-24 |w~| (w~: w in bfloat16), the item
    terms of the bfloat16 product's error bound (BF16_REL)."""
    x = warm.astype(np.float64)
    low = torch.from_numpy(warm).to(torch.bfloat16).double().numpy()
    n_low = np.linalg.norm(low, axis=1)
    return np.stack([n_low, np.linalg.norm(low - x, axis=1) + 2 * warm.shape[1] * 2.0**-24 * n_low], axis=1).astype(np.float32)


# A cosine of unit vectors is at most 1; the chunk bound of ``cold_block`` takes this (float32 rounding of a 66-term
# product is ~1e-5 at most; the slack is 30 times that, and only makes the bound looser).
COLD_SIM_MAX = np.float32(1.0 + 2.0**-10)
# Categories per cold row whose most popular items start its threshold (``cold_floor``).
FLOOR_CATEGORIES = 32


def cold_block(ev_vecs, ev_start, ev_own, ev_bucket, unit_t, s, bucket, own, flow, cat, pop, w_flow, w_pop, w_sim, theta,
               force) -> tuple[np.ndarray, np.ndarray]:
    """Return (vals, cmax): float32 (rows, block) the cold score of a block of positions ``s:s+len(cat)`` and
    (rows, chunks of 64) each chunk's largest. A cell's score: w_flow * flow[row, cat] + w_pop * pop, plus w_sim *
    the best cosine to one of the row's items (0 at least): the events' dense columns (ev_vecs) times the item
    columns (unit_t, (D, n_items) by position) plus the one-hot overlap of same-bucket items.

    A chunk whose bound (flow and popularity at their largest in it, the cosine at 1) is under the row's ``theta``
    cannot enter the row's lists: its cmax is -inf and its cells are left unwritten (its product never computed),
    unless ``force`` (rows, chunks) asks for it (the novel-category window reads its values). Other chunks are
    scored exactly."""
    nb = len(cat)
    vals = np.empty((len(ev_start) - 1, nb), np.float32)
    cmax = np.empty((len(ev_start) - 1, (nb + 63) // 64), np.float32)
    compiled_kernel(_cold_block)(np.ascontiguousarray(ev_vecs), ev_start, ev_own, ev_bucket, unit_t, s, bucket, own, flow, cat,
                                 pop, w_flow, w_pop, w_sim, theta, force, vals, cmax)
    return vals, cmax


def _cold_block(ev_vecs, ev_start, ev_own, ev_bucket, unit_t, s, bucket, own, flow, cat, pop, w_flow, w_pop, w_sim, theta,
                force, out, cmax):  # pragma: no cover - numba
    """``cold_block`` into ``out``: per row and chunk of 64 cells, the bound, then (if it may pass) the cells'
    products with the position innermost (loops the compiler vectorises; each cell sums its columns in order)."""
    n_rows, nb = out.shape
    D = ev_vecs.shape[1]
    n_chunks = (nb + 63) // 64
    # per chunk: its category runs (run_cat[run_lo[k]:run_hi[k]]) with each run's largest popularity
    run_lo, run_hi = np.zeros(n_chunks, np.int64), np.zeros(n_chunks, np.int64)
    run_cat, run_pop = np.empty(nb, np.int64), np.empty(nb, np.float32)
    n_runs = 0
    for j in range(nb):
        k = j // 64
        if j % 64 == 0 or cat[j] != cat[j - 1]:
            run_cat[n_runs] = cat[j]
            run_pop[n_runs] = pop[j]
            n_runs += 1
            if j % 64 == 0:
                run_lo[k] = n_runs - 1
        run_pop[n_runs - 1] = max(run_pop[n_runs - 1], pop[j])
        run_hi[k] = n_runs
    acc = np.empty(64, np.float32)
    sim = np.empty(64, np.float32)
    for r in range(n_rows):
        for k in range(n_chunks):
            j0, j1 = k * 64, min(nb, k * 64 + 64)
            top = np.float32(-np.inf)
            for q in range(run_lo[k], run_hi[k]):
                top = max(top, w_flow * flow[r, run_cat[q]] + w_pop * run_pop[q])
            if top + w_sim * COLD_SIM_MAX < theta[r] and not force[r, k]:
                cmax[r, k] = -np.inf
                continue
            w = j1 - j0
            for i in range(w):
                sim[i] = 0.0
            for e in range(ev_start[r], ev_start[r + 1]):
                for i in range(w):
                    acc[i] = 0.0
                for d in range(D):
                    x = ev_vecs[e, d]
                    col = unit_t[d, s + j0 : s + j1]
                    for i in range(w):
                        acc[i] += x * col[i]
                b, o = ev_bucket[e], ev_own[e]
                for i in range(w):
                    c = acc[i]
                    if b >= 0 and b == bucket[j0 + i]:
                        c = c + o * own[j0 + i]
                    if c > sim[i]:
                        sim[i] = c
            m = np.float32(-np.inf)
            for i in range(w):
                j = j0 + i
                out[r, j] = (w_flow * flow[r, cat[j]] + w_pop * pop[j]) + w_sim * sim[i]
                m = max(m, out[r, j])
            cmax[r, k] = m


def cold_floor(flow, ev_vecs, ev_start, ev_own, ev_bucket, top_pos, top_pop, unit_t, bucket, own, seen_pos, keep, w_flow,
               w_pop, w_sim) -> np.ndarray:
    """Return float32 (rows,): a lower bound of each cold row's ``keep``-th best score among its unseen items.

    ``top_pos`` / ``top_pop`` (C, n): each category's n most popular positions and their popularity (-1 / -inf past
    its size), n = keep + the most events a row has (its items are seen). Over the items of the row's
    FLOOR_CATEGORIES likeliest categories, two bounds, the larger kept: the n-th best of w_flow * flow + w_pop * pop
    (the similarity term is 0 at least), and the ``keep``-th best exact score (similarity in) among the n items that
    bound ranks first (real items: the walk sees them too). ``seen_pos`` (rows, m): each row's seen positions (-1
    pads). A small margin below: numpy and the compiled kernel round the sums differently."""
    C, n = top_pop.shape
    # any subset of the items gives lower bounds too: each row's FLOOR_CATEGORIES categories of the best first item
    # (however many categories a shop has, the work per row stays FLOOR_CATEGORIES x n)
    m = min(C, FLOOR_CATEGORIES)
    out = np.empty(len(flow), np.float32)
    step = max(1, (1 << 20) // max(m * n, 1))  # rows at a time: (rows, m, n) stays ~4 MB
    for a in range(0, len(flow), step):
        rows = np.arange(a, min(len(flow), a + step))
        first = w_flow * flow[rows] + w_pop * top_pop[None, :, 0]
        cats = np.argpartition(-first, m - 1, axis=1)[:, :m] if m < C else np.broadcast_to(np.arange(C), (len(rows), C))
        lb = (w_flow * np.take_along_axis(flow[rows], cats, axis=1)[:, :, None] + w_pop * top_pop[cats]).reshape(len(rows), -1)
        pick = np.argpartition(-lb, n - 1, axis=1)[:, :n]
        low = np.take_along_axis(lb, pick, axis=1)
        floor = low.min(axis=1)  # the n-th best of lb
        pos = top_pos[cats].reshape(len(rows), -1)[np.arange(len(rows))[:, None], pick]
        sim = np.zeros(pos.shape, np.float32)
        counts = ev_start[rows + 1] - ev_start[rows]
        for slot in range(int(counts.max(initial=0))):
            has = np.flatnonzero(counts > slot)
            e = ev_start[rows[has]] + slot
            p = np.maximum(pos[has], 0)
            c = np.einsum("bd,dbn->bn", ev_vecs[e], unit_t[:, p])
            same = (ev_bucket[e][:, None] >= 0) & (ev_bucket[e][:, None] == bucket[p])
            c = c + np.where(same, ev_own[e][:, None] * own[p], np.float32(0))
            sim[has] = np.maximum(sim[has], c)
        exact = low + w_sim * sim
        exact[(pos < 0) | (pos[:, :, None] == seen_pos[rows][:, None, :]).any(axis=2)] = -np.inf
        best = -np.partition(-exact, keep - 1, axis=1)[:, keep - 1]
        out[rows] = np.maximum(floor, best)
    return out - np.float32(2.0**-16)


def chunk_max(vals: np.ndarray) -> np.ndarray:
    """Return float32 (rows, chunks): each row's largest value per 64 columns (torch: a vectorised reduction)."""
    x = torch.from_numpy(vals)
    n, nb = x.shape
    full = nb - nb % 64
    parts = [x[:, :full].reshape(n, full // 64, 64).amax(dim=2)] if full else []
    if full < nb:
        parts.append(x[:, full:].amax(dim=1, keepdim=True))
    return torch.cat(parts, dim=1).numpy()


def _collect(vals, cmax, rel, err_row, err_cell, rescore, left, right, lift, cat, allowed, use_f, pos0, sp_start, sp_pos,
             sp_val, bv, bp, cnt, theta, fv, fp, fcnt, ftheta):  # pragma: no cover - numba
    """Per row, keep the best scores of a block in a buffer of 2K (halved to the best K when full; theta =
    the K-th best). A cell's score is vals + its sparse correction (sp_*: per row, by position) +
    lift[row, cat] (the category prior, 0 for cold rows). ``cmax`` (rows, chunks of 64) is the largest
    of vals per chunk: a chunk whose bound (its max, its largest correction, lift and error) is under the
    threshold is skipped unread. With ``rescore``, a cell's value is within rel |value| + err_row[row] .
    err_cell[cell] of the float32 product (a bfloat16 product, BF16_REL): a cell whose value plus that
    bound may pass is scored again in float32 (left[row] . right[cell]) and that value is kept; any other
    cannot pass. Without, vals are the scores (rel and the errors 0). Second buffer: the best among allowed
    categories (use_f). Seen cells are -inf in vals."""
    B, nb = vals.shape
    n_chunks = cmax.shape[1]
    # per chunk of 64 cells: the largest cell errors, and its category runs (run_cat[run_lo[k]:run_hi[k]])
    w_chunk = np.zeros((n_chunks, 2), np.float32)
    run_lo, run_hi = np.zeros(n_chunks, np.int64), np.zeros(n_chunks, np.int64)
    run_cat = np.empty(nb, np.int64)
    n_runs = 0
    for j in range(nb):
        k = j // 64
        if j == 0 or cat[j] != cat[j - 1]:
            run_cat[n_runs] = cat[j]
            n_runs += 1
        if j % 64 == 0:
            run_lo[k] = n_runs - 1
        run_hi[k] = n_runs
        w_chunk[k, 0] = max(w_chunk[k, 0], err_cell[j, 0])
        w_chunk[k, 1] = max(w_chunk[k, 1], err_cell[j, 1])
    for r in range(B):
        e0, e1 = err_row[r, 0], err_row[r, 1]
        p = sp_start[r]
        for k in range(n_chunks):
            j0, j1 = k * 64, min(nb, k * 64 + 64)
            p_end = p
            sp_max = np.float32(0.0)
            while p_end < sp_start[r + 1] and sp_pos[p_end] < j1:
                sp_max = max(sp_max, sp_val[p_end])
                p_end += 1
            lift_max = lift[r, run_cat[run_lo[k]]]
            f_any = False
            for q in range(run_lo[k], run_hi[k]):
                lift_max = max(lift_max, lift[r, run_cat[q]])
                f_any = f_any or (use_f and allowed[r, run_cat[q]])
            th = min(theta[r], ftheta[r]) if f_any else theta[r]
            cm = cmax[r, k]
            # (a chunk of -inf: seen, or left unscored by cold_block; rel * |-inf| would be nan, never under th)
            if cm == -np.inf or cm + rel * abs(cm) + sp_max + lift_max + e0 * w_chunk[k, 0] + e1 * w_chunk[k, 1] < th:
                p = p_end
                continue
            for j in range(j0, j1):
                a = vals[r, j]
                sp = np.float32(0.0)
                while p < p_end and sp_pos[p] < j:
                    p += 1
                if p < p_end and sp_pos[p] == j:
                    sp = sp_val[p]
                if a == -np.inf:
                    continue
                c_ = cat[j]
                add = lift[r, c_]
                f_on = use_f and allowed[r, c_]
                th = min(theta[r], ftheta[r]) if f_on else theta[r]
                v = a + sp + add
                if v + rel * abs(a) + e0 * err_cell[j, 0] + e1 * err_cell[j, 1] < th:
                    continue
                if rescore:
                    dot = np.float32(0.0)
                    for d in range(left.shape[1]):
                        dot += left[r, d] * right[j, d]
                    v = dot + sp + add
                for which in range(2):  # the unfiltered buffer, then (f_on) the allowed categories' one
                    if which == 1 and not f_on:
                        break
                    bvals, bpos, bcnt, bth = (bv, bp, cnt, theta) if which == 0 else (fv, fp, fcnt, ftheta)
                    if v < bth[r]:
                        continue
                    c = bcnt[r]
                    bvals[r, c] = v
                    bpos[r, c] = pos0 + j
                    c += 1
                    if c == bvals.shape[1]:  # full: keep the best half, theta = the worst of them
                        keep = c // 2
                        order = np.argsort(-bvals[r, :c])[:keep]
                        tv, tp = bvals[r, order].copy(), bpos[r, order].copy()
                        bvals[r, :keep], bpos[r, :keep] = tv, tp
                        bth[r] = tv[keep - 1]
                        c = keep
                    bcnt[r] = c
            p = p_end


def kernels() -> dict:
    """Return the compiled kernels (numba, cached on disk after the first compile)."""
    return {"collect": compiled_kernel(_collect)}
