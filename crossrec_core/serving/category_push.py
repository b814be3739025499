"""Pushing one category: the shoppers most likely to buy in it next, and the items that would bring them.

"What should we push into Menswear?" For every shopper of a log, the model's list restricted to the target
category (the same ranking and calibrated probabilities as `crossrec recommend --include-category`): each
row's probability is the chance that this item is the shopper's next one, measured against the shopper's
full candidate pool (models/calibration.py), so filtering to one category never inflates it. Summed over a
shopper's top items in the category, it is the chance their next item is one of them: a lower bound on
their chance of buying in the category next, and what shoppers are ranked by. Summed over shoppers, an
item's probabilities are the number of shoppers expected to take it as their next item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.errors import ConfigError
from crossrec_core.safe_text import PEOPLE_TEXT_COLUMNS, neutralise_frame
from crossrec_core.serving.export import history_category_pairs, recommend_for_log
from crossrec_core.serving.recommender import Recommender

SHOPPER_COLUMNS = ["user_id", "chance", "new_to_category", "items", "titles"]
ITEM_COLUMNS = ["item_id", "title", "expected_shoppers", "shoppers_listing", "new_to_category_share"]


@dataclass(frozen=True)
class CategoryAudience:
    """The audience of one category: shoppers (best first) and items (most expected shoppers first)."""

    category: str
    shoppers: pd.DataFrame  # SHOPPER_COLUMNS
    items: pd.DataFrame  # ITEM_COLUMNS
    n_shoppers_scored: int
    expected_shoppers: float  # sum of every shown probability: shoppers expected to take one of these items next


def category_audience(
    model,
    ds: InteractionDataset,
    category: str,
    *,
    k_items: int = 5,
    new_to_category_only: bool = False,
    recommender: Recommender | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> CategoryAudience:
    """Return who to target in ``category`` and with which items, for every shopper of ``ds``.

    Args:
        k_items: items of the category per shopper (their best ``k_items``).
        new_to_category_only: keep only shoppers who never had an item of the category (cross-selling).
        recommender, on_batch: as in ``recommend_for_log`` (a cached Recommender, a progress callback).
    Raises:
        ConfigError: the model knows no category of that name.
    """
    names = [str(c) for c in np.asarray(model.category_names, dtype=object)]
    if str(category) not in names:
        raise ConfigError(f"The model knows no category '{category}'. Pick one of its {len(names)} categories "
                          f"(for example '{names[0]}').") if names else ConfigError("The model knows no categories.")
    rows = recommend_for_log(model, ds, k=int(k_items), detailed=True, recommender=recommender, on_batch=on_batch,
                             include_categories=[str(category)])
    had = _shoppers_with_category(model, ds, str(category))
    rows = rows.assign(new_to_category=~rows["user_id"].isin(had))
    if new_to_category_only:
        rows = rows[rows["new_to_category"]]
    rows = rows.sort_values(["user_id", "rank"], kind="stable")
    shoppers = (
        rows.groupby("user_id", sort=False)
        .agg(chance=("probability", "sum"), new_to_category=("new_to_category", "first"),
             items=("item_id", lambda s: " | ".join(map(str, s))), titles=("title", lambda s: " | ".join(map(str, s))))
        .reset_index()
        .sort_values(["chance", "user_id"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    items = (
        rows.groupby("item_id", sort=False)
        .agg(title=("title", "first"), expected_shoppers=("probability", "sum"), shoppers_listing=("user_id", "size"),
             new_to_category_share=("new_to_category", "mean"))
        .reset_index()
        .sort_values(["expected_shoppers", "item_id"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    shoppers["chance"] = shoppers["chance"].astype(np.float64)
    items["expected_shoppers"] = items["expected_shoppers"].astype(np.float64)
    return CategoryAudience(str(category), shoppers[SHOPPER_COLUMNS], items[ITEM_COLUMNS], int(rows["user_id"].nunique()),
                            float(rows["probability"].sum()))


def _shoppers_with_category(model, ds: InteractionDataset, category: str) -> set[str]:
    """Return the ids of the shoppers of ``ds`` with at least one event in ``category`` (the log's own
    categories, as cross_category_only counts them: export.history_category_pairs)."""
    users, cats = history_category_pairs(model, ds)
    where = list(map(str, np.asarray(model.category_names, dtype=object))).index(category)
    return set(np.asarray(ds.user_ids, dtype=object)[np.unique(users[cats == where])].astype(str))


def audience_csv(frame: pd.DataFrame) -> bytes:
    """Return a CategoryAudience table as CSV bytes, text for people neutralised against spreadsheet
    formulas (the joined ``titles`` too); ids and numbers written as they are."""
    return neutralise_frame(frame, (*PEOPLE_TEXT_COLUMNS, "titles")).to_csv(index=False).encode()
