"""profile_dataset on a tiny log with hand-computed answers, and on a real log slice."""

from __future__ import annotations

import re

import pandas as pd

from crossrec_core.data.load import load_log
from crossrec_core.data.profile import OTHERS, profile_dataset


def test_profile_exact_numbers(tiny_frames):
    ds = load_log(*tiny_frames, name="tiny")
    p = profile_dataset(ds)
    assert (p.n_users, p.n_items, p.n_categories, p.n_events) == (4, 5, 3, 10)
    # distinct (user, item) pairs: u1 3, u2 2, u3 1, u4 4 = 10 of 4 * 5
    assert abs(p.sparsity - (1 - 10 / 20)) < 1e-12
    assert p.user_lengths.tolist() == [3, 2, 1, 4]
    assert (p.events_per_user.min, p.events_per_user.median, p.events_per_user.mean, p.events_per_user.max) == (1, 2.5, 2.5, 4)
    assert p.item_counts.tolist() == [3, 3, 2, 2, 0]  # i1, i2, i3, i4, i5 (cold)
    assert p.category_counts.to_dict() == {"Footwear": 5, "Camping": 3, "Outdoor Cooking": 2}
    assert p.event_counts.to_dict() == {"view": 5, "purchase": 3, "cart": 2}
    # consecutive pairs: u1 C->F, F->O ; u2 F->F ; u4 F->O, O->C, C->F
    t = p.transitions
    assert t.loc["Camping", "Footwear"] == 2
    assert t.loc["Footwear", "Outdoor Cooking"] == 2
    assert t.loc["Footwear", "Footwear"] == 1
    assert t.loc["Outdoor Cooking", "Camping"] == 1
    assert int(t.to_numpy().sum()) == 6
    assert abs(p.cross_category_transition_share - 5 / 6) < 1e-12
    assert p.cross_category_user_share == 0.5  # u1 and u4
    assert (p.time_min, p.time_max) == (1, 12)
    d = p.to_dict()
    assert d["n_events"] == 10 and d["transitions"]["Camping"]["Footwear"] == 2
    text = p.to_text()
    assert re.search(r"events\s+10\n", text) and "Camping -> Footwear: 2" in text


def test_top_categories_fold_into_others():
    n = 40  # 40 categories, one item each; a single user walks through them in order
    log = pd.DataFrame({"user_id": ["u"] * n, "item_id": [f"i{k}" for k in range(n)], "timestamp": range(n),
                        "category": [f"c{k:02d}" for k in range(n)]})
    p = profile_dataset(load_log(log), top_categories=5)
    assert p.transitions.shape == (6, 6)
    assert p.transitions.index[-1] == OTHERS
    assert int(p.transitions.to_numpy().sum()) == n - 1
    assert p.transitions.loc[OTHERS, OTHERS] == n - 1 - 5  # the first 5 categories feed the next one each
