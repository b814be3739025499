"""Blocked retrieval over a large catalogue: each shopper's best items without a users x items array.

The dense path (serving/recommender.py ``_retrieve``) builds (users, n_items) arrays per chunk and makes
a dozen passes over them (the product, the item-kNN term, the cold score, masks, float64 tie keys). At
500k items that is memory traffic, not arithmetic. Here one chunk of users walks the catalogue in
blocks that stay in cache, with the items ordered by category:

* warm shoppers: one matrix product per block over the learned columns, the popularity column and the
  item-kNN tie-break column; the category-bucket prior (one-hot item columns, models/prior.py) is a
  per-(shopper, category) constant added in the collecting kernel; item-kNN neighbours are a sparse
  correction (only the cells a history's neighbours touch);
* cold shoppers: the similarity to their 1-2 items is a product over the dense columns of the unit
  vectors plus the one-hot overlap (a sparse correction for items of the same bucket), mixed with the
  category flow and popularity in the same kernel; a chunk of 64 items whose bound (flow and popularity at
  their largest, a cosine of 1) cannot reach the row's threshold is never multiplied (~97 % of a 500k-item
  catalogue for the 10M log's cold shoppers), the threshold started from the items that bound ranks first;
* seen items are set to -inf by index; a numba kernel keeps each row's best scores in a small buffer
  (threshold = the K-th best so far), so memory is bounded by the chunk, whatever the catalogue.

What comes back is a compact ``Retrieved``: per row, the kept items (sorted by item index, so a tie
broken by position is broken by item index, as ``stable_top_n`` does) with their retrieval, dot and
item-kNN values, plus the novel-category window (models: ``fusion_novel_candidates``). A row whose
tie bucket crosses the kept set's edge is flagged inexact and the caller ranks it on the dense path.
Scores differ from the dense product only by float rounding (a product over the dense columns plus a constant
instead of the full-width one: 66 instead of 321 columns for a model with the category-bucket prior).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from crossrec_core.device import cpu_has_native_bf16
from crossrec_core.data.dataset import Sequences
from crossrec_core.serving.block_kernels import BF16_REL, bf16_error_terms, chunk_max, cold_block, cold_floor, kernels
from crossrec_core.serving.retrieval import COLD_WEIGHTS, Retrieved, Tables, cold_flow, history_of, in_sorted, novel_window
from crossrec_core.serving.selection import TIE_RESOLUTION, tie_keys

# Cells (users x items) of one block: ~4 MB of float32 (stays in the 2 MB-per-core L2 / shared L3).
BLOCK_CELLS = 1 << 20
# Scores kept per row past the deepest pool asked for (they show where a tie bucket ends).
KEEP_MARGIN = 16
# The margin of a second walk over the rows the first could not decide (a tie bucket wider than KEEP_MARGIN: cold
# shoppers' scores tie wherever popularity and category flow do). Why: on the 10M-event log ~0.4 % of rows, each
# ranked again on the dense path at 0.2-0.8 s; walked again with this margin, 15 of 15 rows cost 0.27 s together.
WIDE_KEEP_MARGIN = 4096
# Threads walking the catalogue at once (each with its share of a chunk's rows).
WORKERS = 2
# Items (the most popular) whose scores set where each warm row's threshold starts (``_Group.start_above``).
FLOOR_SAMPLE = 4096
# The warm rows' product in bfloat16 (each cell that may enter a list scored again in float32): None = where the
# CPU multiplies bfloat16 natively (~2.7x a float32 product there; emulated elsewhere, slower than float32).
BF16_WALK: bool | None = None


_WALKS_LOCK = threading.Lock()
_walks = {"running": 0, "torch": 1, "blas": None}


@contextmanager
def _one_thread_libraries():
    """torch and BLAS at one thread while any walk runs. Both settings are process-wide and two walks may overlap
    (recommend_batch walks the next chunk while it ranks this one), so they are counted: set by the first walk
    to start, restored by the last to end."""
    with _WALKS_LOCK:
        if _walks["running"] == 0:
            _walks["torch"] = torch.get_num_threads()
            torch.set_num_threads(1)
            _walks["blas"] = threadpool_limits(1, user_api="blas")
        _walks["running"] += 1
    try:
        yield
    finally:
        with _WALKS_LOCK:
            _walks["running"] -= 1
            if _walks["running"] == 0:
                _walks["blas"].restore_original_limits()
                torch.set_num_threads(_walks["torch"])


def walk_in_bf16() -> bool:
    """Whether the warm walk multiplies in bfloat16 (``BF16_WALK``, else where the CPU has it natively)."""
    return cpu_has_native_bf16() if BF16_WALK is None else bool(BF16_WALK)


@dataclass
class _Stream:
    """The running best of one ranking (unfiltered, or among allowed items) for a chunk's rows."""

    vals: np.ndarray
    pos: np.ndarray
    cnt: np.ndarray
    theta: np.ndarray

    @classmethod
    def empty(cls, B: int, keep: int) -> "_Stream":
        cap = 2 * max(keep, 1)
        return cls(np.full((B, cap), -np.inf, np.float32), np.zeros((B, cap), np.int64), np.zeros(B, np.int64),
                   np.full(B, -np.inf, np.float32))

    def rows(self, sel: np.ndarray) -> "_Stream":
        return _Stream(self.vals[sel], self.pos[sel], self.cnt[sel], self.theta[sel])

    def put(self, sel: np.ndarray, other: "_Stream") -> None:
        self.vals[sel], self.pos[sel], self.cnt[sel], self.theta[sel] = other.vals, other.pos, other.cnt, other.theta

    def exact(self, perm: np.ndarray, n: int) -> np.ndarray:
        """Return bool (B,): the kept scores decide the row's top ``n`` (stable_top_n order)."""
        B, cap = self.vals.shape
        live = np.arange(cap)[None, :] < self.cnt[:, None]
        v = np.where(live, self.vals, -np.inf)
        keys = tie_keys(v, perm[self.pos])
        kth = -np.sort(-keys, axis=1)[:, min(n, cap) - 1]
        with np.errstate(invalid="ignore"):
            q_kth = np.ceil(kth)  # keys are q - (a fraction below 1/2): ceil gives q back
            q_theta = np.round(self.theta.astype(np.float64) / TIE_RESOLUTION)
        return (self.theta == -np.inf) | (np.isfinite(kth) & (q_kth > q_theta))


def blocked_retrieve(rec, t: Tables, seqs: Sequences, users: np.ndarray, ends: np.ndarray, allowed_cat: np.ndarray | None,
                     n_unf: int, n_f: int, margin: int | None = None) -> Retrieved:
    """Return the compact retrieval stage of a chunk: each row's best ``n_unf`` unfiltered items (and,
    with ``allowed_cat`` (B, C), its best ``n_f`` allowed ones), each kept with ``margin`` more, plus
    the novel-category windows; ``rec`` is the Recommender (its model and per-model tables). ``margin``:
    KEEP_MARGIN unless given."""
    margin = KEEP_MARGIN if margin is None else int(margin)
    kern = kernels()
    model, N, C = rec.model, rec.n_items, rec.n_categories
    B = len(users)
    hist = history_of(seqs, users, ends, N)
    cold = hist.lengths <= rec.cold_max_events
    user_vecs = np.asarray(model.user_vectors(seqs, users, ends), dtype=np.float32)
    seen_keys = np.unique(hist.rows * N + hist.items)
    user_cats = hist.categories(rec.item_category, C)
    sp_keys, sp_sums = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    if t.knn_tie is not None:
        sp_keys, sp_sums = model.knn.neighbour_sums(seqs, users, ends)
    w_knn = np.float32(getattr(model, "knn_weight", 0.0))
    groups, n_workers = [], max(1, min(WORKERS, os.cpu_count() or 1))
    for rows, is_cold in [(part, c) for c in (False, True) for part in np.array_split(np.flatnonzero(cold == c), n_workers)]:
        groups.append(_Group.make(rec, t, rows, is_cold, user_vecs, hist, seen_keys, sp_keys, sp_sums * w_knn,
                                  allowed_cat, max(n_unf, 1) + margin, n_f + margin))
    elig = ~user_cats
    novel = [novel_window(t, rec.item_category, hist, seen_keys, elig, max(n_unf, 1), N)]
    if allowed_cat is not None:
        novel.append(novel_window(t, rec.item_category, hist, seen_keys, elig & allowed_cat, max(n_f, 1), N))
    sample = np.sort(t.inv[t.pop_order[:FLOOR_SAMPLE]])  # positions, sorted once for every group
    for g in groups:
        g.add_novel(novel, t, B)
        g.start_above(t, sample)
    def walk(mine: list) -> None:
        for g in mine:
            for s in range(0, N, g.nb):
                g.block(kern, t, s, min(N, s + g.nb))

    # one thread per core, each with its share of the rows and a one-thread BLAS (and torch): a few large
    # single-threaded steps per core instead of thousands of small parallel regions (which stall
    # whenever the machine is shared)
    with _one_thread_libraries(), ThreadPoolExecutor(n_workers) as pool:
        list(pool.map(walk, [groups[i::n_workers] for i in range(n_workers)]))
    unf = _Stream.empty(B, max(n_unf, 1) + margin)
    filt = _Stream.empty(B, n_f + margin) if allowed_cat is not None else None
    for g in groups:
        unf.put(g.rows, g.unf)
        if filt is not None:
            filt.put(g.rows, g.filt)
    exact = unf.exact(t.perm, max(n_unf, 1)) & novel[0][2]
    if filt is not None:
        exact &= filt.exact(t.perm, max(n_f, 1)) & novel[1][2]
    live = np.arange(unf.vals.shape[1])[None, :] < unf.cnt[:, None]
    best = np.where(live, unf.vals, -np.inf).max(axis=1) if B else np.zeros(0, np.float32)
    parts_r, parts_i, parts_v = [], [], []
    for st in (unf, filt):
        if st is None:
            continue
        ok = np.arange(st.vals.shape[1])[None, :] < st.cnt[:, None]
        r, j = np.nonzero(ok)
        parts_r.append(r), parts_i.append(t.perm[st.pos[r, j]]), parts_v.append(st.vals[r, j])
    for g in groups:
        parts_r.append(g.rows[g.nov_row]), parts_i.append(t.perm[g.nov_pos]), parts_v.append(g.nov_val)
    W_min = max(n_unf, n_f, 1)
    cols, retrieval = _compact(np.concatenate(parts_r), np.concatenate(parts_i), np.concatenate(parts_v), B, N, W_min)
    knn = None
    if t.knn_tie is not None:
        keys = np.arange(B, dtype=np.int64)[:, None] * N + cols
        s_val = np.zeros(keys.shape, np.float32)
        if len(sp_keys):
            at = np.minimum(np.searchsorted(sp_keys, keys), len(sp_keys) - 1)
            hit = sp_keys[at] == keys
            s_val[hit] = sp_sums[at[hit]]
        knn = w_knn * (s_val + model.knn._pop_tiebreak()[cols])
    dot = retrieval.copy()
    if cold.any():  # cold rows ranked by the cold score: their dot product, for the score column
        cr = np.flatnonzero(cold)
        dot[cr] = np.einsum("bd,bwd->bw", user_vecs[cr], rec.item_vecs[cols[cr]])
        if knn is not None:
            dot[cr] += knn[cr]
    return Retrieved(dot, retrieval, best.astype(np.float32), cold, user_vecs, knn, hist, cols, exact)


def _compact(rows: np.ndarray, items: np.ndarray, vals: np.ndarray, B: int, N: int, W_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (cols, values) (B, W): each row's distinct items sorted, padded with other items at -inf."""
    keys, first = np.unique(rows.astype(np.int64) * N + items, return_index=True)
    vals = vals[first]
    r = keys // N
    count = np.bincount(r, minlength=B)
    W = max(int(count.max(initial=0)), W_min)
    need = W - count
    pool = np.arange(min(N, 2 * W + 1), dtype=np.int64)
    free = ~in_sorted(np.arange(B, dtype=np.int64)[:, None] * N + pool[None, :], keys)
    free &= np.cumsum(free, axis=1) <= need[:, None]
    pr, pj = np.nonzero(free)
    all_keys = np.concatenate([keys, pr * N + pool[pj]])
    all_vals = np.concatenate([vals, np.full(len(pr), -np.inf, np.float32)])
    order = np.argsort(all_keys, kind="stable")
    return (all_keys[order] % N).reshape(B, W), all_vals[order].astype(np.float32).reshape(B, W)


@dataclass
class _Group:
    """The warm or the cold rows of a chunk, with what their blocks need."""

    rows: np.ndarray
    is_cold: bool
    nb: int  # positions per block
    left: np.ndarray  # (n, D) warm: user columns of the product; cold: its events' unit dense columns
    left_low: torch.Tensor | None  # warm rows' columns in bfloat16 where the walk multiplies in bfloat16
    err: np.ndarray  # (n, 2) float32: the rows' terms of a bfloat16 score's error bound (0: exact scores)
    lift: np.ndarray  # (n, C) float32 per-category constant (the one-hot prior of warm rows; else 0)
    allowed: np.ndarray  # (n, C) bool or (1, 1)
    seen: tuple[np.ndarray, np.ndarray]  # (local row, position) sorted by position
    sparse: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # warm: (block, local row, position, w * kNN sum) by (block, row, position)
    cold_in: tuple  # cold: (ev_start, ev_own, ev_bucket, flow)
    unf: _Stream
    filt: _Stream
    use_f: bool
    nov_row: np.ndarray = None
    nov_pos: np.ndarray = None
    nov_val: np.ndarray = None

    @classmethod
    def make(cls, rec, t: Tables, rows, is_cold, user_vecs, hist, seen_keys, sp_keys, sp_vals, allowed_cat, keep_u, keep_f):
        N, n = rec.n_items, len(rows)
        nb = max(256, BLOCK_CELLS // max(n, 1))
        local = np.full(len(hist.lengths), -1, dtype=np.int64)
        local[rows] = np.arange(n)
        sr, si = local[seen_keys // N], seen_keys % N
        ok = sr >= 0
        seen = _by_pos(sr[ok], t.inv[si[ok]])
        lift, cold_in = np.zeros((n, rec.n_categories), np.float32), ()
        sparse = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.float32),)
        left_low, err = None, np.zeros((n, 2), np.float32)
        if is_cold:
            pick = local[hist.rows] >= 0
            ev_row, ev_item = local[hist.rows[pick]], hist.items[pick]
            flow = cold_flow(rec.flow, rec.category_prior, rec.item_category, ev_row, ev_item, n)
            ev_start = np.searchsorted(ev_row, np.arange(n + 1))
            unit = rec.unit_rows(ev_item)
            ev_bucket = np.full(len(ev_item), -1, np.int64)
            ev_own = np.zeros(len(ev_item), np.float32)
            if t.onehot is not None:
                ev_bucket = t.bucket_pos[t.inv[ev_item]]
                ev_own = unit[np.arange(len(ev_item)), t.onehot[0] + ev_bucket].astype(np.float32)
            left = np.ascontiguousarray(unit[:, t.dense_cols], dtype=np.float32)
            cold_in = (ev_start.astype(np.int64), ev_own, ev_bucket, flow)
        else:
            u = user_vecs[rows]
            left = u[:, t.dense_cols]
            if t.knn_tie is not None:
                left = np.concatenate([left, np.ones((n, 1), np.float32)], axis=1)
            left = np.ascontiguousarray(left, dtype=np.float32)
            if t.warm_low is not None:
                left_low = torch.from_numpy(left).to(torch.bfloat16)
                err = bf16_error_terms(left)
            if t.onehot is not None:
                j0, cat_bucket, val = t.onehot
                lift = np.ascontiguousarray((u[:, j0:] * val)[:, cat_bucket], dtype=np.float32)
            kr = local[sp_keys // N]
            ok = kr >= 0
            r_, p_ = kr[ok], t.inv[sp_keys[ok] % N]
            o = np.argsort((p_ // nb) * (n * nb) + r_ * nb + p_ % nb)  # by (block, row, position): distinct keys
            sparse = ((p_ // nb)[o], r_[o], p_[o], sp_vals[ok][o].astype(np.float32))
        allowed = np.zeros((1, 1), bool) if allowed_cat is None else np.ascontiguousarray(allowed_cat[rows])
        filt = _Stream.empty(n, keep_f) if allowed_cat is not None else _Stream.empty(n, 1)
        return cls(rows, is_cold, nb, left, left_low, err, lift, allowed, seen, sparse, cold_in, _Stream.empty(n, keep_u), filt,
                   allowed_cat is not None)

    def start_above(self, t: Tables, sample: np.ndarray) -> None:
        """Start each row's threshold below the K-th best score its walk will see (the K its buffer keeps): the walk
        then reads few cells twice before its buffers fill with good ones, and (cold rows) skips the product of the
        chunks that cannot reach it. Warm rows: the K-th best among the sorted ``sample`` positions, read without
        the sparse corrections (all >= 0). Cold rows: ``cold_floor``, the K-th best without the similarity term,
        counting the row's own items in (they are seen)."""
        keep = self.unf.vals.shape[1] // 2
        if len(self.rows) == 0:
            return
        if self.is_cold:
            ev_start, ev_own, ev_bucket, flow = self.cold_in
            m = int(np.diff(ev_start).max(initial=0))
            n = keep + m
            first = np.cumsum(t.cat_size) - t.cat_size
            at = np.arange(n)
            ok = at[None, :] < t.cat_size[:, None]
            top_pos = np.where(ok, t.pos_by_pop[np.minimum(first[:, None] + at[None, :], len(t.pos_by_pop) - 1)], -1)
            top_pop = np.where(ok, t.pop_pos[np.maximum(top_pos, 0)], np.float32(-np.inf)).astype(np.float32)
            seen_pos = np.full((len(self.rows), max(m, 1)), -1, np.int64)
            r, p = self.seen
            o = np.lexsort((p, r))
            r, p = r[o], p[o]
            seen_pos[r, np.arange(len(r)) - np.searchsorted(r, r)] = p
            self.unf.theta[:] = cold_floor(flow, self.left, ev_start, ev_own, ev_bucket, top_pos, top_pop, t.unit_t, t.bucket_pos,
                                           t.unit_own, seen_pos, keep, *(np.float32(COLD_WEIGHTS[k]) for k in
                                                                         ("category_flow", "popularity", "similarity")))
            return
        if len(sample) < keep or (self.sparse[3] < 0).any():
            return
        v = self.left @ t.warm[sample].T + self.lift[:, t.cat_pos[sample]]
        at = np.searchsorted(sample, self.seen[1])
        hit = sample[np.minimum(at, len(sample) - 1)] == self.seen[1]
        v[self.seen[0][hit], at[hit]] = -np.inf
        self.unf.theta[:] = -np.partition(-v, keep - 1, axis=1)[:, keep - 1]

    def add_novel(self, novel: list, t: Tables, B: int) -> None:
        """Keep the novel-window cells of this group's rows (their values are read block by block)."""
        local = np.full(B, -1, dtype=np.int64)
        local[self.rows] = np.arange(len(self.rows))
        r = local[np.concatenate([w[0] for w in novel])]
        i = np.concatenate([w[1] for w in novel])
        self.nov_row, self.nov_pos = _by_pos(r[r >= 0], t.inv[i[r >= 0]])
        self.nov_val = np.full(len(self.nov_pos), -np.inf, np.float32)

    def block(self, kern: dict, t: Tables, s: int, e: int) -> None:
        n = len(self.rows)
        if n == 0:
            return
        lo, hi = np.searchsorted(self.seen[1], [s, e])
        seen_r, seen_j = self.seen[0][lo:hi], self.seen[1][lo:hi] - s
        b = s // self.nb
        lo, hi = np.searchsorted(self.sparse[0], [b, b + 1])
        sp_r, sp_j, sp_v = self.sparse[1][lo:hi], self.sparse[2][lo:hi] - s, self.sparse[3][lo:hi]
        sp_start = np.searchsorted(sp_r, np.arange(n + 1)).astype(np.int64)
        low = self.left_low is not None
        if self.is_cold:
            ev_start, ev_own, ev_bucket, flow = self.cold_in
            # a cell under the row's lowest threshold cannot enter a list: its chunk may go unscored unless the
            # novel-category window reads it
            theta = np.minimum(self.unf.theta, self.filt.theta) if self.use_f else self.unf.theta
            lo, hi = np.searchsorted(self.nov_pos, [s, e])
            force = np.zeros((n, (e - s + 63) // 64), bool)
            force[self.nov_row[lo:hi], (self.nov_pos[lo:hi] - s) // 64] = True
            vals, cmax = cold_block(self.left, ev_start, ev_own, ev_bucket, t.unit_t, s, t.bucket_pos[s:e], t.unit_own[s:e],
                                    flow, t.cat_pos[s:e], t.pop_pos[s:e], np.float32(COLD_WEIGHTS["category_flow"]),
                                    np.float32(COLD_WEIGHTS["popularity"]), np.float32(COLD_WEIGHTS["similarity"]), theta, force)
        elif low:  # float32 from a bfloat16 product (a fast conversion), within the BF16_REL bound of the float32 one
            vals = torch.mm(self.left_low, t.warm_low[s:e].T).float().numpy()
        else:
            vals = np.ascontiguousarray(self.left @ t.warm[s:e].T, dtype=np.float32)
        vals[seen_r, seen_j] = -np.inf
        if not self.is_cold:  # (a cold chunk's max may be a seen cell's: still a bound)
            cmax = chunk_max(vals)
        u, f = self.unf, self.filt
        cat = t.cat_pos[s:e]
        kern["collect"](vals, cmax, np.float32(BF16_REL if low else 0.0), self.err, t.warm_err[s:e], low, self.left, t.warm[s:e], self.lift, cat,
                        self.allowed, self.use_f, s, sp_start, sp_j, sp_v, u.vals, u.pos, u.cnt, u.theta, f.vals, f.pos, f.cnt, f.theta)
        lo, hi = np.searchsorted(self.nov_pos, [s, e])
        r, j = self.nov_row[lo:hi], self.nov_pos[lo:hi] - s
        if self.is_cold:
            self.nov_val[lo:hi] = vals[r, j]
            return
        # the novel window's cells, scored in float32 (the product, the sparse correction, the prior's lift)
        v = np.einsum("wd,wd->w", self.left[r], t.warm[s + j])
        if len(sp_r) and len(r):
            keys, want = sp_r * (e - s) + sp_j, r * (e - s) + j
            at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
            hit = keys[at] == want
            v[hit] += sp_v[at[hit]]
        self.nov_val[lo:hi] = v + self.lift[r, cat[j]]


def _by_pos(rows: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (rows, pos) sorted by position (the blocks walk positions in order)."""
    o = np.argsort(pos, kind="stable")
    return rows[o].astype(np.int64), pos[o].astype(np.int64)
