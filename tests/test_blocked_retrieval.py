"""The blocked retrieval of large catalogues (serving/blocked.py) gives the dense path's lists exactly.

The dense path is the straightforward reference: (users, n_items) score arrays, seen items at -inf,
``stable_top_n`` over the float64 tie keys of whole rows. The blocked path is forced on a small model
(``compact_min_items = 0``) that has every additive term: the popularity and category-bucket prior
columns, the item-kNN term, cold shoppers (0-2 events), novel-category candidate slots, and pairs of
items with identical vectors (exact ties, broken by the smaller item index).

Exactly, up to the order of near-ties: a BLAS may score two identical vectors a float32 step or two apart
(OpenBLAS handles the edge columns of a block with another kernel), in either path, so where two items'
scores differ only by rounding their order may differ; anywhere else the lists must be the same item for item.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import crossrec_core.serving.block_kernels as block_kernels
import crossrec_core.serving.blocked as blocked_module
import crossrec_core.serving.recommender as recommender_module
from crossrec_core.config import ItemEncoderConfig, ModelConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.models.calibration import Calibration
from crossrec_core.models.fusion import CrossRecNet
from crossrec_core.models.item_knn import ItemKNNRanker
from crossrec_core.models.trained import TrainedModel
from crossrec_core.serving.blocked import blocked_retrieve
from crossrec_core.serving.recommender import Recommender
from crossrec_core.serving.selection import _exact_top_n, stable_top_n

N_USERS, N_ITEMS, N_CATEGORIES = 160, 500, 12


def _model_and_seqs():
    rng = np.random.default_rng(0)
    item_cat = rng.integers(0, N_CATEGORIES, N_ITEMS)
    lengths = rng.choice([0, 1, 2, 3, 5, 9], N_USERS)  # about half the shoppers are cold (<= 2 events)
    rows = []
    for u, n in enumerate(lengths):
        home = rng.integers(0, N_CATEGORIES)
        pool = np.flatnonzero(item_cat == home)
        for t in range(n):
            item = rng.choice(pool) if rng.random() < 0.7 else rng.integers(0, N_ITEMS)
            rows.append((f"u{u}", f"i{item}", t, rng.choice(["view", "cart", "purchase"])))
    rows.append(("u_all", "i0", 0, "view"))  # every item known to the log: a catalogue of N_ITEMS
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]).drop_duplicates(["user_id", "item_id"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "category": [f"c{c:02d}" for c in item_cat],
                          "title": [f"item {i}" for i in range(N_ITEMS)]})
    ds = from_frames(inter, items, name="blocked")
    cfg = ModelConfig(item=ItemEncoderConfig(use_text=False))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fusion_candidates=30, fusion_novel_candidates=6))
    torch.manual_seed(0)
    net = CrossRecNet(cfg, n_items=ds.n_items, n_categories=ds.n_categories, n_event_types=len(ds.event_names),
                      attr_vocab_size=2, text_dim=0, n_vector_columns=0)
    net.item_encoder.item_category.copy_(torch.from_numpy(ds.item_category.astype(np.int64)))
    with torch.no_grad():
        w = net.item_encoder.id_emb.weight
        w.normal_(0.0, 0.5)
        # pairs of items (same category) with the same vector: exact ties
        for c in range(ds.n_categories):
            members = np.flatnonzero(ds.item_category == c)
            for a, b in zip(members[0:20:2], members[1:20:2]):
                w[b] = w[a]
    pop = np.bincount(ds.seqs.items, minlength=ds.n_items).astype(np.float32)
    cats = ds.item_category[ds.seqs.items]
    same = np.diff(ds.seqs.user_of_event()) == 0
    trans = np.zeros((ds.n_categories, ds.n_categories), dtype=np.float32)
    np.add.at(trans, (cats[:-1][same], cats[1:][same]), 1.0)
    model = TrainedModel(name="blocked", config=cfg, net=net, item_ids=ds.item_ids, item_titles=ds.item_titles,
                         category_names=ds.category_names, item_category=ds.item_category, event_names=ds.event_names,
                         popularity=pop, category_transitions=trans, metrics={}, data_fingerprint=ds.fingerprint(),
                         calibration=Calibration(basis="log_softmax"), fusion_rerank=True)
    model.knn = ItemKNNRanker().fit(ds, ds.seqs)
    model.knn_weight = 0.5
    model.set_prior_weights(0.7, 0.9)
    model.invalidate_cache()
    return model, ds, model.align(ds)


@pytest.fixture(scope="module", params=[(False, 1 << 20), (True, 1 << 20), (True, 1 << 11)],
                ids=["float32 walk", "bfloat16 walk", "bfloat16 walk, blocks of 256 items"])
def setup(request):
    """The dense reference and the blocked path, whose walk multiplies in float32 or in bfloat16 (each cell
    that may enter a list scored again in float32), over the catalogue in one block or in blocks of 256."""
    low, cells = request.param
    saved = blocked_module.BF16_WALK, blocked_module.BLOCK_CELLS
    blocked_module.BF16_WALK, blocked_module.BLOCK_CELLS = low, cells
    model, ds, seqs = _model_and_seqs()
    dense = Recommender(model)
    dense.compact_min_items = np.inf
    fast = Recommender(model)
    fast.compact_min_items = 0
    yield model, ds, seqs, dense, fast
    blocked_module.BF16_WALK, blocked_module.BLOCK_CELLS = saved


OPTIONS = [{}, {"cross_category_only": True}, {"include_categories": ["c00", "c03", "c07"]}, {"exclude_categories": ["c01"]},
           {"threshold": 0.02}, {"per_category_cap": 2, "diversity": 0.3}, {"n_candidates": 12}]


def _record_walks(monkeypatch) -> list:
    """Record every blocked walk as (margin, Retrieved), each pair appended at once: recommend_batch walks the
    next chunk in a second thread while it ranks this one, so two walks may overlap."""
    walks = []

    def record(*a, **k):
        got = blocked_retrieve(*a, **k)
        walks.append((a[8] if len(a) > 8 else k.get("margin"), got))
        return got

    monkeypatch.setattr(recommender_module, "blocked_retrieve", record)
    return walks


@pytest.mark.parametrize("kwargs", OPTIONS, ids=lambda k: ",".join(k) or "defaults")
def test_blocked_path_gives_the_dense_lists(setup, kwargs, monkeypatch):
    model, ds, seqs, dense, fast = setup
    walks = _record_walks(monkeypatch)
    users = np.arange(ds.n_users)
    ends = seqs.offsets[1:][users]
    want = dense.recommend_batch(seqs, users, ends, 10, batch_size=64, **kwargs)
    got = fast.recommend_batch(seqs, users, ends, 10, batch_size=64, **kwargs)
    assert walks, "the blocked path was not taken"
    cold = np.concatenate([c.cold for _, c in walks])
    assert cold.any() and (~cold).any()
    assert len(got) == len(want) > 0
    assert_same_lists_up_to_rounding_ties(got, want)
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-4, atol=1e-4)


def assert_same_lists_up_to_rounding_ties(got: pd.DataFrame, want: pd.DataFrame, tol: float = 1e-5) -> None:
    """The same shoppers and ranks, the same item at every rank except where the two lists' scores at that rank
    differ by float rounding only (two items tied up to an ulp or two, in either order)."""
    np.testing.assert_array_equal(got[["user_idx", "rank"]].to_numpy(), want[["user_idx", "rank"]].to_numpy())
    differ = got["item_idx"].to_numpy() != want["item_idx"].to_numpy()
    gap = np.abs(got["score"].to_numpy(np.float64) - want["score"].to_numpy(np.float64))
    assert (gap[differ] <= tol * np.maximum(1.0, np.abs(want["score"].to_numpy(np.float64)[differ]))).all(), \
        got[differ].assign(want_item=want["item_idx"][differ].to_numpy(), want_score=want["score"][differ].to_numpy())
    assert differ.mean() < 0.01  # swaps among near-ties only: a handful of slots


def test_same_lists_up_to_rounding_ties_tells_a_swap_from_a_different_item():
    n = 200  # 200 shoppers x 3 ranks; shopper 0's ranks 2 and 3 are tied up to a float32 step
    want = pd.DataFrame({"user_idx": np.repeat(np.arange(n), 3), "rank": np.tile([1, 2, 3], n),
                         "item_idx": np.tile([5, 7, 9], n), "score": np.tile([3.0, 2.0000019, 2.0], n)})
    swapped = want.copy()
    swapped.loc[[1, 2], ["item_idx", "score"]] = [[9, 2.0000019], [7, 2.0]]
    assert_same_lists_up_to_rounding_ties(swapped, want)
    other = want.copy()
    other.loc[1, ["item_idx", "score"]] = [8, 1.9]  # another item where the scores differ by more than rounding
    with pytest.raises(AssertionError):
        assert_same_lists_up_to_rounding_ties(other, want)


def test_blocked_pool_equals_the_dense_pool_with_novel_slots_and_ties(setup):
    """The candidate pool itself (retrieval top + the novel-category slots), cold rows included, is the
    dense one item for item, and no row needed the dense fallback."""
    model, ds, seqs, dense, fast = setup
    users = np.arange(ds.n_users)
    ends = seqs.offsets[1:][users]
    fast._rank(seqs, users[:2], ends[:2], recommender_module.RecommendOptions())  # builds the tables
    r = blocked_retrieve(fast, fast._tables, seqs, users, ends, None, 30, 0)
    assert r.exact.all() and r.cold.sum() > 10
    assert (fast._tables.warm_low is not None) == blocked_module.BF16_WALK
    d = dense._retrieve(seqs, users, ends)
    pool_fast = fast._candidate_pool(r.retrieval, 30, r.hist, r.cols)
    pool_dense = dense._candidate_pool(d.retrieval, 30, d.hist)
    np.testing.assert_array_equal(pool_fast, pool_dense)
    # values ~20-30 (float32 steps of 2e-6), summed in another order, and BLAS's order depends on its thread count:
    # measured up to 6 steps apart at one thread (1.1e-5 at 26.3), so the bound is relative
    np.testing.assert_allclose(r.best, d.best, rtol=2e-6, atol=1e-5)
    # every kept value is the dense one up to float rounding (a narrower product plus the prior constant):
    # warm scores sum terms of size ~20 (a few float32 steps of 2e-6), cold scores lie in [0, 1]
    for compact, full, cold_tol in ((r.retrieval, d.retrieval, 1e-6), (r.dot, d.dot, 1e-5), (r.knn, d.knn, 1e-5)):
        at = np.take_along_axis(full, r.cols, axis=1)
        live = np.isfinite(compact) & np.isfinite(at)
        assert live.sum() > 30 * len(users)
        for rows, tol in ((~r.cold, 1e-5), (r.cold, cold_tol)):
            np.testing.assert_allclose(compact[rows][live[rows]], at[rows][live[rows]], rtol=2e-6, atol=tol)
    novel = pool_dense[:, 24:]
    assert (~d.hist.categories(fast.item_category, fast.n_categories)[np.arange(len(users))[:, None], fast.item_category[novel]]).any()


@pytest.mark.parametrize("n", [None, 12])  # the fitted pool, and another size (its probability normaliser)
def test_candidates_for_the_fusion_fit_are_the_dense_ones(setup, monkeypatch, n):
    """Mining the fusion scorer's candidates on a large catalogue takes the blocked path: the same candidates,
    features and probabilities as the dense path; rows the blocks cannot decide exactly are mined dense."""
    model, ds, seqs, dense, fast = setup
    users = np.arange(ds.n_users)
    ends = seqs.offsets[1:][users]
    walks = _record_walks(monkeypatch)
    want = dense.candidates(seqs, users, ends, n)
    got = fast.candidates(seqs, users, ends, n)
    assert len(walks) == 1 and not any(c.cols is None for _, c in walks)
    np.testing.assert_array_equal(got.cand, want.cand)
    np.testing.assert_array_equal(got.valid, want.valid)
    np.testing.assert_array_equal(got.cold, want.cold)
    np.testing.assert_allclose(got.features, want.features, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.probability, want.probability, rtol=1e-4, atol=1e-6)
    # a row flagged inexact is mined again on the dense path and its row replaced
    inexact = lambda *a, **k: dataclasses.replace(r := blocked_retrieve(*a, **k), exact=np.arange(len(r.exact)) % 3 != 0)  # noqa: E731
    monkeypatch.setattr(recommender_module, "blocked_retrieve", inexact)
    spy = []
    plain = recommender_module.Recommender.candidates
    monkeypatch.setattr(recommender_module.Recommender, "candidates", lambda self, *a, **k: spy.append(k.get("dense", False)) or plain(self, *a, **k))
    again = fast.candidates(seqs, users, ends, n)
    assert spy == [False, False, True]  # those rows walk again with the wide margin (inexact here too), then go dense
    np.testing.assert_array_equal(again.cand, want.cand)
    np.testing.assert_allclose(again.features, want.features, rtol=1e-4, atol=1e-4)


def test_fast_stable_top_n_equals_the_whole_row_tie_keys():
    rng = np.random.default_rng(1)
    for _ in range(100):
        B, M = int(rng.integers(1, 20)), int(rng.integers(1, 300))
        s = (rng.integers(0, int(rng.integers(1, 40)), (B, M)) * 2.0**-12).astype(np.float32)  # many exact ties
        if rng.random() < 0.5:
            s += rng.normal(0, 1e-5, (B, M)).astype(np.float32)  # and near-ties across bucket edges
        if rng.random() < 0.3:
            s[rng.random((B, M)) < 0.5] = -np.inf
        n = int(rng.integers(1, M + 1))
        got, want = stable_top_n(s, n), _exact_top_n(s, n)
        finite = np.isfinite(np.take_along_axis(s, want, axis=1))
        assert ((got == want) | ~finite).all()  # -inf columns come in no particular order (never shown)


@pytest.mark.parametrize("low", [False, True], ids=["float32", "bfloat16"])
def test_the_walk_keeps_the_exact_best_among_near_ties(low):
    """2,000 items all but identical: their scores (~80) differ by ~0.01, where bfloat16 rounds to steps of 0.5,
    so the bfloat16 product alone would keep an arbitrary few. Every cell within the error bound of the
    threshold is scored again in float32: the kept best K are the exact best K, with their float32 values."""
    rng = np.random.default_rng(3)
    n, N, D, K = 8, 2000, 16, 26
    base = rng.normal(size=D)
    right = (base + rng.normal(scale=1e-3, size=(N, D))).astype(np.float32)
    left = (5 * base + rng.normal(scale=0.1, size=(n, D))).astype(np.float32)
    if low:
        vals = torch.mm(torch.from_numpy(left).bfloat16(), torch.from_numpy(right).bfloat16().T).float().numpy()
        rel, err_row, err_cell = block_kernels.BF16_REL, block_kernels.bf16_error_terms(left), block_kernels.bf16_item_terms(right)
        assert len(np.unique(vals[0])) < 10  # the bfloat16 scores alone cannot order these items
        # the bound holds for this torch's bfloat16 product, cell by cell (and is not loose by orders of magnitude)
        bound = rel * np.abs(vals) + err_row @ err_cell.T
        off = np.abs(vals - left.astype(np.float64) @ right.astype(np.float64).T)
        assert (off <= bound).all() and off.max() > bound.max() / 20
    else:
        vals, rel, err_row, err_cell = left @ right.T, 0.0, np.zeros((n, 2), np.float32), np.zeros((N, 2), np.float32)
    unf, filt = blocked_module._Stream.empty(n, K), blocked_module._Stream.empty(n, 1)
    block_kernels.kernels()["collect"](
        vals, block_kernels.chunk_max(vals), np.float32(rel), err_row, err_cell, low, left, right,
        np.zeros((n, 1), np.float32), np.zeros(N, np.int64), np.zeros((1, 1), bool), False, 0, np.zeros(n + 1, np.int64),
        np.zeros(0, np.int64), np.zeros(0, np.float32), unf.vals, unf.pos, unf.cnt, unf.theta, filt.vals, filt.pos, filt.cnt, filt.theta)
    exact = left.astype(np.float64) @ right.astype(np.float64).T
    for r in range(n):
        kept = unf.pos[r, : unf.cnt[r]]
        best = kept[np.argsort(-unf.vals[r, : unf.cnt[r]], kind="stable")[:K]]
        np.testing.assert_array_equal(np.sort(best), np.sort(np.argsort(-exact[r])[:K]))
        np.testing.assert_allclose(unf.vals[r, : unf.cnt[r]], exact[r, kept], rtol=1e-6)


def test_rows_the_first_walk_cannot_decide_walk_again_with_a_wide_margin_before_the_dense_path(setup, monkeypatch):
    """With no margin past the pool, tie buckets cross the kept set's edge: those rows walk again with
    WIDE_KEEP_MARGIN, which decides them, and the lists are still the dense ones; no row takes the dense path."""
    model, ds, seqs, dense, fast = setup
    monkeypatch.setattr(blocked_module, "KEEP_MARGIN", 0)
    walks = _record_walks(monkeypatch)
    dense_rows = []
    plain = recommender_module.Recommender._retrieve
    monkeypatch.setattr(recommender_module.Recommender, "_retrieve", lambda self, s, u, e: dense_rows.append(len(u)) or plain(self, s, u, e))
    users = np.arange(ds.n_users)
    ends = seqs.offsets[1:][users]
    want = dense.recommend_batch(seqs, users, ends, 10, batch_size=64)
    dense_rows.clear()
    got = fast.recommend_batch(seqs, users, ends, 10, batch_size=64)
    margins = [m for m, _ in walks]
    assert None in margins and blocked_module.WIDE_KEEP_MARGIN in margins  # a first walk, and a second for some rows
    first = [c for m, c in walks if m is None]
    wide = [c for m, c in walks if m == blocked_module.WIDE_KEEP_MARGIN]
    assert sum(int((~c.exact).sum()) for c in first) == sum(len(c.exact) for c in wide) > 0
    assert all(c.exact.all() for c in wide)
    assert dense_rows == []
    assert_same_lists_up_to_rounding_ties(got, want)


def _cold_reference(ev_vecs, ev_start, ev_own, ev_bucket, unit, bucket, own, flow, cat, pop, w):
    """The cold score written as a loop: category flow and popularity, plus the best cosine (0 at least) over the
    row's items, same-bucket items adding their overlap."""
    S = ev_vecs.astype(np.float64) @ unit.T.astype(np.float64)
    want = np.zeros((len(ev_start) - 1, len(cat)))
    for r in range(len(ev_start) - 1):
        for j in range(len(cat)):
            sim = 0.0
            for e in range(ev_start[r], ev_start[r + 1]):
                c = S[e, j] + (ev_own[e] * own[j] if ev_bucket[e] >= 0 and ev_bucket[e] == bucket[j] else 0.0)
                sim = max(sim, c)
            want[r, j] = w[0] * flow[r, cat[j]] + w[1] * pop[j] + w[2] * sim
    return want


def _cold_inputs(seed: int):
    rng = np.random.default_rng(seed)
    counts = np.array([1, 0, 2, 3, 1, 0, 2])
    ev_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    E, n, D, C = int(counts.sum()), 700, 9, 6
    # unit vectors: D dense columns and, for items in a bucket, their one-hot value (shared by the bucket's items)
    bucket = rng.integers(-1, 3, n)
    full = rng.normal(size=(n, D + 1))
    full[bucket < 0, D] = 0.0
    full = full / np.linalg.norm(full, axis=1, keepdims=True)
    unit, own = full[:, :D].astype(np.float32), np.abs(full[:, D]).astype(np.float32)
    picked = rng.integers(0, n, E)  # the rows' items: each has a cell of cosine 1 (its own)
    ev_vecs, ev_own, ev_bucket = unit[picked], own[picked], bucket[picked]
    flow = rng.uniform(0, 1, (len(counts), C)).astype(np.float32)
    cat = np.sort(rng.integers(0, C, n))  # positions are in category order
    pop = rng.uniform(0, 1, n) ** 6  # a few popular items, a long tail
    pop = pop[np.lexsort((-pop, cat))].astype(np.float32)  # the popular ones first within their category
    w = [np.float32(x) for x in (0.4, 0.3, 0.3)]
    return ev_vecs, ev_start, ev_own, ev_bucket, unit, bucket, own, flow, cat, pop, w


def test_the_cold_block_is_the_per_cell_score():
    """cold_block scores every cell of a block (no threshold) as the loop does, for a block starting anywhere."""
    ev_vecs, ev_start, ev_own, ev_bucket, unit, bucket, own, flow, cat, pop, w = _cold_inputs(5)
    want = _cold_reference(ev_vecs, ev_start, ev_own, ev_bucket, unit, bucket, own, flow, cat, pop, w)
    s, e = 130, 611  # a block that does not start or end on a chunk of 64
    rows = len(ev_start) - 1
    got, cmax = block_kernels.cold_block(ev_vecs, ev_start, ev_own, ev_bucket, np.ascontiguousarray(unit.T), s, bucket[s:e],
                                         own[s:e], flow, cat[s:e], pop[s:e], *w, np.full(rows, -np.inf, np.float32),
                                         np.zeros((rows, (e - s + 63) // 64), bool))
    np.testing.assert_allclose(got, want[:, s:e], rtol=0, atol=2e-6)
    np.testing.assert_array_equal(cmax, block_kernels.chunk_max(got))
    assert (got[1] == (w[0] * flow[1, cat[s:e]] + w[1] * pop[s:e])).all()  # a row without items: no similarity term


def test_the_cold_block_skips_only_chunks_that_cannot_reach_the_threshold(monkeypatch):
    """With a threshold per row, a chunk is left unscored (its max -inf) only where none of its cells reaches it,
    unless forced; every other chunk is scored exactly; and cold_floor is at most the n-th best unseen score."""
    ev_vecs, ev_start, ev_own, ev_bucket, unit, bucket, own, flow, cat, pop, w = _cold_inputs(6)
    want = _cold_reference(ev_vecs, ev_start, ev_own, ev_bucket, unit, bucket, own, flow, cat, pop, w)
    rows, n = want.shape
    theta = np.quantile(want, 0.9, axis=1).astype(np.float32)  # the best tenth of each row may pass
    force = np.zeros((rows, (n + 63) // 64), bool)
    force[0, 3] = True
    got, cmax = block_kernels.cold_block(ev_vecs, ev_start, ev_own, ev_bucket, np.ascontiguousarray(unit.T), 0, bucket, own,
                                         flow, cat, pop, *w, theta, force)
    skipped = np.isneginf(cmax)
    assert skipped.any() and not skipped.all()
    chunk = np.arange(n) // 64
    for r in range(rows):
        for k in range(force.shape[1]):
            cells = chunk == k
            if skipped[r, k]:
                assert not force[r, k]
                assert (want[r, cells] < theta[r]).all()
            else:
                np.testing.assert_allclose(got[r, cells], want[r, cells], rtol=0, atol=2e-6)
                assert cmax[r, k] == got[r, cells].max()
    assert not skipped[0, 3]
    # the floor: at most the keep-th best unseen score (the rows' own items are seen)
    keep, m = 50, int(np.diff(ev_start).max())
    C, n_top = flow.shape[1], keep + m
    top_pos = np.full((C, n_top), -1, np.int64)
    for c in range(C):
        p = np.flatnonzero(cat == c)
        p = p[np.argsort(-pop[p], kind="stable")][:n_top]
        top_pos[c, : len(p)] = p
    top_pop = np.where(top_pos >= 0, pop[np.maximum(top_pos, 0)], -np.inf).astype(np.float32)
    seen_pos = np.full((rows, m), -1, np.int64)
    for r in range(rows):
        own_items = np.unique(picked_of(ev_vecs, unit)[ev_start[r] : ev_start[r + 1]])
        seen_pos[r, : len(own_items)] = own_items
    args = (ev_vecs, ev_start, ev_own, ev_bucket, top_pos, top_pop, np.ascontiguousarray(unit.T), bucket, own, seen_pos, keep, *w)
    floor = block_kernels.cold_floor(flow, *args)
    flow_pop_only = np.array([np.sort(w[0] * flow[r, cat] + w[1] * pop)[::-1][n_top - 1] for r in range(rows)])
    monkeypatch.setattr(block_kernels, "FLOOR_CATEGORIES", 2)  # from each row's two likeliest categories only
    floor_two = block_kernels.cold_floor(flow, *args)
    for r in range(rows):
        unseen = np.setdiff1d(np.arange(n), seen_pos[r])
        kth = np.sort(want[r, unseen])[::-1][keep - 1]
        assert floor[r] <= kth and floor_two[r] <= kth
    assert (floor > flow_pop_only).any()  # the exact scores of the likeliest items lift it above flow and popularity
    assert (floor_two > -np.inf).all() and (floor_two != floor).any()


def picked_of(ev_vecs: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The item each event is (its vector's row in ``unit``)."""
    return np.array([int(np.flatnonzero((unit == v).all(axis=1))[0]) for v in ev_vecs])


def test_overlapping_walks_restore_the_thread_settings_once_after_the_last():
    """recommend_batch walks the next chunk while it ranks this one: the walks' one-thread torch setting is
    process-wide, so the first walk to start sets it and only the last to end restores it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = blocked_module._one_thread_libraries(), blocked_module._one_thread_libraries()
        first.__enter__()
        assert torch.get_num_threads() == 1
        second.__enter__()
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1  # the second walk still runs
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
