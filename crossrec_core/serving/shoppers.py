"""Shoppers and their histories, for previews: search and sampling, what-if histories, where a shopper sits.

Plain functions over an InteractionDataset and a trained model (no Streamlit), used by the studio's
Recommendations and Embedding map pages:

* ``search_users`` / ``random_user`` / ``spread_users``: which shoppers to offer, draw or place on the map;
* ``history_frame``: the history to recommend from, with what-if additions and removals;
* ``history_table``: a shopper's events as a table for people (when, item, title, category, event);
* ``whatif_candidates`` and ``item_labels``: the products offered to add to a history;
* ``history_vector`` and ``sample_user_vectors``: user vectors for the map.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import DEFAULT_EVENT, DEFAULT_EVENT_WEIGHTS, InteractionDataset, Sequences
from crossrec_core.serving.scoring import one_user_sequences

WHATIF_TOP = 3000  # the most popular products offered to add to a history (plus those already added)
MAP_USERS = 3000  # shoppers placed on the map at most


def search_users(user_ids: np.ndarray, search: str = "", limit: int = 500, current: str | None = None) -> list[str]:
    """Return up to ``limit`` user ids containing ``search`` (case-insensitive, in dataset order); ``current``
    (the shopper shown now), when given, is always among them, first when the search leaves it out."""
    ids = pd.Series(user_ids, dtype=object).astype(str)
    if search:
        ids = ids[ids.str.contains(search, case=False, regex=False)]
    out = ids.head(limit).tolist()
    if current is not None and current not in out:
        out.insert(0, current)
    return out


def random_user(ds: InteractionDataset, draw: int) -> str:
    """Return a shopper id drawn at random, reproducibly: the same ``draw`` number gives the same shopper."""
    rng = np.random.default_rng(draw)
    return str(ds.user_ids[rng.integers(ds.n_users)])


def spread_users(n_users: int, max_users: int = MAP_USERS) -> np.ndarray:
    """Return user_idx of an evenly spread sample of at most ``max_users`` of ``n_users`` (all, when fewer)."""
    n = min(n_users, max_users)
    return np.linspace(0, n_users - 1, n).astype(np.int64) if n < n_users else np.arange(n_users, dtype=np.int64)


def sample_user_vectors(model, ds: InteractionDataset, max_users: int = MAP_USERS) -> tuple[np.ndarray, np.ndarray]:
    """Return (user_idx (n,), user vectors (n, d)) of an evenly spread sample of the dataset's shoppers."""
    seqs = model.align(ds)
    users = spread_users(ds.n_users, max_users)
    return users, model.user_vectors(seqs, users, seqs.offsets[1:][users])


def strongest_event(events: pd.Series) -> str:
    """Return the event of ``events`` with the largest weight (DEFAULT_EVENT_WEIGHTS: purchase over cart over
    view; the most frequent one among equals), or DEFAULT_EVENT for an empty history."""
    names = pd.Series(events, dtype=object).astype(str)
    if names.empty:
        return DEFAULT_EVENT
    counts = names.value_counts(sort=False)
    return max(counts.index, key=lambda e: (DEFAULT_EVENT_WEIGHTS.get(e, 1.0), counts[e]))


def history_frame(ds: InteractionDataset, user_id: str | None, add: Iterable = (), remove: Iterable = ()) -> pd.DataFrame:
    """Return the history to recommend from as a frame (item_id, event, timestamp in int seconds), oldest first.

    The shopper's own events keep their real times and event types, as in training and the CLI (the
    encoder reads the time gaps); ``remove`` drops item ids; ``add`` appends item ids one second apart
    just after the shopper's last event (at 1, 2, ... for a history built from nothing), as the strongest kind
    of event in the history (``strongest_event``): "what if they did THIS next" weighs as much as anything
    they did, so the encoder and the explanations read the addition as the newest signal, not a weak one.
    """
    add = [str(i) for i in add]
    items = np.zeros(0, np.int64)
    times, events, last = np.zeros(0, np.int64), np.zeros(0, object), 0
    if user_id is not None:
        u = int(ds.user_index([user_id])[0])
        if u >= 0:
            items, t, e = ds.history(u)
            times, events = np.asarray(t, np.int64), ds.event_names[e]
            last = int(times[-1]) if len(times) else 0
    own = pd.DataFrame({"item_id": ds.item_ids[items].astype(str), "event": events, "timestamp": times})
    own = own[~own["item_id"].isin([str(i) for i in remove])]
    added = pd.DataFrame({"item_id": add, "event": strongest_event(own["event"]),
                          "timestamp": last + np.arange(1, len(add) + 1, dtype=np.int64)})
    return pd.concat([own, added], ignore_index=True).astype({"timestamp": np.int64})


def history_table(ds: InteractionDataset, user_id: str) -> pd.DataFrame:
    """Return a shopper's events for people: when (a datetime, or the position without timestamps), item_id,
    title, category, event; oldest first. An unknown shopper gets an empty table."""
    u = int(ds.user_index([user_id])[0])
    items, times, events = ds.history(u) if u >= 0 else (np.zeros(0, np.int64),) * 3
    events = np.asarray(events, np.int64)
    hist = pd.DataFrame({"when": times if ds.has_timestamps else np.arange(len(items)), "item_id": ds.item_ids[items],
                         "title": ds.item_titles[items], "category": ds.category_names[ds.item_category[items]],
                         "event": ds.event_names[events]})
    if ds.has_timestamps:
        hist["when"] = pd.to_datetime(hist["when"], unit="s")
    return hist


def whatif_candidates(model, added: Iterable = (), top: int = WHATIF_TOP) -> np.ndarray:
    """Return the item_idx offered to add to a history: the ``top`` most popular products (ties in catalogue
    order) together with those already ``added`` that the model knows, sorted by item_idx."""
    best = np.argsort(-np.asarray(model.popularity), kind="stable")[:top]
    keep = np.union1d(best, model.item_index(np.asarray(list(added), dtype=object)))
    return keep[keep >= 0].astype(np.int64)


def item_labels(titles: np.ndarray, ids: np.ndarray, categories: np.ndarray) -> list[str]:
    """Return 'title (category) [id]' labels for pickers (plain text; the id when the title is blank)."""
    t = pd.Series(titles, dtype=object).fillna("").astype(str)
    t = t.where(t.str.strip() != "", pd.Series(ids, dtype=object).astype(str))
    return (t.str.slice(0, 80) + " (" + pd.Series(categories, dtype=object).astype(str) + ") [" +
            pd.Series(ids, dtype=object).astype(str) + "]").tolist()


def catalogue_labels(model, item_idx: np.ndarray) -> dict[str, str]:
    """Return {item_id: label} of model items (``item_labels``), in the order of ``item_idx``."""
    ids = np.asarray(model.item_ids, dtype=object)[item_idx]
    cats = np.asarray(model.category_names, dtype=object)[np.asarray(model.item_category)[item_idx]]
    return dict(zip(ids, item_labels(np.asarray(model.item_titles, dtype=object)[item_idx], ids, cats)))


def history_sequences(model, history: pd.DataFrame) -> Sequences:
    """Return a one-user Sequences of a history frame's items known to the model, with their event types and
    times (the map places the shopper from the same input the recommender reads)."""
    idx = model.item_index(history["item_id"].to_numpy(dtype=object)) if len(history) else np.zeros(0, np.int64)
    known = idx >= 0
    events = model.event_index(history["event"].to_numpy(dtype=object)[known])
    return one_user_sequences(idx[known].astype(np.int32), np.asarray(events, np.int16),
                              history["timestamp"].to_numpy(np.int64)[known])


def history_vector(model, history: pd.DataFrame) -> np.ndarray:
    """Return the user vector (d,) the model encodes from a history frame (``history_frame``)."""
    seqs = history_sequences(model, history)
    return model.user_vectors(seqs, np.zeros(1, np.int64), np.array([len(seqs.items)], np.int64))[0]


def items_table(model, item_idx: np.ndarray) -> pd.DataFrame:
    """Return item_id, title, category and popularity of model items (e.g. the items selected on the map)."""
    idx = np.asarray(item_idx, dtype=np.int64)
    idx = idx[(idx >= 0) & (idx < len(model.item_ids))]
    return pd.DataFrame({"item_id": model.item_ids[idx], "title": model.item_titles[idx],
                         "category": model.category_names[model.item_category[idx]],
                         "popularity": model.popularity[idx]})
