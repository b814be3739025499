"""Pushing one category (issue 18.1): who is most likely to buy in it next, and with which products."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import ConfigError
from crossrec_core.serving.category_push import ITEM_COLUMNS, SHOPPER_COLUMNS, audience_csv, category_audience
from crossrec_core.serving.export import recommend_for_log
from crossrec_core.training.loop import train_model
from journeys import journey_frames


@pytest.fixture(scope="module")
def shop():
    inter, items = journey_frames()
    ds = from_frames(inter, items, name="journeys")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=8, use_text=False), user=UserEncoderConfig(dim=8, n_layers=1, max_len=8),
                      train=TrainConfig(epochs=2, device="cpu", fusion_epochs=2, seed=0))
    return ds, train_model(ds, cfg, name="tiny")


def test_the_audience_is_every_shoppers_list_in_that_category_summed(shop):
    ds, model = shop
    category = str(model.category_names[0])
    aud = category_audience(model, ds, category, k_items=3)
    assert list(aud.shoppers.columns) == SHOPPER_COLUMNS and list(aud.items.columns) == ITEM_COLUMNS
    rows = recommend_for_log(model, ds, k=3, detailed=True, include_categories=[category])
    assert set(rows["category"]) == {category}
    # a shopper's chance is the sum of the probabilities of their rows, best shopper first
    want = rows.groupby("user_id")["probability"].sum()
    got = aud.shoppers.set_index("user_id")["chance"]
    assert got.to_dict() == pytest.approx(want.to_dict(), rel=1e-6)
    assert aud.shoppers["chance"].is_monotonic_decreasing
    # an item's expected shoppers is the sum of its probabilities over shoppers
    items = aud.items.set_index("item_id")
    for item, group in rows.groupby("item_id"):
        assert items.loc[item, "expected_shoppers"] == pytest.approx(group["probability"].sum(), rel=1e-6)
        assert items.loc[item, "shoppers_listing"] == len(group)
    assert aud.expected_shoppers == pytest.approx(rows["probability"].sum(), rel=1e-6)
    assert aud.n_shoppers_scored == rows["user_id"].nunique()


def test_new_to_category_marks_and_filters_the_shoppers_who_never_had_it(shop):
    ds, model = shop
    category = str(model.category_names[0])
    cat_idx = list(map(str, ds.category_names)).index(category)
    users = ds.seqs.user_of_event()[ds.item_category[ds.seqs.items] == cat_idx]
    had = set(np.asarray(ds.user_ids, dtype=object)[np.unique(users)].astype(str))
    aud = category_audience(model, ds, category)
    assert had and set(aud.shoppers.loc[~aud.shoppers["new_to_category"], "user_id"]) <= had
    assert not (set(aud.shoppers.loc[aud.shoppers["new_to_category"], "user_id"]) & had)
    only_new = category_audience(model, ds, category, new_to_category_only=True)
    assert only_new.shoppers["new_to_category"].all()
    assert set(only_new.shoppers["user_id"]) == set(aud.shoppers.loc[aud.shoppers["new_to_category"], "user_id"])


def test_an_unknown_category_is_refused_with_the_way_out(shop):
    ds, model = shop
    with pytest.raises(ConfigError, match="knows no category 'Teleporters'. Pick one of its"):
        category_audience(model, ds, "Teleporters")


def test_the_exports_neutralise_formulas_in_titles_and_keep_ids_byte_for_byte():
    frame = pd.DataFrame({"user_id": ["=u1"], "chance": [0.5], "new_to_category": [True], "items": ["=i1 | i2"],
                          "titles": ["=HYPERLINK(1) | Tent"]})
    csv = audience_csv(frame).decode().splitlines()
    assert csv[1].startswith("=u1,0.5,True,=i1 | i2,'=HYPERLINK(1) | Tent")
