"""The demo store: seeded, realistic in size and shape, with recoverable planted journeys."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from crossrec_core.data.demo_store import CATALOG, DAYS, JOURNEYS, START, build_demo_dataset, make_demo_store
from crossrec_core.errors import ConfigError


@pytest.fixture(scope="module")
def store():
    return make_demo_store(seed=0)


def test_seeded(store):
    again = make_demo_store(seed=0)
    pd.testing.assert_frame_equal(store.interactions, again.interactions)
    pd.testing.assert_frame_equal(store.items, again.items)
    other = make_demo_store(seed=1)
    assert not store.interactions.equals(other.interactions)


def test_size_and_shape(store):
    inter, items = store.interactions, store.items
    assert 50_000 <= len(inter) <= 80_000
    assert inter["user_id"].nunique() == 5000
    assert len(items) == 2000 and items["item_id"].is_unique and items["title"].is_unique
    assert set(items["category"]) == set(CATALOG) and len(CATALOG) == 12
    assert set(inter["event"]) == {"view", "cart", "purchase"}
    assert (inter["event"] == "view").mean() > 0.6
    assert {"brand", "price_band"} <= set(items.columns)
    assert inter["timestamp"].between(START, START + DAYS * 86400).all()
    # each user's rows are time-ordered
    assert (inter.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()
    # popularity is skewed inside a category: the top 10% of items take far more than 10% of events
    counts = inter["item_id"].value_counts()
    cat = items.set_index("item_id")["category"]
    camping = counts[cat.reindex(counts.index) == "Camping"].sort_values(ascending=False)
    assert camping.head(len(camping) // 10).sum() > 0.3 * camping.sum()


def test_titles_are_english_text(store):
    t = store.items.set_index("item_id")["title"]
    assert t.str.contains(r"^[A-Z][A-Za-z&'-]+ .+ .+", regex=True).all()
    tents = store.items[store.items["product"] == "tent"]
    assert len(tents) > 20 and tents["title"].str.contains("Tent").all() and (tents["category"] == "Camping").all()


def test_journeys_frame_and_ground_truth(store):
    j = store.journeys
    assert list(j.columns) == ["journey_id", "name", "step", "category", "product", "item_ids", "n_users"]
    assert len(j) == 3 * len(JOURNEYS) and j["journey_id"].nunique() == 8
    items = store.items.set_index("item_id")
    for _, row in j.iterrows():
        assert set(items.loc[row["item_ids"], "category"]) == {row["category"]}
        assert set(items.loc[row["item_ids"], "product"]) == {row["product"]}
    share = j.drop_duplicates("journey_id")["n_users"].sum() / 5000
    assert 0.35 < share < 0.45
    # the planted order is in the log: at least n_users users see step 1, then step 2, then step 3 items
    inter = store.interactions
    for jid, steps in j.groupby("journey_id"):
        reached = None  # per user: time of the earliest visit of the current step after the previous step
        for _, row in steps.sort_values("step").iterrows():
            hit = inter.loc[inter["item_id"].isin(row["item_ids"]), ["user_id", "timestamp"]]
            if reached is not None:
                hit = hit.merge(reached.rename("after"), left_on="user_id", right_index=True)
                hit = hit[hit["timestamp"] >= hit["after"]]
            reached = hit.groupby("user_id")["timestamp"].min()
        assert len(reached) >= steps.iloc[0]["n_users"], jid


def test_fast():
    t = time.perf_counter()
    make_demo_store(seed=3)
    assert time.perf_counter() - t < 5.0


def test_build_demo_dataset():
    ds, journeys = build_demo_dataset(seed=0)
    assert ds.name == "demo-store" and ds.n_categories == 12 and ds.n_users == 5000
    assert {"brand", "price_band"} <= set(ds.attribute_columns)
    assert ds.has_timestamps and len(journeys) == 24
    assert ds.report.counts.get("duplicate_events", 0) == 0


def test_bad_config():
    with pytest.raises(ConfigError):
        make_demo_store(n_items=10)
    with pytest.raises(ConfigError):
        make_demo_store(journey_share=1.5)
