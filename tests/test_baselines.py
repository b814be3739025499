import numpy as np
import pandas as pd
import pytest

from crossrec_core.evaluation.baselines import (
    CategoryTransitionRanker,
    ItemKNNRanker,
    PopularityRanker,
    default_baselines,
)
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import ConfigError, NotTrainedError
from crossrec_core.serving.scoring import Ranker, one_user_sequences

REAL = "/work/shared/data"


def _ds(rows, cats):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": list(cats), "category": list(cats.values())})
    return from_frames(inter, items, name="tiny")


def _score_one(ranker, ds, item_ids):
    seqs = one_user_sequences(ds.item_index(item_ids))
    return ranker.score_histories(seqs, np.array([0]), np.array([len(item_ids)]))[0]


def test_popularity_counts_and_recency():
    ds = _ds(
        [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u3", "c", 100), ("u4", "c", 100), ("u5", "a", 4)],
        {"a": "X", "b": "X", "c": "Y"},
    )
    pop = PopularityRanker().fit(ds, ds.seqs)
    np.testing.assert_allclose(pop.scores_, [3, 1, 2])
    assert isinstance(pop, Ranker)
    s = pop.score_histories(ds.seqs, np.array([0, 1]), np.array([1, 3]))
    assert s.shape == (2, 3) and s.dtype == np.float32
    recent = PopularityRanker(half_life=1.0).fit(ds, ds.seqs)
    assert int(np.argmax(recent.scores_)) == ds.item_index(["c"])[0]  # c is newest: wins despite fewer events
    assert recent.scores_[ds.item_index(["c"])[0]] == pytest.approx(2.0)


def test_item_knn_recommends_the_co_occurring_item():
    rows = []
    for u in range(6):  # a and b are always bought together
        rows += [(f"p{u}", "a", 1), (f"p{u}", "b", 2)]
    for u in range(10):  # c is the most popular item overall but never next to a
        rows += [(f"q{u}", "c", 1), (f"q{u}", "d", 2)]
    ds = _ds(rows, {"a": "X", "b": "Y", "c": "Z", "d": "Z"})
    knn = ItemKNNRanker(window=3).fit(ds, ds.seqs)
    scores = _score_one(knn, ds, ["a"])
    order = ds.item_ids[np.argsort(-scores)]
    assert order[0] == "b"
    assert scores[ds.item_index(["b"])[0]] > scores[ds.item_index(["c"])[0]]
    nb, sim = knn.neighbours(int(ds.item_index(["a"])[0]))
    assert list(ds.item_ids[nb]) == ["b"]
    assert sim[0] == pytest.approx(6 / np.sqrt(6 * 6))
    # empty history falls back to popularity order
    empty = knn.score_histories(one_user_sequences(np.array([], dtype=np.int32)), np.array([0]), np.array([0]))[0]
    assert ds.item_ids[int(np.argmax(empty))] in {"c", "d"}


def test_item_knn_window_limits_pairs_and_recency_weights():
    ds = _ds([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)], {"a": "X", "b": "X", "c": "X"})
    knn = ItemKNNRanker(window=1).fit(ds, ds.seqs)
    assert list(ds.item_ids[knn.neighbours(0)[0]]) == ["b"]  # a-c are 2 apart: not neighbours
    knn2 = ItemKNNRanker(window=2, decay=0.5).fit(ds, ds.seqs)
    s = _score_one(knn2, ds, ["a", "c"])  # b neighbours both; the older item a counts half
    assert s[1] == pytest.approx(1.5, rel=1e-4)


def test_next_item_rules_follow_the_order_co_occurrence_ignores():
    # every shopper buys a tent, then its stove, then its gas: co-occurrence cannot tell what comes next
    rows = []
    for u in range(5):
        rows += [(f"u{u}", "tent", 1), (f"u{u}", "stove", 2), (f"u{u}", "gas", 3)]
    ds = _ds(rows, {"tent": "Camping", "stove": "Cooking", "gas": "Fuel"})
    tent, stove, gas = (int(i) for i in ds.item_index(["tent", "stove", "gas"]))
    both = ItemKNNRanker(window=1).fit(ds, ds.seqs)
    s = _score_one(both, ds, ["stove"])
    assert s[tent] == pytest.approx(s[gas], rel=1e-5)  # a stove neighbours the tent as much as the gas
    rules = ItemKNNRanker(window=2, directed=True).fit(ds, ds.seqs)
    s = _score_one(rules, ds, ["stove"])
    assert s[gas] > 100 * s[tent]  # only what came after a stove counts
    nb, sim = rules.neighbours(tent)
    assert list(ds.item_ids[nb]) == ["stove", "gas"]  # 1 / lag: the next item first
    np.testing.assert_allclose(sim, [5 / 5, 0.5 * 5 / 5])  # P(b follows a), each time 1 / lag over n(tent)
    assert rules.params == {"window": 2, "n_recent": 20, "decay": 0.8, "directed": True}
    assert ItemKNNRanker.next_items().params["directed"] is True


def test_category_transition_recommends_popular_item_of_following_category():
    rows = []
    for u in range(8):  # shoppers go from tents (T) to boots (B)
        rows += [(f"u{u}", "tent1", 1), (f"u{u}", "boot_pop" if u < 6 else "boot_rare", 2)]
    for u in range(3):
        rows += [(f"v{u}", "mug", 1), (f"v{u}", "mug2", 2)]
    ds = _ds(rows, {"tent1": "T", "boot_pop": "B", "boot_rare": "B", "mug": "M", "mug2": "M"})
    ranker = CategoryTransitionRanker().fit(ds, ds.seqs)
    counts = ds.seqs.category_transitions(ds.item_category, ds.n_categories)
    t, b = ds.category_index(["T", "B"])
    assert counts[t, b] == 8 and counts.sum() == 11
    scores = _score_one(ranker, ds, ["tent1"])
    scores[ds.item_index(["tent1"])[0]] = -np.inf
    assert ds.item_ids[int(np.argmax(scores))] == "boot_pop"
    proba = ranker.category_proba(one_user_sequences(ds.item_index(["tent1"])), np.array([0]), np.array([1]))
    assert proba.sum() == pytest.approx(1.0, rel=1e-5) and int(np.argmax(proba)) == b


def test_unfitted_and_bad_config_raise_plain_errors():
    with pytest.raises(NotTrainedError, match="fit"):
        PopularityRanker().score_histories(one_user_sequences(np.array([0])), np.array([0]), np.array([1]))
    with pytest.raises(ConfigError):
        ItemKNNRanker(window=0)
    with pytest.raises(ConfigError):
        CategoryTransitionRanker(decay=0.0)
    with pytest.raises(ConfigError):
        PopularityRanker(half_life=-1)
    assert set(default_baselines()) == {"popularity", "item-kNN", "next-item rules", "category-transition"}


def test_baselines_fit_only_on_given_sequences():
    ds = _ds([("u", "a", 1), ("u", "b", 2), ("v", "c", 1)], {"a": "X", "b": "X", "c": "Y"})
    train = ds.seqs.truncate(np.array([1, 3]))  # hide u's second event
    pop = PopularityRanker().fit(ds, train)
    np.testing.assert_allclose(pop.scores_, [1, 0, 1])
    knn = ItemKNNRanker().fit(ds, train)
    assert len(knn.sim_items_) == 0  # the only pair (a, b) was hidden


@pytest.mark.slow
def test_item_knn_runs_on_the_55k_item_taobao_log():
    inter = pd.read_csv(f"{REAL}/taobao-userbehavior/interactions.csv", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(f"{REAL}/taobao-userbehavior/items.csv", dtype=str)
    ds = from_frames(inter, items, name="taobao")
    assert ds.n_items > 50_000
    knn = ItemKNNRanker().fit(ds, ds.seqs)
    users = np.arange(64)
    s = knn.score_histories(ds.seqs, users, ds.seqs.offsets[1:][users])
    assert s.shape == (64, ds.n_items) and np.isfinite(s).all()
    # a user's own recent items have neighbours, so some item outscores the pure popularity tie-break
    assert (s.max(axis=1) > 1e-5).mean() > 0.5
