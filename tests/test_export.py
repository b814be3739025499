"""The all-shoppers export (crossrec_core.serving.export): one function for the CLI and the studio's download."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from crossrec_core.serving.export import DETAILED_COLUMNS, OUTPUT_COLUMNS, recommend_for_log, to_csv_bytes
from crossrec_core.serving.recommender import Recommender
from test_cli_recommend import LOG, AlignedFake, _ds

KEY = ["user_id", "rank", "item_id"]


def test_the_cli_columns_are_the_contract_and_score_is_the_probability():
    model, ds = AlignedFake(), _ds()
    cli = recommend_for_log(model, ds, k=4)
    assert list(cli.columns) == OUTPUT_COLUMNS == ["user_id", "rank", "item_id", "score", "category"]
    full = recommend_for_log(model, ds, k=4, detailed=True)
    assert list(full.columns) == DETAILED_COLUMNS
    pd.testing.assert_frame_equal(cli[KEY], full[KEY])  # the same lists, whichever caller asks
    np.testing.assert_array_equal(cli["score"].to_numpy(), full["probability"].to_numpy())
    assert cli["score"].dtype == np.float32
    assert not np.allclose(full["score"], full["probability"])  # detailed: score is the retrieval score


def test_detailed_rows_carry_raw_titles_categories_and_optional_explanations():
    model, ds = AlignedFake(), _ds()
    full = recommend_for_log(model, ds, k=3, detailed=True, explain=True)
    assert list(full.columns) == [*DETAILED_COLUMNS, "explanation"]
    title_of = dict(zip(model.item_ids, model.item_titles))
    cat_of = dict(zip(model.item_ids, model.category_names[model.item_category]))
    assert full["title"].tolist() == [title_of[i] for i in full["item_id"]]
    assert full["category"].tolist() == [cat_of[i] for i in full["item_id"]]
    assert full["explanation"].fillna("").str.len().gt(0).all()
    assert "explanation" not in recommend_for_log(model, ds, k=3, explain=True).columns  # the CLI never explains


def test_filters_reach_the_recommender_and_a_given_recommender_is_used():
    model, ds = AlignedFake(), _ds()
    out = recommend_for_log(model, ds, k=3, exclude_categories=["Kitchen"], diversity=0.5, detailed=True)
    assert "Kitchen" not in set(out["category"]) and len(out) == 3 * ds.n_users
    seen = set(zip(LOG["user_id"], LOG["item_id"]))
    assert not any((u, i) in seen for u, i in zip(out["user_id"], out["item_id"]))
    shared = Recommender(model, ds)
    again = recommend_for_log(model, ds, k=3, exclude_categories=["Kitchen"], diversity=0.5, detailed=True,
                              recommender=shared)
    pd.testing.assert_frame_equal(out, again)


def test_progress_is_reported_and_no_users_give_an_empty_table():
    model, ds = AlignedFake(), _ds()
    calls = []
    recommend_for_log(model, ds, k=2, on_batch=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (ds.n_users, ds.n_users)
    empty = recommend_for_log(model, ds, k=2, users=np.array([], dtype=object), detailed=True, explain=True)
    assert len(empty) == 0 and list(empty.columns) == [*DETAILED_COLUMNS, "explanation"]


@pytest.mark.parametrize("title", ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)"])
def test_to_csv_bytes_neutralises_text_for_people_and_keeps_ids(title):
    frame = pd.DataFrame({"user_id": ["=u1"], "rank": [1], "item_id": ["-5"], "title": [title], "category": ["@c"],
                          "probability": [0.25], "score": [-1.5], "explanation": ["+because"]})
    rows = list(csv.reader(io.StringIO(to_csv_bytes(frame).decode("utf-8"), newline="")))
    assert rows[0] == list(frame.columns)
    assert rows[1] == ["=u1", "1", "-5", "'" + title, "'@c", "0.25", "-1.5", "'+because"]
