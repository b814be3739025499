"""The real logs under /work/shared/data load with exactly the counts their PROVENANCE.md states."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossrec_core.cli import main
from crossrec_core.data.load import load_log
from crossrec_core.data.profile import profile_dataset
from crossrec_core.storage.datasets import load_dataset

DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not mounted")


def _load(name):
    return load_log(DATA / name / "interactions.csv", DATA / name / "items.csv", name=name)


def test_amazon_food_kitchen():
    ds = _load("amazon-food-kitchen")
    p = profile_dataset(ds)
    assert (ds.n_users, ds.n_items, ds.n_events, ds.n_categories) == (9398, 26877, 133029, 2)
    assert ds.report.counts.get("duplicate_events", 0) == 0
    assert pd.Series(ds.items["category"]).value_counts().to_dict() == {"Kitchen": 18605, "Food": 8272}
    assert p.category_counts.to_dict() == {"Kitchen": 71994, "Food": 61035}
    assert (p.events_per_user.min, p.events_per_user.median, p.events_per_user.max) == (5, 11, 156)
    assert p.cross_category_user_share == 1.0
    assert not ds.has_timestamps  # positions only, as documented
    last_cat = ds.category_names[ds.item_category[ds.seqs.items[ds.seqs.offsets[1:] - 1]]]
    assert pd.Series(last_cat).value_counts().to_dict() == {"Kitchen": 6055, "Food": 3343}
    assert (ds.items["title"] != "").all()


def test_hm_fashion_oneday_duplicates_dropped():
    ds = _load("hm-fashion-oneday")
    p = profile_dataset(ds)
    # PROVENANCE: 10,000 rows of which 965 repeat an earlier (user, item) pair on the same day. With one
    # timestamp for all rows they are exact duplicate events, so they are dropped and reported.
    assert ds.report.counts["rows_read"] == 10000
    assert ds.report.counts["duplicate_events"] == 965
    assert (ds.n_users, ds.n_items, ds.n_events, ds.n_categories) == (2954, 4903, 10000 - 965, 5)
    assert round(p.cross_category_user_share * ds.n_users) == 891
    raw = pd.read_csv(DATA / "hm-fashion-oneday" / "interactions.csv", dtype=str)
    single = int((raw.drop_duplicates().groupby("user_id").size() == 1).sum())
    assert ds.report.counts["single_event_users"] == single
    assert (raw.groupby("user_id").size() >= 2).sum() == 1989  # documented, before de-duplication
    assert "663713001" in set(ds.item_ids)
    assert p.time_min == p.time_max == 1537401600


def test_taobao_userbehavior():
    ds = _load("taobao-userbehavior")
    p = profile_dataset(ds)
    assert (ds.n_users, ds.n_items, ds.n_events, ds.n_categories) == (814, 55233, 84287, 2911)
    assert p.event_counts.to_dict() == {"view": 75693, "cart": 4494, "fav": 2351, "purchase": 1749}
    assert (p.events_per_user.min, p.events_per_user.median, p.events_per_user.max) == (4, 78, 539)
    assert p.cross_category_user_share == 1.0
    assert p.transitions.shape == (31, 31)  # top 30 + others
    window = (ds.seqs.times >= 1511539200) & (ds.seqs.times <= 1512316800)
    assert int((~window).sum()) == 35
    top20 = p.category_counts.head(20).sum() / ds.n_events
    assert 0.355 <= top20 < 0.365


@pytest.mark.parametrize("name", ["amazon-food-kitchen", "hm-fashion-oneday", "taobao-userbehavior"])
def test_cli_ingest_real_logs(workspace, name, capsys):
    rc = main(["ingest", "--interactions", str(DATA / name / "interactions.csv"),
               "--items", str(DATA / name / "items.csv"), "--name", name])
    assert rc == 0
    assert f"Saved dataset '{name}'" in capsys.readouterr().out
    t = time.perf_counter()
    ds = load_dataset(name)
    assert time.perf_counter() - t < 2.0  # ~0.1-0.3 s on an idle 2-core machine; slack for shared CI cores
    assert ds.n_users == {"amazon-food-kitchen": 9398, "hm-fashion-oneday": 2954, "taobao-userbehavior": 814}[name]
    assert np.all(np.diff(ds.seqs.offsets) > 0)
