"""A tiny planted log shared by tests: every shopper goes tent -> boots -> stove -> mug (four categories)."""

from __future__ import annotations

import pandas as pd

PREFIX = {"t": "Camping", "b": "Footwear", "s": "Outdoor Cooking", "m": "Kitchenware"}


def journey_frames(n_users: int = 60, t0: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items): each user's four events at times t0..t0+3, items titled "Item <id>"."""
    rows = []
    for u in range(n_users):
        rows += [(f"u{u}", f"t{u % 3}", t0, "view"), (f"u{u}", f"b{u % 2}", t0 + 1, "cart"),
                 (f"u{u}", f"s{u % 4}", t0 + 2, "purchase"), (f"u{u}", f"m{u % 2}", t0 + 3, "view")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    ids = sorted(set(inter["item_id"]))
    items = pd.DataFrame({"item_id": ids, "category": [PREFIX[i[0]] for i in ids], "title": [f"Item {i}" for i in ids]})
    return inter, items
