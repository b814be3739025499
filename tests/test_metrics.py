import math

import numpy as np
import pytest

from crossrec_core.evaluation import metrics as M
from crossrec_core.serving.scoring import one_user_sequences
from crossrec_core.data.dataset import Sequences


def test_ranking_metrics_match_hand_computed_values():
    topk = np.array([[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 9], [7, -1, -1, -1]])
    targets = np.array([7, 1, 3, -1])  # rank 3, rank 1, miss, unknown target (never a hit)
    m = M.per_user_ranking_metrics(topk, targets, k=4)
    np.testing.assert_allclose(m["HR"], [1, 1, 0, 0])
    np.testing.assert_allclose(m["NDCG"], [1 / math.log2(4), 1.0, 0, 0])
    np.testing.assert_allclose(m["MRR"], [1 / 3, 1.0, 0, 0])
    np.testing.assert_allclose(m["P"], [0.25, 0.25, 0, 0])
    np.testing.assert_allclose(m["R"], [1, 1, 0, 0])
    np.testing.assert_allclose(m["F1"], [2 / 5, 2 / 5, 0, 0])  # 2PR/(P+R) = 2/(K+1)
    means = M.mean_ranking_metrics(topk, targets, k=4)
    assert means["HR"] == pytest.approx(0.5)
    assert means["NDCG"] == pytest.approx((0.5 + 1) / 4)


def test_k_truncates_the_list():
    topk = np.array([[5, 6, 7, 8]])
    assert M.hit_rate(topk, np.array([7]), k=2)[0] == 0.0
    assert M.hit_rate(topk, np.array([7]), k=3)[0] == 1.0
    assert M.ndcg(topk, np.array([7]), k=10)[0] == pytest.approx(0.5)  # 1/log2(4)
    assert M.target_ranks(topk, np.array([8]))[0] == 4
    with pytest.raises(ValueError):
        M.per_user_ranking_metrics(topk, np.array([7]), k=0)


def test_auc_on_hand_example_with_ties():
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.5, 0.5, 0.1])
    # positive pairs: 0.9 beats all 3 negatives (3); 0.5 beats 0.1 (1), ties 0.5 (0.5), loses to 0.8 -> 4.5 / 6
    assert M.auc(labels, scores) == pytest.approx(4.5 / 6)
    assert M.auc(np.array([1, 1, 0]), np.array([0.3, 0.2, 0.9])) == 0.0
    assert math.isnan(M.auc(np.array([1, 1]), np.array([0.1, 0.2])))
    np.testing.assert_allclose(M.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])


def test_coverage_and_category_coverage():
    topk = np.array([[0, 1, -1], [1, 2, -1]])
    assert M.catalogue_coverage(topk, n_items=6) == pytest.approx(3 / 6)
    item_category = np.array([0, 0, 1, 2, 3, 3])
    assert M.category_coverage(topk, item_category, 4) == pytest.approx(2 / 4)


def test_intra_list_diversity_categories_and_vectors():
    item_category = np.array([0, 0, 1])
    topk = np.array([[0, 1, 2], [0, 1, -1], [2, -1, -1]])
    div = M.intra_list_diversity(topk, item_category=item_category)
    # list 1: pairs (0,1) same, (0,2) diff, (1,2) diff -> 2/3; list 2: one same pair -> 0; list 3: no pair
    np.testing.assert_allclose(div[:2], [2 / 3, 0.0])
    assert math.isnan(div[2])
    vecs = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    div_v = M.intra_list_diversity(np.array([[0, 1], [0, 2]]), item_vectors=vecs)
    np.testing.assert_allclose(div_v, [1.0, 0.0], atol=1e-6)


def test_novelty_is_mean_self_information():
    popularity = np.array([4.0, 2.0, 1.0, 1.0, 0.0])  # total 8
    nov = M.novelty(np.array([[0, 1], [2, -1], [4, 0]]), popularity)
    np.testing.assert_allclose(nov, [(1 + 2) / 2, 3.0, (3 + 1) / 2])  # -log2(4/8)=1, -log2(2/8)=2, -log2(1/8)=3


def test_cross_category_share_counts_categories_absent_from_history():
    item_category = np.array([0, 0, 1, 2])
    seqs = Sequences(
        offsets=np.array([0, 2, 3]), items=np.array([0, 2, 3], dtype=np.int32),
        times=np.arange(3), events=np.zeros(3, dtype=np.int16),
    )
    topk = np.array([[1, 3], [0, 2]])  # user 0 saw cats {0,1}: 1 (cat 0) old, 3 (cat 2) new; user 1 saw {2}
    share = M.cross_category_share(topk, item_category, seqs, np.array([0, 1]), np.array([2, 3]))
    np.testing.assert_allclose(share, [0.5, 1.0])
    # with an empty history everything is new
    one = one_user_sequences(np.array([0]))
    assert M.cross_category_share(np.array([[1]]), item_category, one, np.array([0]), np.array([0]))[0] == 1.0


def test_history_positions_flattens_histories():
    seqs = Sequences(np.array([0, 3, 5]), np.arange(5, dtype=np.int32), np.arange(5), np.zeros(5, dtype=np.int16))
    rows, pos = seqs.history_positions(np.array([1, 0]), np.array([5, 2]))
    np.testing.assert_array_equal(rows, [0, 0, 1, 1])
    np.testing.assert_array_equal(pos, [3, 4, 0, 1])


def test_paired_bootstrap_interval_covers_the_mean_and_flags_real_differences():
    from crossrec_core.evaluation.metrics import paired_bootstrap

    rng = np.random.default_rng(1)
    base = (rng.random(4000) < 0.1).astype(float)
    better = np.maximum(base, (rng.random(4000) < 0.1).astype(float))  # strictly more hits, same users
    d = paired_bootstrap(better, base, n_boot=500)
    assert d.n_users == 4000
    assert d.low <= d.mean <= d.high
    assert d.mean == pytest.approx(better.mean() - base.mean())
    assert d.significant and d.low > 0
    # two methods that differ by one hit in 500 users: the interval straddles 0
    a = np.zeros(500)
    b = np.zeros(500)
    a[:3], b[:2] = 1.0, 1.0
    tie = paired_bootstrap(a, b, n_boot=500)
    assert tie.low <= 0 <= tie.high and not tie.significant
    # identical methods: a zero-width interval at 0; reproducible with the seed
    same = paired_bootstrap(base, base, n_boot=100)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(better, base, n_boot=200, seed=3) == paired_bootstrap(better, base, n_boot=200, seed=3)
    assert math.isnan(paired_bootstrap(np.zeros(0), np.zeros(0)).mean)
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
