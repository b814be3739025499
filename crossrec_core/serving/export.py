"""The all-shoppers export: one recommendation list per user of a log, as one table.

One function, ``recommend_for_log``, serves both callers:

* ``crossrec recommend`` (the CLI contract, see README "The terminal") takes the default columns, exactly
  ``user_id, rank, item_id, score, category``, where ``score`` is the calibrated probability that the
  item is the user's next one;
* the studio's "Download all shoppers" takes ``detailed=True``: ``user_id, rank, item_id, title, category,
  probability, score`` (and ``explanation`` with ``explain=True``), where ``probability`` is that same
  calibrated probability and ``score`` is the retrieval score (dot product) shown in the studio's tables.

Both go through the same Recommender batch path with the same filters, so a user's list is the same
items in the same order whichever caller asks. ``to_csv_bytes`` turns a table into a download whose text
for people is neutralised against spreadsheet formulas while ids stay byte for byte.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import UNKNOWN_CATEGORY, InteractionDataset, Sequences
from crossrec_core.errors import ModelError
from crossrec_core.safe_text import neutralise_frame
from crossrec_core.serving.recommender import Recommender
from crossrec_core.serving.types import RecommendOptions

OUTPUT_COLUMNS = ["user_id", "rank", "item_id", "score", "category"]
DETAILED_COLUMNS = ["user_id", "rank", "item_id", "title", "category", "probability", "score"]


def with_empty_users(seqs: Sequences, n_new: int) -> Sequences:
    """Return ``seqs`` with ``n_new`` users without events appended (for users the log does not know)."""
    if n_new == 0:
        return seqs
    offsets = np.concatenate([seqs.offsets, np.full(n_new, seqs.offsets[-1], dtype=np.int64)])
    return Sequences(offsets, seqs.items, seqs.times, seqs.events)


def history_category_pairs(model, ds: InteractionDataset) -> tuple[np.ndarray, np.ndarray]:
    """Return (user_idx, model category_idx) for every event, using the log/items-file category, so
    cross_category_only also blocks categories of history items the model does not know."""
    cat_names = ds.category_names[ds.item_category[ds.seqs.items]]
    cat_idx = pd.Index(np.asarray(model.category_names, dtype=object).astype(str)).get_indexer(cat_names.astype(str))
    users = ds.seqs.user_of_event().astype(np.int64)
    keep = (cat_idx >= 0) & (cat_names != UNKNOWN_CATEGORY)
    pairs = pd.DataFrame({"u": users[keep], "c": cat_idx[keep]}).drop_duplicates()
    return pairs["u"].to_numpy(np.int64), pairs["c"].to_numpy(np.int64)


def output_categories(model, ds: InteractionDataset, item_idx: np.ndarray) -> np.ndarray:
    """Return the category name of each recommended model item: the model's, else the log's items table's."""
    names = np.asarray(model.category_names, dtype=object)[np.asarray(model.item_category)[item_idx]].astype(str)
    missing = (names == UNKNOWN_CATEGORY) | (names == "")
    if missing.any():
        ds_idx = ds.item_index(np.asarray(model.item_ids, dtype=object)[item_idx[missing]])
        fallback = np.where(ds_idx >= 0, ds.category_names[ds.item_category[np.maximum(ds_idx, 0)]], names[missing])
        names = names.astype(object)
        names[missing] = fallback
    return names


def _check_shares_items(model, ds: InteractionDataset) -> None:
    if not (model.item_index(ds.item_ids) >= 0).any():
        raise ModelError(
            f"The log '{ds.name}' shares no items with model '{getattr(model, 'name', 'model')}' ({ds.n_items} items "
            f"in the log, e.g. '{ds.item_ids[0] if ds.n_items else ''}'; {len(model.item_ids)} in the model, e.g. "
            f"'{model.item_ids[0]}'). Use the log the model was trained on, or check the --item-col mapping."
        )
    model.check_compatible(ds)


def recommend_for_log(
    model,
    ds: InteractionDataset,
    *,
    k: int,
    users: np.ndarray | None = None,
    options: RecommendOptions | None = None,
    detailed: bool = False,
    explain: bool = False,
    recommender: Recommender | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    **knobs,
) -> pd.DataFrame:
    """Return the top-``k`` recommendations of ``model`` for the users of ``ds``, one row per item.

    Args:
        model: a TrainedModel (or a double with ``align`` and ``check_compatible``).
        ds: the log whose events are the users' histories; nothing in a user's history is recommended.
        users: user ids to recommend for (default: every user of ds, in order); ids not in ds get cold-start lists.
        options, knobs: the Recommender's options (RecommendOptions and/or its fields by name, e.g.
            ``cross_category_only=True``; the threshold applies to the calibrated probability).
        detailed: False = the CLI columns (OUTPUT_COLUMNS, ``score`` = calibrated probability); True = the
            studio's columns (DETAILED_COLUMNS: raw ``title``, ``probability``, and ``score`` = retrieval score).
        explain: with ``detailed``, add an ``explanation`` column (a sentence per row; slower on big logs).
        recommender: a Recommender of ``model`` to reuse (the studio caches one); default: a new one.
        on_batch: progress callback on_batch(users_done, users_total).
    Raises:
        ModelError: the log shares no (or too few) items with the model.
    """
    _check_shares_items(model, ds)
    opts = RecommendOptions.merged(options, k=k, **knobs)
    seqs = model.align(ds)
    user_ids = np.asarray(ds.user_ids, dtype=object)
    user_rows = np.arange(ds.n_users, dtype=np.int64)
    if users is not None:
        wanted = np.asarray(users, dtype=object)
        user_rows = ds.user_index(wanted).astype(np.int64).copy()
        new = wanted[user_rows < 0]
        user_rows[user_rows < 0] = ds.n_users + np.arange(len(new))
        seqs = with_empty_users(seqs, len(new))
        user_ids = np.concatenate([user_ids, new.astype(str).astype(object)])
    recs = (recommender or Recommender(model)).recommend_batch(
        seqs, user_rows, seqs.offsets[user_rows + 1], options=opts,
        extra_history_categories=history_category_pairs(model, ds) if opts.cross_category_only else None,
        on_batch=on_batch,
        explain=bool(explain and detailed),
    )
    item_idx = recs["item_idx"].to_numpy(np.int64)
    out = pd.DataFrame({
        "user_id": pd.Series(user_ids[recs["user_idx"].to_numpy()], dtype=object),
        "rank": recs["rank"].to_numpy(np.int64),
        "item_id": pd.Series(np.asarray(model.item_ids, dtype=object)[item_idx], dtype=object),
        "title": pd.Series(np.asarray(model.item_titles, dtype=object)[item_idx], dtype=object),
        "category": pd.Series(output_categories(model, ds, item_idx), dtype=object),
        "probability": recs["probability"].to_numpy(np.float32),
        "score": recs["score"].to_numpy(np.float32),
    })
    if not detailed:
        return out.assign(score=out["probability"])[OUTPUT_COLUMNS]
    if explain:
        out["explanation"] = recs["explanation"].to_numpy() if "explanation" in recs else np.empty(0, dtype=object)
    return out


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """Return ``frame`` as CSV bytes for a download: text for people (title, category, explanation) is
    neutralised against spreadsheet formulas (safe_text); ids and numbers are written as they are."""
    return neutralise_frame(frame).to_csv(index=False).encode()
