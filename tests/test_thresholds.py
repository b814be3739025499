import numpy as np
import pandas as pd
import pytest

from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.evaluation.thresholds import sweep, threshold_curve

SCORES = {"d": 5.0, "c": 4.0, "b": 3.0, "e": 2.0, "a": 1.0}
PROBA = {"d": 0.9, "c": 0.2, "b": 0.6, "e": 0.4, "a": 0.1}


def _tiny():
    rows = [("same", "a", 1), ("same", "b", 2), ("switch", "c", 1), ("switch", "a", 2), ("switch", "e", 3),
            ("novel", "a", 1), ("novel", "d", 2)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": list("abcde"), "category": ["X", "X", "Y", "Z", "Y"]})
    return from_frames(inter, items, name="tiny")


class ProbaDouble:
    """Test double of a probabilistic ranker: fixed retrieval scores and a fixed probability per item."""

    name = "proba"

    def __init__(self, ds):
        self.s = np.array([SCORES[i] for i in ds.item_ids], dtype=np.float32)
        self.p = np.array([PROBA[i] for i in ds.item_ids], dtype=np.float32)

    def score_histories(self, seqs, users, ends):
        return np.tile(self.s, (len(users), 1))

    def fusion_proba(self, seqs, users, ends, candidates):
        return self.p[candidates]


def test_curve_matches_hand_computed_points():
    ds = _tiny()
    c = threshold_curve(ProbaDouble(ds), ds, split="test", choose_split=None, k=2, n_candidates=3)
    top = c.scope("top_k").set_index("threshold")
    # shown lists (2 most probable of 3 candidates): d .9, b .6 for every user; hits: same (b), novel (d)
    assert top.loc[0.5, "precision"] == pytest.approx(2 / 6)
    assert top.loc[0.5, "recall"] == pytest.approx(2 / 3)
    assert top.loc[0.5, "f1"] == pytest.approx(4 / 9)
    assert top.loc[0.7, "precision"] == pytest.approx(1 / 3) and top.loc[0.7, "recall"] == pytest.approx(1 / 3)
    assert np.isnan(top.loc[1.0, "precision"]) and top.loc[1.0, "n_recommended"] == 0
    every = c.scope("all").set_index("threshold")
    assert every.loc[0.3, "n_recommended"] == 7 and every.loc[0.3, "recall"] == pytest.approx(1.0)
    # candidate positives .6 .4 .9 vs negatives .9 .2 .9 .6 .2 .6 -> (3 + 2 + 5) / 18
    assert c.auc == pytest.approx(10 / 18)
    assert c.candidate_recall == 1.0 and c.n_users == 3


def test_recall_never_increases_and_best_threshold_has_the_max_f1():
    ds = _tiny()
    c = threshold_curve(ProbaDouble(ds), ds, split="test", choose_split=None, k=2, n_candidates=3)
    for scope in ("top_k", "all"):
        f = c.scope(scope)
        assert f["threshold"].is_monotonic_increasing
        assert (np.diff(f["recall"].to_numpy()) <= 1e-12).all()
    top = c.scope("top_k")
    assert c.best_f1 == pytest.approx(top["f1"].max())
    assert top.loc[top["threshold"] == c.best_threshold, "f1"].iloc[0] == pytest.approx(c.best_f1)
    assert c.best_threshold == pytest.approx(0.0)  # the smallest threshold among the best (all up to .6)
    d = c.to_dict()
    assert d["best_f1"] == pytest.approx(4 / 9) and len(d["curve"]) == len(c.curve)


def test_sweep_counts():
    f = sweep(np.array([0.1, 0.5, 0.5, 0.9]), np.array([False, True, False, True]), n_users=4,
              thresholds=np.array([0.0, 0.5, 0.95]))
    assert f["n_recommended"].tolist() == [4, 3, 0]
    assert f["recall"].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert f["precision"].iloc[1] == pytest.approx(2 / 3)
    assert f["f1"].iloc[2] == 0.0


def test_bad_arguments():
    ds = _tiny()
    with pytest.raises(ConfigError):
        threshold_curve(ProbaDouble(ds), ds, split="test", k=5, n_candidates=3)
    with pytest.raises(ModelError, match="probability"):
        threshold_curve(object(), ds, split="test")
