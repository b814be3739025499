"""The retrieval stage's shapes and tables: dense or compact (blocked) scores, history, cold flow.

A chunk's retrieval stage (``Retrieved``) is either dense -- (B, n_items) arrays, the path of small
catalogues and of one shopper -- or compact: (B, W) arrays over each row's kept items ``cols``
(serving/blocked.py, large catalogues). ``lookup`` reads either at item indices, so the candidate pool,
the fusion features and the list cut (serving/recommender.py) are one code path for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crossrec_core.data.dataset import Sequences
from crossrec_core.serving.block_kernels import bf16_item_terms
from crossrec_core.serving.selection import tie_keys

# From this many items, recommend_batch retrieves in blocks (below it the dense path is as fast).
COMPACT_MIN_ITEMS = 50_000
# Users per chunk on the blocked path (their pools, features and buffers are all small).
BLOCKED_USERS = 512
# Cold retrieval: how much each signal weighs (all three in [0, 1]); serving/recommender.py re-exports it.
COLD_WEIGHTS = {"category_flow": 0.4, "popularity": 0.3, "similarity": 0.3}



@dataclass(frozen=True)
class History:
    """The history events of a chunk: row (within the chunk) and item_idx of each, and lengths (B,)."""

    rows: np.ndarray
    items: np.ndarray
    lengths: np.ndarray

    def subset(self, keep: np.ndarray) -> "History":
        """Return the histories of rows ``keep`` (int positions), renumbered 0..len(keep)-1."""
        remap = np.full(len(self.lengths), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        new_rows = remap[self.rows]
        ok = new_rows >= 0
        order = np.argsort(new_rows[ok], kind="stable")
        return History(new_rows[ok][order], self.items[ok][order], self.lengths[keep])

    def categories(self, item_category: np.ndarray, n_categories: int) -> np.ndarray:
        """Return bool (B, C): the categories each history touched."""
        out = np.zeros((len(self.lengths), n_categories), dtype=bool)
        out[self.rows, item_category[self.items]] = True
        return out


def history_of(seqs: Sequences, users: np.ndarray, ends: np.ndarray, n_items: int) -> History:
    """Return the History of a chunk (items outside the model's catalogue dropped)."""
    row, pos = seqs.history_positions(users, ends)
    items = seqs.items[pos].astype(np.int64)
    inside = (items >= 0) & (items < n_items)
    return History(row[inside], items[inside], np.bincount(row[inside], minlength=len(users)))


@dataclass(frozen=True)
class Retrieved:
    """The retrieval stage of a chunk (B users). Dense: (B, n_items) arrays, ``cols`` None. Compact
    (blocked path): (B, W) arrays over the items ``cols`` (sorted per row), ``exact`` False for rows
    to rank on the dense path."""

    dot: np.ndarray  # user . item (+ prior, + weighted item-kNN)
    retrieval: np.ndarray  # dot, or the cold-start score for cold rows; seen items -inf
    best: np.ndarray  # (B,) best unseen retrieval score
    cold: np.ndarray  # bool (B,)
    user_vecs: np.ndarray | None
    knn: np.ndarray | None  # weighted item-kNN term or None
    hist: History
    cols: np.ndarray | None = None
    exact: np.ndarray | None = None


def lookup(values: np.ndarray, cols: np.ndarray | None, items: np.ndarray) -> np.ndarray:
    """Return values at item indices ``items`` (B, N): a plain gather when dense, else by each row's cols."""
    if cols is None:
        return np.take_along_axis(values, items, axis=1)
    return np.take_along_axis(values, positions(cols, items), axis=1)


def positions(cols: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Return int64 (B, N) the position of each of ``items`` in its row of ``cols`` (every item must be there)."""
    B, W = cols.shape
    span = int(max(cols.max(initial=0), items.max(initial=0))) + 1
    base = np.arange(B, dtype=np.int64)[:, None] * span
    flat = (base + cols).ravel()
    pos = np.searchsorted(flat, (base + items).ravel()).reshape(items.shape) - np.arange(B)[:, None] * W
    return np.clip(pos, 0, W - 1)


def cold_flow(flow: np.ndarray, category_prior: np.ndarray, item_category: np.ndarray, hist_row: np.ndarray,
              hist_items: np.ndarray, n_rows: int) -> np.ndarray:
    """Return float32 (n_rows, C) the category flow from each cold row's categories, scaled to [0, 1]
    (the overall category popularity for a row without events)."""
    cats = np.zeros((n_rows, flow.shape[0]), dtype=np.float32)
    np.add.at(cats, (hist_row, item_category[hist_items]), 1.0)
    out = cats @ flow
    top = out.max(axis=1, keepdims=True)
    return np.where(top > 0, out / np.maximum(top, 1e-12), category_prior[None, :]).astype(np.float32)


@dataclass(frozen=True)
class Tables:
    """Per-model tables of the blocked path, built once (items in category order = positions)."""

    perm: np.ndarray  # item at each position
    inv: np.ndarray  # position of each item
    cat_pos: np.ndarray  # category of each position
    warm: np.ndarray  # (n_items, Dw) float32 by position: dense item columns (+ the kNN tie-break column)
    dense_cols: np.ndarray  # item_vecs columns in ``warm``
    onehot: tuple[int, np.ndarray, np.float32] | None  # (first column, bucket of each category, item value)
    unit_t: np.ndarray  # (Dc, n_items) float32 by position: the dense columns of the unit vectors, transposed (the cold walk)
    unit_own: np.ndarray  # (n_items,) float32 by position: a unit vector's own one-hot value (0 without)
    bucket_pos: np.ndarray  # bucket of each position (-1 without one-hot)
    pop_pos: np.ndarray  # pop_norm by position
    pos_by_pop: np.ndarray  # positions, each category's sorted by popularity high to low (categories stay in place)
    pop_order: np.ndarray  # items by popularity, ties by item index (the novel-slot order)
    cat_size: np.ndarray  # (C,) items per category
    knn_tie: np.ndarray | None  # (n_items,) knn_weight * the kNN popularity tie-break, or None
    warm_err: np.ndarray  # (n_items, 2) float32 by position: an item's terms of the bfloat16 error bound (zeros without warm_low)
    warm_low: torch.Tensor | None  # ``warm`` in bfloat16 where the walk multiplies in bfloat16 (serving/blocked.py)


def build_tables(model, item_vecs: np.ndarray, norms: np.ndarray, item_category: np.ndarray, n_categories: int,
                 base_dim: int, pop_norm: np.ndarray, low_precision: bool = False) -> Tables:
    """Return the Tables of a model (detects the one-hot category-bucket prior columns, models/prior.py);
    ``low_precision``: also a bfloat16 copy of the warm columns (the walk's product, re-scored in float32)."""
    n, D = item_vecs.shape
    perm = np.argsort(item_category, kind="stable")
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    onehot = _onehot_layout(model, item_vecs, base_dim)
    dense_cols = np.arange(D) if onehot is None else np.arange(onehot[0])
    knn_tie = None
    knn, w = getattr(model, "knn", None), float(getattr(model, "knn_weight", 0.0))
    if knn is not None and w != 0.0:
        knn_tie = (np.float32(w) * knn._pop_tiebreak()).astype(np.float32)
    dense = item_vecs[:, : len(dense_cols)]  # a prefix of the columns (a view): rows copied, not the table
    warm = dense[perm]
    if knn_tie is not None:
        warm = np.concatenate([warm, knn_tie[perm][:, None]], axis=1)
    bucket_pos = np.full(n, -1, dtype=np.int64)
    unit_own = np.zeros(n, dtype=np.float32)
    if onehot is not None:
        bucket_pos = onehot[1][item_category[perm]]
        unit_own = (item_vecs[perm, onehot[0] + bucket_pos] / norms[perm, 0]).astype(np.float32)
    keys = tie_keys(pop_norm[None, :])[0]
    warm = np.ascontiguousarray(warm, dtype=np.float32)
    return Tables(
        perm=perm, inv=inv, cat_pos=item_category[perm].astype(np.int64), warm=warm,
        dense_cols=dense_cols, onehot=onehot, unit_t=np.ascontiguousarray((dense[perm] / norms[perm]).T, dtype=np.float32),
        unit_own=unit_own, bucket_pos=bucket_pos, pop_pos=pop_norm[perm].astype(np.float32),
        pos_by_pop=np.lexsort((-pop_norm[perm], item_category[perm])),
        pop_order=np.argsort(-keys, kind="stable"), cat_size=np.bincount(item_category, minlength=n_categories), knn_tie=knn_tie,
        warm_err=bf16_item_terms(warm) if low_precision else np.zeros((n, 2), np.float32),
        warm_low=torch.from_numpy(warm).to(torch.bfloat16) if low_precision else None,
    )


def _onehot_layout(model, item_vecs: np.ndarray, base_dim: int) -> tuple[int, np.ndarray, np.float32] | None:
    """Return (first column, bucket of each category, value) when the item vectors end in the one-hot
    category-bucket prior columns with one value, else None (then every column is in the product)."""
    prior, weights = getattr(model, "prior", None), getattr(model, "prior_weights", None)
    if prior is None or weights is None or weights[1] == 0:
        return None
    j0 = base_dim + (1 if weights[0] != 0 else 0)
    bucket = np.asarray(prior.bucket, dtype=np.int64)
    if item_vecs.shape[1] != j0 + prior.n_buckets or len(bucket) != len(item_vecs):
        return None
    block = item_vecs[:, j0:]
    own = block[np.arange(len(bucket)), bucket]
    if len(own) == 0 or np.count_nonzero(block) != np.count_nonzero(own) or not (own == own[0]).all():
        return None
    return j0, np.asarray(prior.category_bucket, dtype=np.int64), np.float32(own[0])


def novel_window(t: Tables, item_category: np.ndarray, hist: History, seen_keys: np.ndarray, eligible_cat: np.ndarray,
                 n: int, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (rows, items, done): each row's first ``n`` unseen items of an eligible category, by the
    popularity order (the items the novel slots of a pool of up to n candidates choose from); done
    (B,) False where a window of 4,096 did not find them (that row takes the dense path)."""
    B = len(hist.lengths)
    order = t.pop_order[eligible_cat.any(axis=0)[item_category[t.pop_order]]]
    L, done = min(len(order), n + 64), np.zeros(B, dtype=bool)
    while True:
        w = order[:L]
        ok = eligible_cat[:, item_category[w]]
        ok &= ~in_sorted(np.arange(B, dtype=np.int64)[:, None] * n_items + w[None, :], seen_keys)
        done = (ok.sum(axis=1) >= n) | (L >= len(order))
        if done.all() or L >= 4096:
            break
        L = min(len(order), L * 4)
    ok &= np.cumsum(ok, axis=1) <= n
    rows, at = np.nonzero(ok)
    return rows, w[at], done



def allowed_categories(hist: History, static: np.ndarray | None, cross_only: bool, extra: tuple[np.ndarray, np.ndarray] | None,
                       item_category: np.ndarray, n_categories: int) -> np.ndarray | None:
    """Return bool (B, C) the categories a row may be recommended (include / exclude filters ``static``
    per item, cross-category-only with ``extra`` (row, category) pairs), or None when nothing is filtered."""
    if static is None and not cross_only:
        return None
    allowed = np.ones((len(hist.lengths), n_categories), dtype=bool)
    if static is not None:
        allowed &= np.bincount(item_category[static], minlength=n_categories)[None, :] > 0
    if cross_only:
        user_cats = hist.categories(item_category, n_categories)
        if extra is not None:
            user_cats[extra[0], extra[1]] = True
        allowed &= ~user_cats
    return allowed


def rows_subset(pairs: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray, B: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the (row, value) ``pairs`` of rows ``rows`` (of B), renumbered 0..len(rows)-1."""
    if pairs is None:
        return None
    where = np.full(B, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    keep = where[pairs[0]] >= 0
    return where[pairs[0]][keep], pairs[1][keep]


def neighbour_values(knn, seqs: Sequences, users: np.ndarray, ends: np.ndarray, cand: np.ndarray, n_items: int) -> np.ndarray:
    """Return float32 (B, N) the item-kNN scores of cells ``cand`` (as score_histories, without the dense array)."""
    cells, sums = knn.neighbour_sums(seqs, users, ends)
    keys = np.arange(len(cand), dtype=np.int64)[:, None] * n_items + cand
    out = np.zeros(cand.shape, np.float32)
    if len(cells):
        at = np.minimum(np.searchsorted(cells, keys), len(cells) - 1)
        hit = cells[at] == keys
        out[hit] = sums[at[hit]]
    return out + knn._pop_tiebreak()[cand]



def cold_scores(rec, hist_row: np.ndarray, hist_items: np.ndarray, n_rows: int) -> np.ndarray:
    """Return float32 (n_rows, n_items) cold retrieval scores in [0, 1] of the Recommender ``rec``'s
    catalogue: category flow from the user's categories (overall category popularity when empty), item
    popularity, and the best cosine similarity to one of the user's items."""
    flow = cold_flow(rec.flow, rec.category_prior, rec.item_category, hist_row, hist_items, n_rows)
    score = COLD_WEIGHTS["category_flow"] * flow[:, rec.item_category] + COLD_WEIGHTS["popularity"] * rec.pop_norm[None, :]
    if len(hist_items):
        sim = np.zeros((n_rows, rec.n_items), dtype=np.float32)
        # few events per cold row (<= cold_max_events): loop over the slot, not the user
        slot = np.arange(len(hist_row)) - np.searchsorted(hist_row, hist_row, side="left")
        for s in range(int(slot.max()) + 1):
            pick = slot == s
            cos = rec.unit_vecs[hist_items[pick]] @ rec.unit_vecs.T  # (n_pick, n_items)
            sim[hist_row[pick]] = np.maximum(sim[hist_row[pick]], cos)
        score += COLD_WEIGHTS["similarity"] * sim
    return score.astype(np.float32)


def novel_in_order(pop_order: np.ndarray, item_category: np.ndarray, user_cats: np.ndarray, retrieval: np.ndarray,
                   exclude: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (items (B, m), ok (B, m)): each row's first m items in ``pop_order`` with a finite dense
    ``retrieval``, a category absent from ``user_cats`` and not in ``exclude`` (B, E); ok False where a row
    has fewer (item 0 in those slots: read only where ok). The same items as stable_top_n over the popularity of those
    items, reading only a window of the order, widened for the rows still short of m until the whole catalogue
    was read. A row whose shopper touched every category reads nothing: on a log where every shopper has every
    category (amazon: two), the old window grew to the whole catalogue for every row, two thirds of recommending.
    """
    B, N = retrieval.shape
    items, ok = np.zeros((B, m), dtype=np.int64), np.zeros((B, m), dtype=bool)
    if B == 0 or m == 0 or N == 0:
        return items, ok
    sizes = np.bincount(item_category, minlength=user_cats.shape[1])
    pending = np.flatnonzero((~user_cats).astype(np.int64) @ sizes > 0)  # rows with an untouched category
    excluded = np.zeros((B, N), dtype=bool)  # a mask, not a sorted-key search: retrieval is (B, N) already
    excluded[np.repeat(np.arange(B), exclude.shape[1]), exclude.ravel()] = True
    L = min(N, m + exclude.shape[1] + 64)
    while len(pending):
        w = pop_order[:L]
        sub = pending[:, None]
        elig = np.isfinite(retrieval[sub, w]) & ~user_cats[sub, item_category[w]] & ~excluded[sub, w]
        rank = np.cumsum(elig, axis=1)
        done = (rank[:, -1] >= m) | (L >= N)
        keep = elig & (rank <= m) & done[:, None]
        r, c = np.nonzero(keep)  # row-major: each row's columns in popularity order
        items[pending[r], rank[r, c] - 1] = w[c]
        ok[pending[r], rank[r, c] - 1] = True
        pending = pending[~done]
        L = min(N, L * 4)
    return items, ok


def in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Return bool like ``keys``: whether each is in the sorted array ``sorted_keys`` (np.isin without its sort)."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys
