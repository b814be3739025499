"""Shoppers for previews (crossrec_core.serving.shoppers): search, sampling, what-if histories, map helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import DEFAULT_EVENT, from_frames
from crossrec_core.serving import shoppers as S
from test_cli_recommend import AlignedFake, _ds


def test_search_users_is_case_insensitive_limited_and_keeps_the_current_shopper():
    ids = np.array(["U1", "u2", "A3", "u4"], dtype=object)
    assert S.search_users(ids) == ["U1", "u2", "A3", "u4"]
    assert S.search_users(ids, "u") == ["U1", "u2", "u4"]
    assert S.search_users(ids, "u", limit=2) == ["U1", "u2"]
    assert S.search_users(ids, "u", limit=2, current="A3") == ["A3", "U1", "u2"]  # left out by the search: first
    assert S.search_users(ids, "u", current="u2") == ["U1", "u2", "u4"]  # already there: not repeated
    assert S.search_users(ids, "[", current=None) == []  # plain text, not a pattern


def test_random_user_is_reproducible_and_from_the_dataset():
    ds = _ds()
    picks = [S.random_user(ds, n) for n in range(1, 6)]
    assert picks == [S.random_user(ds, n) for n in range(1, 6)]
    assert set(picks) <= set(ds.user_ids)


def test_spread_users_samples_evenly_from_first_to_last():
    assert S.spread_users(5, 10).tolist() == [0, 1, 2, 3, 4]
    assert S.spread_users(101, 3).tolist() == [0, 50, 100]
    assert S.spread_users(0).tolist() == []


def test_history_frame_keeps_real_events_and_appends_additions_after_the_last():
    ds = _ds()
    frame = S.history_frame(ds, "u1", add=["b1", "b2"], remove=["t2"])
    assert list(frame.columns) == ["item_id", "event", "timestamp"]
    assert frame["item_id"].tolist() == ["t1", "k1", "b1", "b2"]
    assert frame["timestamp"].tolist() == [1, 3, 4, 5] and frame["timestamp"].dtype == np.int64
    assert frame["event"].tolist()[2:] == [DEFAULT_EVENT, DEFAULT_EVENT]
    built = S.history_frame(ds, None, add=["t1"])
    assert built["item_id"].tolist() == ["t1"] and built["timestamp"].tolist() == [1]
    assert S.history_frame(ds, "nobody")["item_id"].tolist() == []


def test_whatif_additions_take_the_strongest_event_of_the_history():
    """An added product weighs as much as anything the shopper did (a purchase history adds purchases), so the
    encoder and the explanations read it as the newest strong signal; a history of one kind keeps that kind."""
    log = pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 2, "item_id": ["x", "y", "z", "x", "y"],
                        "event": ["view", "purchase", "view", "view", "view"], "timestamp": [1, 2, 3, 1, 2]})
    ds = from_frames(log)
    assert S.history_frame(ds, "a", add=["z"])["event"].tolist() == ["view", "purchase", "view", "purchase"]
    assert S.history_frame(ds, "b", add=["z"])["event"].tolist()[-1] == "view"
    assert S.history_frame(ds, None, add=["z"])["event"].tolist() == [DEFAULT_EVENT]
    assert S.strongest_event(pd.Series(["cart", "view", "cart"])) == "cart"


def test_history_table_is_for_people():
    ds = _ds()
    table = S.history_table(ds, "u2")
    assert list(table.columns) == ["when", "item_id", "title", "category", "event"]
    assert table["item_id"].tolist() == ["f1", "f2", "b3"] and table["category"].tolist() == ["Footwear", "Footwear", "Books"]
    assert pd.api.types.is_datetime64_any_dtype(table["when"])
    untimed = from_frames(pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"]}))
    if not untimed.has_timestamps:
        assert S.history_table(untimed, "a")["when"].tolist() == [0, 1]
    assert len(S.history_table(ds, "nobody")) == 0


def test_whatif_candidates_are_the_most_popular_plus_the_added_ones():
    model = AlignedFake()
    top3 = S.whatif_candidates(model, top=3)
    assert sorted(model.item_ids[top3]) == ["f1", "t1", "t2"]  # popularity 50, 40, 30 (t2 before f2: catalogue order)
    more = S.whatif_candidates(model, ["b2", "unknown"], top=3)
    assert sorted(model.item_ids[more]) == ["b2", "f1", "t1", "t2"] and np.all(np.diff(more) > 0)
    labels = S.catalogue_labels(model, more)
    assert list(labels) == list(model.item_ids[more]) and labels["b2"] == "Cookbook (Books) [b2]"


def test_item_labels_fall_back_to_the_id_for_blank_titles():
    labels = S.item_labels(np.array(["Tent", " ", None], dtype=object), np.array(["a", "b", "c"], dtype=object),
                           np.array(["Camping", "X", "Y"], dtype=object))
    assert labels == ["Tent (Camping) [a]", "b (X) [b]", "c (Y) [c]"]


def test_history_vector_reads_the_known_items_of_a_history():
    model = AlignedFake()
    history = pd.DataFrame({"item_id": ["t1", "zz", "f1"], "event": ["view", "view", "purchase"], "timestamp": [1, 2, 3]})
    seqs = S.history_sequences(model, history)
    assert model.item_ids[seqs.items].tolist() == ["t1", "f1"] and seqs.times.tolist() == [1, 3]
    want = model.item_vectors()[model.item_index(["t1", "f1"])].mean(axis=0)
    np.testing.assert_allclose(S.history_vector(model, history), want, rtol=1e-6)


def test_sample_user_vectors_and_items_table():
    model, ds = AlignedFake(), _ds()
    users, vecs = S.sample_user_vectors(model, ds, max_users=2)
    assert users.tolist() == [0, ds.n_users - 1] and vecs.shape == (2, model.item_vectors().shape[1])
    table = S.items_table(model, [2, -1, 99, 0])
    assert table["item_id"].tolist() == ["t3", "t1"] and list(table.columns) == ["item_id", "title", "category", "popularity"]
