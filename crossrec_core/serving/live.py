"""Real-time recommending: each shopper's history is kept in memory and a new event changes their next list at once.

``LiveRecommender`` wraps one ``Recommender`` (the same pipeline as ``crossrec recommend`` and the studio) and
a table of histories, one bounded queue of (item id, event, timestamp) per shopper. ``observe`` appends an
event; ``recommend`` scores the history as it stands, so an item a shopper just had is never in their next
list (the Recommender masks every history item). Nothing is retrained: a new event moves the user state,
not the model.

Memory stays flat: a shopper keeps their last ``max_len * history_factor`` events (the user encoder reads
only the last ``max_len``; the older ones still count as "already had"), and at most ``max_users``
shoppers are held, least recently active evicted first. An evicted shopper of the starting log comes back
from that log (their live events are lost); any other evicted shopper starts again empty.

``add_items`` makes new items (id, title, category) recommendable at once (issue 15, 3b): a copy of the
model grows its catalogue (``TrainedModel.add_items``: title through the text encoder, ID part 0) and a
fresh Recommender over it replaces the old one in one assignment, so a list being scored meanwhile
finishes on the old catalogue and never sees half-grown tables.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import DEFAULT_EVENT, InteractionDataset
from crossrec_core.errors import ConfigError, DataError
from crossrec_core.serving.recommender import Recommender
from crossrec_core.serving.types import RecommendableModel, RecommendationList, RecommendOptions

log = logging.getLogger(__name__)

MAX_ID_CHARS = 256  # a longer user or item id is a client bug, not an id
# |timestamp| above this is not seconds since 1970 (year ~33658) and would overflow int64 arithmetic downstream
MAX_TIMESTAMP = 1e12
MAX_TITLE_CHARS = 1000  # a new item's title; longer is a client bug (the text encoder reads ~48 tokens)


@dataclass(frozen=True)
class LiveConfig:
    """How much live state a LiveRecommender keeps.

    history_factor: a shopper keeps max_len * this many events (max_len: the model's user encoder window);
        4 keeps recently seen items excluded well past the window the encoder reads, at a few KB a shopper.
    max_users: shoppers held at once (least recently active evicted first); 100k shoppers of 200 events
        is about 1-2 GB of Python objects at the limit, so lower it on a small machine.
    """

    history_factor: int = 4
    max_users: int = 100_000

    def __post_init__(self) -> None:
        if isinstance(self.history_factor, bool) or not isinstance(self.history_factor, int) or not 1 <= self.history_factor <= 100:
            raise ConfigError(f"history_factor must be a whole number from 1 to 100, got {self.history_factor!r}.")
        if isinstance(self.max_users, bool) or not isinstance(self.max_users, int) or self.max_users < 1:
            raise ConfigError(f"max_users must be a whole number of at least 1, got {self.max_users!r}.")


@dataclass(frozen=True)
class Observed:
    """What ``observe`` recorded: the event as stored and whether the model knows the item."""

    user_id: str
    item_id: str
    event: str
    timestamp: int
    known_item: bool  # False: recorded, but ignored when scoring (the model has no vector for it)
    history_length: int  # events held for this shopper after this one


def clean_id(value: Any, what: str) -> str:
    """Return ``value`` as an id string (str or whole number), or raise DataError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{what} must be a text or a whole number, got {type(value).__name__}.")
    text = str(value).strip()
    if not text:
        raise DataError(f"{what} is empty; give the {what} of the event.")
    if len(text) > MAX_ID_CHARS:
        raise DataError(f"{what} is {len(text)} characters long; at most {MAX_ID_CHARS} are accepted.")
    return text


def clean_timestamp(value: Any) -> int:
    """Return ``value`` (seconds since 1970, int or float; None = now) as int seconds, or raise DataError."""
    if value is None:
        return int(time.time())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > MAX_TIMESTAMP:
        raise DataError(f"timestamp must be seconds since 1970 (a number), got {value!r}.")
    return int(value)


class LiveRecommender:
    """Recommends for shoppers whose events arrive one at a time (thread-safe).

    Args:
        model: a TrainedModel (registry.load_model) or any RecommendableModel.
        dataset: optional starting log; its shoppers begin with their logged history, everyone else empty.
        config: how much state to keep (LiveConfig).
        recommender: an existing Recommender over ``model`` to reuse (built when None).
    """

    def __init__(
        self,
        model: RecommendableModel,
        dataset: InteractionDataset | None = None,
        *,
        config: LiveConfig | None = None,
        recommender: Recommender | None = None,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.config = config or LiveConfig()
        self.recommender = recommender or Recommender(model)
        max_len = getattr(getattr(getattr(model, "config", None), "user", None), "max_len", 50)
        self.max_history = int(max_len) * self.config.history_factor
        self._default_event = DEFAULT_EVENT
        self._histories: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()
        self._add_lock = threading.Lock()  # one catalogue change at a time (each copies the model)
        self.n_observed = 0
        self.n_unknown = 0

    # -- state ---------------------------------------------------------------------------------
    def _history_locked(self, user_id: str) -> deque:
        """Return the shopper's queue (created from the starting log or empty); caller holds the lock."""
        hist = self._histories.get(user_id)
        if hist is not None:
            self._histories.move_to_end(user_id)
            return hist
        hist = deque(maxlen=self.max_history)
        ds = self.dataset
        if ds is not None:
            u = int(ds.user_index([user_id])[0])
            if u >= 0:
                items, times, events = ds.history(u)
                tail = slice(max(len(items) - self.max_history, 0), None)
                hist.extend(zip(ds.item_ids[items[tail]].astype(str), ds.event_names[events[tail]].astype(str),
                                np.asarray(times[tail], dtype=np.int64).tolist()))
        self._histories[user_id] = hist
        while len(self._histories) > self.config.max_users:
            self._histories.popitem(last=False)  # the least recently active shopper
        return hist

    @property
    def n_users(self) -> int:
        """Shoppers whose history is held in memory now."""
        with self._lock:
            return len(self._histories)

    def history(self, user_id: Any) -> pd.DataFrame:
        """Return a copy of the shopper's held history: item_id, event, timestamp, oldest first."""
        uid = clean_id(user_id, "user_id")
        with self._lock:
            rows = list(self._history_locked(uid))
        return pd.DataFrame(rows, columns=["item_id", "event", "timestamp"]).astype({"timestamp": np.int64})

    # -- events --------------------------------------------------------------------------------
    def observe(self, user_id: Any, item_id: Any, event: Any = None, timestamp: Any = None) -> Observed:
        """Record one event and return what was stored; the shopper's next ``recommend`` sees it.

        Args:
            user_id, item_id: ids (text or whole numbers). An item the model does not know is recorded
                (``known_item`` False, counted in ``n_unknown``) but ignored when scoring.
            event: event type name (e.g. "view", "purchase"); None = the default event.
            timestamp: seconds since 1970; None = now. An event older than the shopper's last one keeps
                its place in arrival order (time gaps are read as 0 for it).
        Raises:
            DataError: an id, event or timestamp that cannot be used (the message says which).
        """
        uid = clean_id(user_id, "user_id")
        iid = clean_id(item_id, "item_id")
        ev = self._default_event if event is None else clean_id(event, "event")
        ts = clean_timestamp(timestamp)
        known = bool(self.model.item_index(np.array([iid], dtype=object))[0] >= 0)
        with self._lock:
            hist = self._history_locked(uid)
            hist.append((iid, ev, ts))
            self.n_observed += 1
            self.n_unknown += int(not known)
            n = len(hist)
        if not known:
            log.info("live: item %r is not in the model's catalogue; recorded for %r, ignored when scoring", iid, uid)
        return Observed(uid, iid, ev, ts, known, n)

    def observe_many(self, events: Iterable[Mapping[str, Any]]) -> list[Observed]:
        """Record several events (mappings with user_id, item_id and optional event, timestamp), in order.

        Every event is checked first, so a bad one records none of them (DataError names its position)."""
        batch = list(events)
        checked = []
        for n, e in enumerate(batch):
            if not isinstance(e, Mapping):
                raise DataError(f"Event {n + 1} is not an object with user_id and item_id.")
            missing = [f for f in ("user_id", "item_id") if e.get(f) is None]
            if missing:
                raise DataError(f"Event {n + 1} has no {' or '.join(missing)}.")
            try:
                checked.append((clean_id(e["user_id"], "user_id"), clean_id(e["item_id"], "item_id"),
                                None if e.get("event") is None else clean_id(e["event"], "event"), clean_timestamp(e.get("timestamp"))))
            except DataError as err:
                raise DataError(f"Event {n + 1}: {err}") from None
        return [self.observe(*c) for c in checked]

    # -- new items -----------------------------------------------------------------------------
    def add_items(self, items: Iterable[Mapping[str, Any]] | pd.DataFrame) -> list[str]:
        """Add new items (mappings or a frame with item_id, title, category) to the catalogue; return their ids.

        They are recommendable from the next ``recommend`` on; nothing is retrained. Every item is checked
        first, so a bad one adds none of them.
        Raises:
            DataError: a missing or malformed field, an id the model already knows, a category it was not
                trained on (the message says which).
            ConfigError: the model cannot take new items (not a TrainedModel).
        """
        frame = items.copy() if isinstance(items, pd.DataFrame) else _items_frame(list(items))
        with self._add_lock:
            if not hasattr(self.model, "add_items"):
                raise ConfigError("This model cannot take new items; serve a model trained with `crossrec train`.")
            # the text encoder is shared, not copied: it is read-only and ~90 MB
            shared = getattr(self.model, "_text_encoder", None)
            model = copy.deepcopy(self.model, memo={id(shared): shared} if shared is not None else None)
            model.add_items(frame)
            recommender = Recommender(model)
            with self._lock:
                self.model, self.recommender = model, recommender
        return [str(i) for i in frame["item_id"]]

    # -- recommending --------------------------------------------------------------------------
    def recommend(self, user_id: Any, k: int = 10, *, options: RecommendOptions | None = None, **knobs: Any) -> RecommendationList:
        """Return the top-``k`` list for the shopper's history as it stands now (items they had excluded).

        ``options`` / ``knobs``: as Recommender.recommend (cross_category_only, threshold, ...). A shopper
        with no history gets the cold-start list (popular items in likely categories)."""
        uid = clean_id(user_id, "user_id")
        with self._lock:
            rows = list(self._history_locked(uid))
        if rows:
            ids, events, times = zip(*rows)
            # arrival order is the order; a late event must not make a negative time gap
            frame = pd.DataFrame({"item_id": list(ids), "event": list(events),
                                  "timestamp": np.maximum.accumulate(np.asarray(times, dtype=np.int64))})
        else:
            frame = pd.DataFrame({"item_id": pd.Series([], dtype=object), "event": pd.Series([], dtype=object),
                                  "timestamp": pd.Series([], dtype=np.int64)})
        out = self.recommender.recommend(frame, k, options=options, **knobs)
        return RecommendationList(items=out.items, user_id=uid, history_item_ids=out.history_item_ids,
                                  unknown_item_ids=out.unknown_item_ids, cold_start=out.cold_start, notes=out.notes)


def _items_frame(rows: list) -> pd.DataFrame:
    """Return new items given as mappings as a frame (item_id, title, category), or raise DataError naming the first bad one."""
    if not rows:
        raise DataError("The list of new items is empty; send at least one item.")
    out = []
    for n, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise DataError(f"Item {n + 1} is not an object with item_id, title and category.")
        missing = [f for f in ("item_id", "title", "category") if r.get(f) is None]
        if missing:
            raise DataError(f"Item {n + 1} has no {' or '.join(missing)}.")
        try:
            iid, cat = clean_id(r["item_id"], "item_id"), clean_id(r["category"], "category")
        except DataError as err:
            raise DataError(f"Item {n + 1}: {err}") from None
        title = r["title"]
        if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
            raise DataError(f"Item {n + 1}: title must be a text of at most {MAX_TITLE_CHARS} characters.")
        out.append((iid, title, cat))
    return pd.DataFrame(out, columns=["item_id", "title", "category"])
