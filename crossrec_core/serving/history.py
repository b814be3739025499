"""The forms a shopper's history can take in ``Recommender.recommend``: a user id of a dataset, a list of
item ids or (item id, event) pairs, or a frame (what-if histories built in the studio)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import DEFAULT_EVENT, InteractionDataset
from crossrec_core.errors import UnknownItemError


def resolve_history(history, dataset: InteractionDataset | None) -> tuple[str | None, list, list | None, np.ndarray | None]:
    """Return (user_id or None, item ids, event names or None, times or None) for any history form.

    A frame's ``timestamp`` column (int seconds, oldest first) is kept, so a history built from a
    shopper's real events has the same time gaps as training; lists are spaced one step apart."""
    if isinstance(history, (str, np.str_)):
        ds = dataset
        if ds is None:
            raise UnknownItemError(
                f"'{history}' looks like a user id, but no dataset was given to look users up in. "
                "Pass the dataset to Recommender, or give the history as a list of item ids."
            )
        u = int(ds.user_index([str(history)])[0])
        if u < 0:
            raise UnknownItemError(
                f"User '{history}' is not in dataset '{ds.name}' ({ds.n_users} users, e.g. '{ds.user_ids[0]}'). "
                "Check the id, or build the history by hand from item ids."
            )
        items, times, events = ds.history(u)
        return str(history), list(ds.item_ids[items]), list(ds.event_names[events]), np.asarray(times, np.int64)
    if isinstance(history, pd.DataFrame):
        if "item_id" not in history.columns:
            raise UnknownItemError(
                f"The history table needs an 'item_id' column; it has {', '.join(map(str, history.columns))}."
            )
        ids = history["item_id"].astype(str).tolist()
        events = history["event"].astype(str).tolist() if "event" in history.columns else None
        times = history["timestamp"].to_numpy(dtype=np.int64) if "timestamp" in history.columns else None
        return None, ids, events, times
    ids, events, has_events = [], [], False
    for entry in history:
        if isinstance(entry, (tuple, list)) and len(entry) == 2:
            ids.append(str(entry[0]))
            events.append(str(entry[1]))
            has_events = True
        else:
            ids.append(str(entry))
            events.append(None)
    if has_events:
        default = DEFAULT_EVENT  # mapped to the model's default event
        events = [e if e is not None else default for e in events]
        return None, ids, events, None
    return None, ids, None, None
