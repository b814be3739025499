import json
import math

import numpy as np
import pandas as pd
import pytest

from crossrec_core.evaluation.baselines import PopularityRanker, default_baselines
from crossrec_core.data.dataset import Sequences, from_frames
from crossrec_core.errors import ConfigError, DataError
from crossrec_core.evaluation.evaluator import (
    evaluate_rankers,
    split_targets,
    top_k_excluding_history,
    training_sequences,
)

REAL = "/work/shared/data"
SCORES = {"d": 5.0, "c": 4.0, "b": 3.0, "e": 2.0, "a": 1.0}


def _tiny():
    rows = [
        ("same", "a", 1), ("same", "b", 2),  # target b (X) after a (X): same category
        ("switch", "c", 1), ("switch", "a", 2), ("switch", "e", 3),  # target e (Y) after a (X); Y seen before
        ("novel", "a", 1), ("novel", "d", 2),  # target d (Z) never seen
        ("cold", "a", 1),  # one event: not evaluated
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": list("abcde"), "category": ["X", "X", "Y", "Z", "Y"]})
    return from_frames(inter, items, name="tiny")


class FixedRanker:
    """Test double: the same fixed score vector for every history, in dataset item space."""

    def __init__(self, ds, name="fixed"):
        self.name = name
        self.scores = np.array([SCORES[i] for i in ds.item_ids], dtype=np.float32)

    def score_histories(self, seqs, users, ends):
        return np.tile(self.scores, (len(users), 1))


class ModelDouble:
    """Test double of a TrainedModel with its own vocabulary: d, c, b, a (no e)."""

    name = "model"

    def __init__(self):
        self.item_ids = np.array(["d", "c", "b", "a"], dtype=object)
        self.category_names = np.array(["X", "Y", "Z"], dtype=object)
        self.item_category = np.array([2, 1, 0, 0], dtype=np.int32)
        self.scores = np.array([SCORES[i] for i in self.item_ids], dtype=np.float32)

    def item_index(self, ids):
        lookup = {v: i for i, v in enumerate(self.item_ids)}
        return np.array([lookup.get(str(i), -1) for i in ids], dtype=np.int64)

    def align(self, ds):
        m = self.item_index(ds.item_ids)[ds.seqs.items]
        keep = m >= 0
        counts = np.add.reduceat(keep.astype(np.int64), ds.seqs.offsets[:-1]) if ds.n_events else np.zeros(ds.n_users)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Sequences(offsets, m[keep].astype(np.int32), ds.seqs.times[keep], ds.seqs.events[keep])

    def score_histories(self, seqs, users, ends):
        return np.tile(self.scores, (len(users), 1))


def test_subsets_contain_exactly_the_switch_and_novel_users():
    ds = _tiny()
    t = split_targets(ds, "test")
    users = list(ds.user_ids[t.users])
    assert users == ["same", "switch", "novel"]
    assert list(t.switch) == [False, True, True]
    assert list(t.novel) == [False, False, True]
    assert list(ds.item_ids[t.targets]) == ["b", "e", "d"]
    v = split_targets(ds, "valid")  # only 'switch' has 3 events: target a (X) after c (Y)
    assert list(ds.user_ids[v.users]) == ["switch"] and v.switch[0] and v.novel[0]
    with pytest.raises(ConfigError, match="split"):
        split_targets(ds, "train")


def test_evaluate_fixed_ranker_matches_hand_computed_metrics():
    ds = _tiny()
    res = evaluate_rankers(ds, [FixedRanker(ds)], k=3)
    # history items excluded: same -> d c b (rank 3), switch -> d b e (rank 3), novel -> d (rank 1)
    assert res.subset_sizes == {"all": 3, "switch": 2, "novel": 1}
    assert res.value("fixed", "all", "HR@3") == pytest.approx(1.0)
    assert res.value("fixed", "all", "NDCG@3") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert res.value("fixed", "switch", "NDCG@3") == pytest.approx(0.75)
    assert res.value("fixed", "novel", "MRR@3") == pytest.approx(1.0)
    assert res.value("fixed", "all", "P@3") == pytest.approx(1 / 3)
    res2 = evaluate_rankers(ds, {"fixed": FixedRanker(ds)}, k=2)
    assert res2.value("fixed", "all", "HR@2") == pytest.approx(1 / 3)
    m = res2.metrics
    assert set(m.columns) == {"method", "subset", "metric", "value", "n_users"}
    assert set(m[m.subset == "switch"]["n_users"]) == {2}
    # per-category breakdown by the target's category: X (b), Y (e), Z (d)
    pc = res.per_category[res.per_category.metric == "HR@3"].set_index("category")
    assert list(pc.index) == ["X", "Y", "Z"] and list(pc["n_users"]) == [1, 1, 1]
    # per-user scores are kept for paired comparisons: fixed vs itself is exactly 0, vs popularity paired
    assert list(res.per_user["fixed"]["NDCG@3"]) == pytest.approx([0.5, 0.5, 1.0])
    assert res.difference("fixed", "fixed", "switch").mean == 0.0
    res3 = evaluate_rankers(ds, {"fixed": FixedRanker(ds), "pop": PopularityRanker()}, k=3)
    d = res3.difference("fixed", "pop", "all", "HR@3", n_boot=200)
    assert d.n_users == 3
    assert d.mean == pytest.approx(res3.value("fixed", "all", "HR@3") - res3.value("pop", "all", "HR@3"))
    with pytest.raises(KeyError, match="subset"):
        res3.difference("fixed", "pop", "lapsed")
    with pytest.raises(KeyError, match="nobody"):
        res3.difference("fixed", "nobody")


def test_seen_items_are_never_recommended():
    ds = _tiny()
    seqs = ds.seqs
    users = np.arange(ds.n_users)
    ends = seqs.offsets[1:]
    scores = np.tile(np.arange(ds.n_items, dtype=np.float32)[::-1].copy(), (ds.n_users, 1))
    top = top_k_excluding_history(scores, seqs, users, ends, k=5)
    for u in users:
        hist = set(seqs.user(u)[0].tolist())
        rec = [i for i in top[u] if i >= 0]
        assert not hist & set(rec)
        assert len(rec) == ds.n_items - len(hist)  # the rest is padding (-1)
    # ties break toward the smaller item_idx
    flat = top_k_excluding_history(np.zeros((1, 5), np.float32), seqs, np.array([3]), np.array([0]), k=3)
    assert flat.tolist() == [[0, 1, 2]]


def test_model_targets_unknown_to_the_model_count_as_misses():
    ds = _tiny()
    res = evaluate_rankers(ds, [ModelDouble(), FixedRanker(ds)], k=3)
    # model space lacks e: same -> d c b (hit at 3), switch -> target e unknown (miss), novel -> d (hit at 1)
    assert res.value("model", "all", "HR@3") == pytest.approx(2 / 3)
    assert res.value("model", "switch", "HR@3") == pytest.approx(0.5)
    assert res.value("fixed", "switch", "HR@3") == pytest.approx(1.0)
    assert res.methods == ["model", "fixed"]


def test_baselines_are_fitted_without_the_targets():
    ds = _tiny()
    pop = PopularityRanker()
    evaluate_rankers(ds, [pop], split="test")
    expected = np.bincount(ds.seqs.items, minlength=ds.n_items) - np.bincount(
        split_targets(ds, "test").targets, minlength=ds.n_items
    )
    np.testing.assert_allclose(pop.scores_, expected)
    evaluate_rankers(ds, [pop], split="valid")
    np.testing.assert_allclose(pop.scores_, np.bincount(training_sequences(ds, "valid").items, minlength=ds.n_items))
    assert training_sequences(ds, "valid").n_events == ds.n_events - 3 - 1  # 3 test targets + 1 valid target


def test_result_text_and_json():
    ds = _tiny()
    res = evaluate_rankers(ds, [FixedRanker(ds)], k=3)
    text = res.to_text()
    assert "fixed" in text and "HR@3" in text and "novel users (n=1)" in text
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) == {"dataset", "split", "k", "n_users", "metrics", "per_category", "seconds", "calibration", "warnings"}
    assert d["metrics"]["fixed"]["novel"]["HR@3"] == 1.0
    assert set(d["metrics"]["fixed"]) == {"all", "switch", "novel"}
    assert {"coverage", "diversity", "novelty", "cross_share", "category_coverage"} <= set(d["metrics"]["fixed"]["all"])


def test_bad_input_raises_plain_errors():
    ds = _tiny()
    with pytest.raises(ConfigError):
        evaluate_rankers(ds, [], k=3)
    with pytest.raises(ConfigError):
        evaluate_rankers(ds, [FixedRanker(ds)], k=0)
    one = from_frames(pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}))
    with pytest.raises(DataError, match="no user"):
        evaluate_rankers(one, [PopularityRanker()])


def test_real_log_slice_with_baselines():
    inter = pd.read_csv(f"{REAL}/hm-fashion-oneday/interactions.csv", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(f"{REAL}/hm-fashion-oneday/items.csv", dtype=str)
    users = inter["user_id"].drop_duplicates().iloc[:800]
    ds = from_frames(inter[inter["user_id"].isin(users)], items, name="hm-slice")
    res = evaluate_rankers(ds, default_baselines(), k=10, batch_size=100)
    sizes = res.subset_sizes
    assert 0 < sizes["novel"] <= sizes["switch"] <= sizes["all"]
    vals = res.metrics[res.metrics.metric.isin(["HR@10", "NDCG@10", "coverage", "cross_share"])]["value"]
    assert ((vals >= 0) & (vals <= 1)).all()
    assert res.value("item-kNN", "all", "coverage") > res.value("popularity", "all", "coverage")
    sampled = evaluate_rankers(ds, [PopularityRanker()], k=10, max_users=50, seed=1)
    assert sampled.subset_sizes["all"] == 50
    assert not math.isnan(sampled.value("popularity", "all", "NDCG@10"))


def test_ranker_space_maps_history_ends_past_dropped_items():
    from crossrec_core.evaluation.evaluator import ranker_space

    ds = _tiny()
    model = ModelDouble()
    model.item_ids = np.array(["d", "b", "a", "e"], dtype=object)  # knows e but not c
    t = split_targets(ds, "test")
    space = ranker_space(model, ds, t.users, t.ends, t.targets)
    hist = [list(model.item_ids[space.seqs.items[space.seqs.offsets[u]:e]]) for u, e in zip(t.users, space.ends)]
    assert hist == [["a"], ["a"], ["a"]]  # switch's c is unknown to the model and dropped
    assert list(model.item_ids[space.targets]) == ["b", "e", "d"]
    assert list(ds.item_ids[space.to_ds]) == ["d", "b", "a", "e"]
