"""load_log + from_frames: indexing, validation, soft warnings, splits (with hypothesis properties)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec_core.data.dataset import from_frames
from crossrec_core.data.load import load_log, pseudonymize_ids
from crossrec_core.errors import DataError, SchemaError


def test_tiny_log_is_indexed_exactly(tiny_frames):
    inter, items = tiny_frames
    ds = load_log(inter, items, name="tiny")
    assert ds.user_ids.tolist() == ["u1", "u2", "u3", "u4"]
    # items: first appearance in the (user, time)-ordered log, then the items table
    assert ds.item_ids.tolist() == ["i1", "i2", "i3", "i4", "i5"]
    assert ds.category_names.tolist() == ["Camping", "Footwear", "Outdoor Cooking"]
    assert ds.item_category.tolist() == [0, 1, 2, 1, 0]
    assert ds.seqs.offsets.tolist() == [0, 3, 5, 6, 10]
    items_u1, times_u1, _ = ds.history(0)
    assert ds.item_ids[items_u1].tolist() == ["i1", "i2", "i3"]
    assert times_u1.tolist() == [1, 2, 3]
    assert ds.item_ids[ds.history(3)[0]].tolist() == ["i4", "i3", "i1", "i2"]
    assert ds.event_names[ds.history(0)[2]].tolist() == ["view", "cart", "purchase"]
    assert ds.attribute_columns == ("brand",)
    assert ds.items.loc[ds.item_index("i5")[0], "title"] == "Camp Lantern"
    assert ds.report.counts["single_event_users"] == 1
    assert ds.report.counts["cold_items"] == 1
    assert ds.has_timestamps is False  # 1..12 are positions, not clock times
    assert ds.event_weight_array()[list(ds.event_names).index("purchase")] == 5.0


def test_leave_last_out_on_tiny_log(tiny_frames):
    ds = load_log(*tiny_frames)
    split = ds.leave_last_out()
    assert split.train_end.tolist() == [1, 4, 6, 8]
    assert split.valid_users.tolist() == [0, 3] and split.valid_pos.tolist() == [1, 8]
    assert split.test_users.tolist() == [0, 1, 3] and split.test_pos.tolist() == [2, 4, 9]


def test_mapping_metadata_in_log_and_conflicting_categories():
    log = pd.DataFrame(
        {
            "Customer No": ["a", "a", "b", "b", "c"],
            "SKU": ["x", "y", "x", "z", "x"],
            "Date": ["2024-03-07 14:02", "2024-03-07 15:00", "2024-03-08 09:00", "2024-03-08 09:05", "2024-03-09"],
            "Department": ["Toys", "Baby", "Toys", "Books", "Baby"],  # x: Toys twice, Baby once -> Toys
            "Product Name": ["Plush Fox", "Crib", None, "Picture Book", "Plush Fox v2"],
        }
    )
    ds = load_log(log, name="shop")
    assert ds.has_timestamps
    assert ds.items.set_index("item_id").loc["x", "category"] == "Toys"
    assert ds.items.set_index("item_id").loc["x", "title"] == "Plush Fox"
    assert ds.report.counts["conflicting_categories"] == 1
    assert ds.history(0)[1].tolist() == [1709820120, 1709823600]


def test_items_table_wins_over_log_category():
    log = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"], "category": ["Toys", "Baby"]})
    items = pd.DataFrame({"item_id": ["x", "y"], "category": ["Books", "Baby"]})
    ds = load_log(log, items)
    assert ds.items.set_index("item_id")["category"].to_dict() == {"x": "Books", "y": "Baby"}
    assert ds.report.counts["category_contradictions"] == 1


def test_no_timestamp_column_uses_row_order():
    ds = load_log(pd.DataFrame({"user": ["a", "b", "a"], "item": ["3", "1", "2"]}))
    assert ds.has_timestamps is False
    assert ds.item_ids[ds.history(0)[0]].tolist() == ["3", "2"]
    assert any("row order" in n for n in ds.report.notes)


def test_duplicates_dropped_and_counted(tiny_frames):
    inter, items = tiny_frames
    doubled = pd.concat([inter, inter.iloc[:3]], ignore_index=True)
    ds = load_log(doubled, items)
    assert ds.n_events == 10
    assert ds.report.counts["duplicate_events"] == 3


def test_few_empty_ids_dropped_most_refused():
    log = pd.DataFrame({"user_id": ["a", " ", "b", "c", None], "item_id": ["1", "2", "3", "4", "5"]})
    ds = load_log(log)
    assert ds.n_events == 3 and ds.report.counts["bad_user_id"] == 2
    bad = pd.DataFrame({"user_id": ["", "", "", "a"], "item_id": ["1", "2", "3", "4"]})
    with pytest.raises(DataError, match=r"3 of 4 rows have no usable user id in column 'user_id'"):
        load_log(bad, interactions_name="log.csv")


def test_unreadable_timestamps():
    n = 100
    ts = [str(1_700_000_000 + i) for i in range(n)]
    ts[5] = "yesterday"
    ds = load_log(pd.DataFrame({"user_id": ["u"] * n, "item_id": [str(i) for i in range(n)], "timestamp": ts}))
    assert ds.n_events == 99 and ds.report.counts["bad_timestamps"] == 1
    ts[:20] = ["soon"] * 20
    with pytest.raises(DataError, match=r"20 of 100 rows have a timestamp in column 'timestamp'.*'soon'"):
        load_log(pd.DataFrame({"user_id": ["u"] * n, "item_id": [str(i) for i in range(n)], "timestamp": ts}))


def test_missing_item_column_is_schema_error():
    with pytest.raises(SchemaError, match="no 'item_id' column"):
        load_log(pd.DataFrame({"user_id": ["a"], "when": ["1"]}))


def test_vector_columns_renamed_and_attributes_kept():
    log = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"]})
    items = pd.DataFrame({"item_id": ["x", "y"], "emb_1": [0.5, 1.5], "emb_0": [1.0, 2.0], "Price Band": ["low", "high"]})
    ds = load_log(log, items)
    assert ds.vector_columns == ("vec_0", "vec_1")
    assert ds.items["vec_0"].tolist() == [1.0, 2.0] and ds.items["vec_1"].tolist() == [0.5, 1.5]
    assert ds.attribute_columns == ("price_band",)


def test_event_aliases_and_weights():
    log = pd.DataFrame({"user_id": ["a", "a", "a"], "item_id": ["1", "2", "3"], "behavior": ["pv", "buy", "addtocart"]})
    ds = load_log(log, event_weights={"cart": 4.0})
    assert sorted(ds.event_names.tolist()) == ["cart", "purchase", "view"]
    assert ds.event_weights["cart"] == 4.0 and ds.event_weights["purchase"] == 5.0


def test_pseudonymize_with_workspace_salt(workspace, tiny_frames):
    ds = load_log(*tiny_frames, pseudonymize=True)
    salt = (workspace / "salt").read_text()
    assert len(salt) == 32
    assert all(re.fullmatch(r"[0-9a-f]{16}", u) for u in ds.user_ids)
    assert "u1" not in set(ds.user_ids)
    again = load_log(*tiny_frames, pseudonymize=True)
    assert again.user_ids.tolist() == ds.user_ids.tolist()  # same salt reused
    other = pseudonymize_ids(pd.Series(["u1"]), salt="other")
    assert other.iloc[0] != ds.user_ids[0]


def test_from_frames_keeps_interface(tiny_frames):
    inter, items = tiny_frames
    ds = from_frames(inter.astype({"timestamp": "int64"}), items, name="direct")
    assert ds.n_users == 4 and ds.n_items == 5 and ds.n_events == 10
    frame = ds.interactions_frame()
    assert frame.groupby("user_id").size().to_dict() == {"u1": 3, "u2": 2, "u3": 1, "u4": 4}


# -- properties ------------------------------------------------------------------------------------
_logs = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 9), st.integers(0, 30), st.sampled_from(["view", "cart", "buy"])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_logs)
def test_split_invariants(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]).astype(str)
    ds = load_log(frame)
    distinct = frame.assign(event=frame["event"].replace({"buy": "purchase"})).drop_duplicates()
    assert ds.n_events == len(distinct)
    split = ds.leave_last_out()
    offs = ds.seqs.offsets
    n = np.diff(offs)
    # every event is in exactly one of train / valid / test
    covered = np.zeros(ds.n_events, dtype=int)
    for u in range(ds.n_users):
        covered[offs[u] : split.train_end[u]] += 1
    covered[split.valid_pos] += 1
    covered[split.test_pos] += 1
    assert (covered == 1).all()
    # no test (or valid) event precedes a train event of the same user
    times = ds.seqs.times
    for users, pos in ((split.valid_users, split.valid_pos), (split.test_users, split.test_pos)):
        for u, p in zip(users, pos):
            assert p >= split.train_end[u]
            if split.train_end[u] > offs[u]:
                assert times[p] >= times[offs[u] : split.train_end[u]].max()
    # users with 3+ events are in train, valid and test
    three = np.flatnonzero(n >= 3)
    assert set(three) <= set(split.valid_users) and set(three) <= set(split.test_users)
    assert (split.train_end[three] > offs[three]).all()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(alphabet=st.sampled_from(list("ab1,;|\t\n\r\"' x-:")), max_size=300).map(str.encode),
        st.text(alphabet=st.sampled_from(list("ab19,;\n\"x-: ")), max_size=200).map(
            lambda t: ("user_id,item_id,timestamp\n" + t).encode()
        ),
    )
)
def test_fuzz_load_log_raises_only_data_error(blob):
    try:
        ds = load_log(blob, interactions_name="fuzz.csv")
    except DataError:
        return
    assert ds.n_events > 0
