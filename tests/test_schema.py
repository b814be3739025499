"""schema: column mapping, event names and timestamp parsing."""

from __future__ import annotations

import pandas as pd
import pytest

from crossrec_core.data.load import load_log
from crossrec_core.data.schema import (
    attribute_name,
    normalize_events,
    parse_timestamps,
    resolve_mapping,
    suggest_mapping,
    vector_columns,
)
from crossrec_core.errors import SchemaError


def _s(values):
    return pd.Series(values, dtype="str")


def test_suggest_mapping_common_names_case_and_space_insensitive():
    cols = ["Customer No", "SKU", "t_dat", "Behavior_Type", "Product Group Name", "prod_name", "price"]
    assert suggest_mapping(cols) == {
        "user_id": "Customer No",
        "item_id": "SKU",
        "timestamp": "t_dat",
        "event": "Behavior_Type",
        "category": "Product Group Name",
        "title": "prod_name",
    }
    assert suggest_mapping(["visitorid", "itemid", "event", "timestamp"]) == {
        "user_id": "visitorid", "item_id": "itemid", "timestamp": "timestamp", "event": "event"}
    assert suggest_mapping(["article_id", "index_group_name", "prod_name"], table="items") == {
        "item_id": "article_id", "category": "index_group_name", "title": "prod_name"}


def test_exact_canonical_name_wins_over_alias():
    assert suggest_mapping(["user", "user_id", "item"])["user_id"] == "user_id"


def test_explicit_mapping_wins_and_is_validated():
    cols = ["customer", "member", "sku"]
    assert resolve_mapping(cols, {"user_id": "member"})["user_id"] == "member"
    with pytest.raises(SchemaError, match=r"no column 'shopper'.*Available columns: 'customer', 'member', 'sku'"):
        resolve_mapping(cols, {"user_id": "shopper"}, file_label="log.csv")
    with pytest.raises(SchemaError, match="not a column crossrec uses"):
        resolve_mapping(cols, {"colour": "sku"})


def test_missing_required_column_lists_available():
    with pytest.raises(SchemaError, match=r"log.csv has no 'item_id' column.*Available columns: 'customer', 'when'"):
        resolve_mapping(["customer", "when"], None, file_label="log.csv")


def test_normalize_events_aliases():
    got = normalize_events(_s(["PV", "buy", "Add To Cart", "addtocart", "transaction", None, "Remove From Cart"]))
    assert got.tolist() == ["view", "purchase", "cart", "cart", "purchase", "", "remove_from_cart"]


def test_vector_and_attribute_names():
    assert vector_columns(["emb_10", "emb_2", "vec0", "brand"]) == ["vec0", "emb_2", "emb_10"]
    assert attribute_name("Price Band") == "price_band"


@pytest.mark.parametrize(
    "values, expected, kind",
    [
        (["1700000000", "1700000060"], [1700000000, 1700000060], "epoch_s"),
        (["1700000000123", "1700000060999"], [1700000000, 1700000060], "epoch_ms"),
        (["1700000000123456", "1700000060000000"], [1700000000, 1700000060], "epoch_us"),
        (["0", "1", "2"], [0, 1, 2], "order"),
        (["20240307", "20240308"], [1709769600, 1709856000], "yyyymmdd"),
        (["2024-03-07 14:02", "2024-03-07"], [1709820120, 1709769600], "datetime"),
        (["2024-03-07T14:02:03Z", "2024-03-07T16:02:03+02:00"], [1709820123, 1709820123], "datetime"),
        (["13/03/2024", "01/02/2024"], [1710288000, 1706745600], "datetime"),  # day-first proven by 13
        (["03/13/2024", "01/02/2024"], [1710288000, 1704153600], "datetime"),  # month-first proven by 13
        (["07.03.2024 14:02", "08.03.2024 09:00"], [1709820120, 1709888400], "datetime"),  # European dots
    ],
)
def test_parse_timestamps(values, expected, kind):
    got = parse_timestamps(_s(values))
    assert got.valid.all()
    assert got.seconds.tolist() == expected
    assert got.kind == kind


def test_invalid_timestamps_flagged():
    got = parse_timestamps(_s(["1700000000", "-5", "99999999999", "soon", "", "1700000001"]))
    assert got.valid.tolist() == [True, False, False, False, False, True]
    got = parse_timestamps(_s(["2024-02-30", "2024-02-28", "31/31/2024"]))
    assert got.valid.tolist() == [False, True, False]


def test_ambiguous_slash_dates_get_a_note():
    got = parse_timestamps(_s(["03/04/2024", "05/06/2024"]))
    assert got.valid.all() and "ambiguous" in got.note
    assert got.seconds[0] == 1709510400  # 2024-03-04: month-first


def test_a_column_named_when_holding_dates_is_taken_as_the_time():
    assert suggest_mapping(["customer", "article", "when"])["timestamp"] == "when"


def test_a_missing_column_says_how_to_map_it_in_the_studio_and_in_a_terminal():
    with pytest.raises(SchemaError) as err:
        resolve_mapping(["shopper_ref", "article"], None)
    assert "Column mapping on the Data page" in str(err.value) and "--map user_id=<column>" in str(err.value)


def test_one_timestamp_for_every_event_is_a_warning_not_a_note():
    log = "user_id,item_id,timestamp\n" + "".join(f"u{k % 5},i{k % 9},2024-05-01\n" for k in range(40))
    report = load_log(log.encode(), interactions_name="one-day.csv").report
    assert any("All events have the same timestamp" in w for w in report.warnings)
    assert not any("same timestamp" in n for n in report.notes)
