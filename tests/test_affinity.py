import numpy as np
import pandas as pd
import pytest

from crossrec_core.evaluation.affinity import journey_recall, learned_affinity, observed_affinity
from crossrec_core.evaluation.baselines import CategoryTransitionRanker
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import DataError


def _ds(rows, cats):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": list(cats), "category": list(cats.values()), "title": list(cats)})
    return from_frames(inter, items, name="tiny")


class EqualScores:
    """Test double: every item scores the same, so the softmax is uniform over the catalogue."""

    name = "equal"

    def __init__(self, n_items):
        self.n_items = n_items

    def score_histories(self, seqs, users, ends):
        return np.zeros((len(users), self.n_items), dtype=np.float32)


def test_observed_affinity_is_row_normalised_transition_share():
    ds = _ds([("u1", "x1", 1), ("u1", "x2", 2), ("u1", "y1", 3), ("u2", "y1", 1), ("u2", "z1", 2)],
             {"x1": "X", "x2": "X", "y1": "Y", "z1": "Z"})
    aff = observed_affinity(ds)
    assert list(aff.index) == ["X", "Y", "Z"] and list(aff.columns) == ["X", "Y", "Z"]
    np.testing.assert_allclose(aff.loc["X"], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(aff.loc["Y"], [0.0, 0.0, 1.0])
    assert aff.loc["Z"].isna().all()  # nothing follows Z
    sums = aff.sum(axis=1, min_count=1).dropna()
    np.testing.assert_allclose(sums, 1.0)
    cross = observed_affinity(ds, exclude_self=True)
    np.testing.assert_allclose(cross.loc["X"], [0.0, 1.0, 0.0])
    top2 = observed_affinity(ds, top=2)  # X (2 events) and Y (2 events) have the most events
    assert list(top2.index) == ["X", "Y"]
    np.testing.assert_allclose(top2.loc["Y"].fillna(-1), [-1, -1])  # Y's only successor Z was cut: no data
    np.testing.assert_allclose(top2.loc["X"], [0.5, 0.5])


def test_learned_affinity_rows_sum_to_one_and_follow_the_softmax():
    ds = _ds([("u1", "x1", 1), ("u1", "y1", 2), ("u2", "y1", 1), ("u2", "x2", 2), ("u3", "x1", 1)],
             {"x1": "X", "x2": "X", "y1": "Y", "z1": "Z"})
    aff = learned_affinity(EqualScores(ds.n_items), ds, max_users=10)
    # a uniform softmax puts 2/4 of the mass on X, 1/4 on Y, 1/4 on Z
    np.testing.assert_allclose(aff.loc["X"], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(aff.loc["Y"], [0.5, 0.25, 0.25])
    assert aff.loc["Z"].isna().all()  # no history ends in Z
    np.testing.assert_allclose(aff.sum(axis=1, min_count=1).dropna(), 1.0)
    ranker = CategoryTransitionRanker().fit(ds, ds.seqs)
    aff2 = learned_affinity(ranker, ds, exclude_self=True)
    np.testing.assert_allclose(aff2.sum(axis=1, min_count=1).dropna(), 1.0)
    assert np.all(np.diag(aff2.fillna(0).to_numpy()) == 0)


def _journey_store():
    rows, t = [], 0
    for u in range(12):  # everyone walks tent -> boots -> stove
        for item in (f"tent{u % 2}", f"boot{u % 3}", f"stove{u % 2}"):
            rows.append((f"u{u}", item, t))
            t += 1
    for u in range(6):  # readers go from books to mugs
        rows += [(f"v{u}", f"book{u % 2}", 1), (f"v{u}", f"mug{u % 2}", 2)]
    cats = {**{f"tent{i}": "Camping" for i in range(2)}, **{f"boot{i}": "Footwear" for i in range(3)},
            **{f"stove{i}": "Outdoor Cooking" for i in range(2)}, **{f"mug{i}": "Kitchenware" for i in range(2)},
            **{f"book{i}": "Books" for i in range(2)}}
    ds = _ds(rows, cats)
    journeys = pd.DataFrame(
        [
            (0, "tent -> boots -> stove", 1, "Camping", "tent", ["tent0", "tent1"], 12),
            (0, "tent -> boots -> stove", 2, "Footwear", "boots", ["boot0", "boot1", "boot2"], 12),
            (0, "tent -> boots -> stove", 3, "Outdoor Cooking", "stove", ["stove0", "stove1"], 12),
            (1, "book -> tent -> stove", 1, "Books", "book", ["book0", "book1"], 0),
            (1, "book -> tent -> stove", 2, "Camping", "tent", ["tent0", "tent1"], 0),
            (1, "book -> tent -> stove", 3, "Outdoor Cooking", "stove", ["stove0", "stove1"], 0),
        ],
        columns=["journey_id", "name", "step", "category", "product", "item_ids", "n_users"],
    )
    return ds, journeys


def test_journey_recall_finds_the_planted_journey_only():
    ds, journeys = _journey_store()
    ranker = CategoryTransitionRanker().fit(ds, ds.seqs)
    rep = journey_recall(ranker, ds, journeys, k=2, n_probes=2)
    by = rep.journeys.set_index("journey_id")
    assert by.loc[0, "recovered"] == 2 and by.loc[0, "total"] == 2
    assert by.loc[1, "recovered"] == 0  # nobody went book -> tent, nor from tent straight to stove
    assert (rep.recovered, rep.total) == (2, 4)
    assert rep.summary() == "2 of 4 planted journey steps recovered in the top 2"
    steps = rep.steps
    assert steps.loc[(steps.journey_id == 0) & (steps.from_step == 2), "hit_product"].iloc[0] == 1.0
    assert set(rep.to_dict()) == {"k", "recovered", "total", "journeys", "steps"}


def test_journey_table_without_the_expected_columns_is_a_plain_error():
    ds, journeys = _journey_store()
    ranker = CategoryTransitionRanker().fit(ds, ds.seqs)
    with pytest.raises(DataError, match="item_ids"):
        journey_recall(ranker, ds, journeys.drop(columns=["item_ids"]))
