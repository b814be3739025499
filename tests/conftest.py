"""Shared fixtures: an isolated workspace and a tiny hand-built log with obvious answers."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Return a fresh workspace folder; CROSSREC_HOME points to it so tests never touch ./workspace."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    return root


@pytest.fixture
def tiny_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items): 4 users, 5 items (i5 is cold), 3 categories, 10 events.

    u1: i1 view t1, i2 cart t2, i3 purchase t3      (Camping -> Footwear -> Outdoor Cooking)
    u2: i2 view t10, i4 purchase t11                (Footwear -> Footwear)
    u3: i1 view t5                                  (single event)
    u4: i4 view t7, i3 view t8, i1 cart t9, i2 purchase t12
    Rows are deliberately not in time order.
    """
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u3", "u4", "u4", "u1", "u4", "u4", "u2"],
            "item_id": ["i2", "i2", "i1", "i1", "i4", "i3", "i3", "i1", "i2", "i4"],
            "timestamp": [2, 10, 1, 5, 7, 8, 3, 9, 12, 11],
            "event": ["cart", "view", "view", "view", "view", "view", "purchase", "cart", "purchase", "purchase"],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4", "i5"],
            "category": ["Camping", "Footwear", "Outdoor Cooking", "Footwear", "Camping"],
            "title": ["Dome Tent", "Hiking Boots", "Camp Stove", "Trail Sandals", "Camp Lantern"],
            "brand": ["Trailpeak", "Stridewell", "Flamecraft", "Stridewell", "Trailpeak"],
        }
    )
    return interactions, items
