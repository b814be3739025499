"""TrainedModel: a trained CrossRecNet plus its vocabularies, priors, item-kNN term and calibration."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import DEFAULT_EVENT, InteractionDataset, Sequences, index_of
from crossrec_core.errors import DataError, ModelError
from crossrec_core.models.calibration import Calibration
from crossrec_core.models.fusion import CrossRecNet
from crossrec_core.models.category_history import RECENT_ONLY, CategoryHistory
from crossrec_core.models.item_encoder import attribute_token_matrix
from crossrec_core.models.prior import build_item_prior, category_lift, item_prior_columns, learned_category_lift, user_prior_columns
from crossrec_core.models.text import TextEncoder, item_texts

log = logging.getLogger(__name__)

# check_compatible: below this share of known events a log is "another shop" for the model
MIN_KNOWN_EVENT_SHARE = 0.3


def event_hashes(user_ids: np.ndarray, item_ids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Return int64 (n,) hashes of (user id, item id, timestamp) triples (stable across processes).

    What a model records of its training events, so an evaluation whose held-out targets are among
    them is refused (the leak guard, evaluation/evaluator.seen_targets)."""
    if len(user_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame({"u": pd.Series(user_ids, dtype=object).astype(str), "i": pd.Series(item_ids, dtype=object).astype(str),
                          "t": np.asarray(times, dtype=np.int64)})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().view(np.int64)


class TrainedModel:
    """A trained cross-category recommender (retrieval dot product + fusion re-ranker).

    Inference methods set eval() and torch.no_grad() themselves and work in batches internally.
    """

    def __init__(
        self,
        *,
        name: str,
        config: ModelConfig,
        net: CrossRecNet,
        item_ids: np.ndarray,
        item_titles: np.ndarray,
        category_names: np.ndarray,
        item_category: np.ndarray,
        event_names: np.ndarray,
        popularity: np.ndarray,
        category_transitions: np.ndarray,
        metrics: dict,
        data_fingerprint: str,
        attribute_columns: tuple[str, ...] = (),
        vector_columns: tuple[str, ...] = (),
        attr_vocab: list[str] | None = None,
        device: torch.device | None = None,
        batch_size: int = 512,
        knn=None,
        knn_weight: float = 0.0,
        rules=None,
        calibration: Calibration | None = None,
        fusion_rerank: bool = False,
        train_event_hashes: np.ndarray | None = None,
        threshold: float | None = None,
        category_pairs: tuple[np.ndarray, np.ndarray] | None = None,
        category_mix: np.ndarray | None = None,
        cold_max_events: int | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.net = net
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.item_titles = np.asarray(item_titles, dtype=object)
        self.category_names = np.asarray(category_names, dtype=object)
        self.item_category = np.asarray(item_category, dtype=np.int32)
        self.event_names = np.asarray(event_names, dtype=object)
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.category_transitions = np.asarray(category_transitions, dtype=np.float32)
        self.metrics = metrics
        self.data_fingerprint = data_fingerprint
        self.attribute_columns = tuple(attribute_columns)
        self.vector_columns = tuple(vector_columns)
        self.attr_vocab = list(attr_vocab or ["<pad>", "<unk>"])
        self.device = device or torch.device("cpu")
        self.batch_size = int(batch_size)
        # item-neighbour term of retrieval (an ItemKNNRanker: co-occurrence or next-item rules) weighted by a
        # scalar chosen on validation (0 = off); ``rules``: next-item rules the fusion scorer reads either way
        self.knn = knn
        self.knn_weight = float(knn_weight)
        self.rules = rules
        # the fusion scorer's logit -> probability mapping, fitted on held-out positions (training/fusion_fit.py),
        # and whether its re-rank beat retrieval there (else lists keep retrieval order)
        self.calibration = calibration or Calibration()
        self.fusion_rerank = bool(fusion_rerank)
        # shoppers with at most this many known events get the cold-start list instead of the encoders' one,
        # chosen on validation (training/tuning.py); None = the Recommender's default (models saved before)
        self.cold_max_events = None if cold_max_events is None else int(cold_max_events)
        # sorted hashes of the (user, item, time) events the model was fitted on (event_hashes)
        self.train_event_hashes = np.sort(np.asarray(train_event_hashes if train_event_hashes is not None else [], dtype=np.int64))
        # the probability threshold saved with the model (registry.save_threshold); None = none saved
        self.threshold = None if threshold is None else float(threshold)
        self.net.to(self.device).eval()
        self._item_vecs: np.ndarray | None = None
        self._base_vecs: np.ndarray | None = None
        self._part_shares: tuple[list[str], np.ndarray] | None = None
        self.prior = build_item_prior(self.popularity, self.item_category, self.category_transitions)
        # P(next category | history) beyond the recent flow: second-order pair counts of the training part
        # and the validated mixture weights (models/category_history.py); none saved = the recent flow alone
        keys, counts = category_pairs if category_pairs is not None else (np.zeros(0, np.int64), np.zeros(0, np.float32))
        self.category_history = CategoryHistory(
            self.prior.transition_proba.shape[0], np.asarray(keys, dtype=np.int64), np.asarray(counts, dtype=np.float32),
            self.prior.category_prior.astype(np.float64), RECENT_ONLY if category_mix is None else np.asarray(category_mix, dtype=np.float32),
        )
        self._item_lookup = pd.Index(pd.Series(self.item_ids, dtype=object).astype(str))
        self._event_lookup = pd.Index(pd.Series(self.event_names, dtype=object).astype(str))
        self._text_encoder: TextEncoder | None = None  # built on the first add_items (loading it takes ~1 s)

    # -- sizes and lookups ---------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def item_index(self, ids) -> np.ndarray:
        """Return int64 item_idx for each id, -1 for unknown ids."""
        return index_of(self._item_lookup, ids)

    @property
    def default_event_index(self) -> int:
        hit = np.flatnonzero(self.event_names == DEFAULT_EVENT)
        return int(hit[0]) if len(hit) else 0

    def event_index(self, names) -> np.ndarray:
        """Return int64 event_idx for each name; unknown events get the default event index."""
        idx = index_of(self._event_lookup, names)
        return np.where(idx < 0, self.default_event_index, idx)

    # -- data alignment ------------------------------------------------------------------------
    def align(self, ds: InteractionDataset) -> Sequences:
        """Return ds's sequences in the model's item/event index space; unknown items dropped (count logged).

        One row per ds user, in ds.user_ids order.
        """
        item_map = self.item_index(ds.item_ids)
        ev_map = self.event_index(ds.event_names).astype(np.int16)
        mapped = item_map[ds.seqs.items] if ds.n_events else np.zeros(0, dtype=np.int64)
        keep = mapped >= 0
        n_drop = int((~keep).sum())
        if n_drop:
            log.info("align: dropped %d of %d events whose items the model does not know", n_drop, len(keep))
        users = ds.seqs.user_of_event()[keep]
        counts = np.bincount(users, minlength=ds.n_users).astype(np.int64)
        offsets = np.zeros(ds.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        events = ev_map[ds.seqs.events[keep]] if len(ev_map) else ds.seqs.events[keep]
        return Sequences(offsets, mapped[keep].astype(np.int32), ds.seqs.times[keep], events.astype(np.int16))

    def check_compatible(self, ds: InteractionDataset) -> None:
        """Raise ModelError when too few of ds's events are on items the model knows."""
        if ds.n_events == 0:
            return
        known_items = self.item_index(ds.item_ids) >= 0
        share = float(known_items[ds.seqs.items].mean())
        if share < MIN_KNOWN_EVENT_SHARE:
            unknown = ds.item_ids[~known_items]
            example = f" (for example item '{unknown[0]}')" if len(unknown) else ""
            raise ModelError(
                f"Model '{self.name}' knows the items of only {share:.0%} of the events in '{ds.name}'"
                f"{example}; at least {MIN_KNOWN_EVENT_SHARE:.0%} is needed. It was trained on another "
                "catalogue: train a new model on this log, or pick the model trained on it."
            )

    # -- inference -----------------------------------------------------------------------------
    @property
    def prior_weights(self) -> tuple[float, float]:
        """Return (w_pop, w_cat): the weights of the log-prior folded into retrieval (0, 0 = off)."""
        w = self.net.prior_weights.detach().cpu().numpy()
        return float(w[0]), float(w[1])

    def set_prior_weights(self, w_pop: float, w_cat: float) -> None:
        """Set the log-prior weights (stored in the network's weights, so saved with the model)."""
        with torch.no_grad():
            self.net.prior_weights.copy_(torch.tensor([w_pop, w_cat], dtype=torch.float32))
        self._item_vecs = None

    def invalidate_cache(self) -> None:
        """Forget cached item vectors (after the weights changed)."""
        self._base_vecs = None
        self._item_vecs = None
        self._part_shares = None

    def base_item_vectors(self) -> np.ndarray:
        """Return float32 (n_items, d) learned item vectors (without the prior columns; cached)."""
        if self._base_vecs is None:
            self.net.eval()
            with torch.no_grad():
                chunks = [
                    self.net.item_encoder(torch.arange(s, min(s + 8192, self.n_items), device=self.device)).float().cpu()
                    for s in range(0, self.n_items, 8192)
                ]
            self._base_vecs = torch.cat(chunks).numpy().astype(np.float32) if chunks else np.zeros((0, self.config.dim), np.float32)
        return self._base_vecs

    def part_shares(self) -> tuple[list[str], np.ndarray]:
        """Return (part names, float32 (n_items, parts)): each item-encoder part's share of the item vector's length
        (|part| / sum of |part|; rows sum to 1). What the map colours by; cached like the item vectors."""
        if self._part_shares is not None:
            return self._part_shares
        enc = self.net.item_encoder
        self.net.eval()
        names, norms = None, []
        with torch.no_grad():
            for s in range(0, self.n_items, 8192):
                parts = enc.parts(torch.arange(s, min(s + 8192, self.n_items), device=self.device))
                names = list(parts)
                norms.append(torch.stack([p.float().norm(dim=-1) for p in parts.values()], dim=1).cpu())
        if not names:
            return [], np.zeros((self.n_items, 0), np.float32)
        n = torch.cat(norms).numpy().astype(np.float32)
        shares = n / np.maximum(n.sum(axis=1, keepdims=True), 1e-12)
        shares.setflags(write=False)  # shared by every session of the studio
        self._part_shares = (names, shares)
        return self._part_shares

    def item_vectors(self) -> np.ndarray:
        """Return float32 (n_items, D) item vectors used by retrieval (cached).

        D = d, plus the log-prior columns when the blend is on (models/prior.py): the dot product with
        user_vectors then includes the popularity / category-flow prior.
        """
        if self._item_vecs is None:
            base = self.base_item_vectors()
            extra = item_prior_columns(self.prior, self.prior_weights)
            self._item_vecs = np.ascontiguousarray(np.concatenate([base, extra], axis=1)) if extra.shape[1] else base
        return self._item_vecs

    def _item_table(self) -> torch.Tensor:
        return torch.from_numpy(self.base_item_vectors()).to(self.device)

    def base_user_vectors(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, d) learned user states (without the prior columns; empty -> generic state)."""
        users = np.asarray(users, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        out = np.zeros((len(users), self.config.dim), dtype=np.float32)
        if len(users) == 0:
            return out
        table = self._item_table()
        self.net.eval()
        cfg = self.config.user
        # Why sorted: a batch is padded to its longest history, so batching similar lengths together
        # avoids encoding mostly padding when a few long histories sit among many short ones
        lengths = np.minimum(ends - seqs.offsets[users], cfg.max_len)
        order = np.argsort(lengths, kind="stable")
        with torch.no_grad():
            for s in range(0, len(users), self.batch_size):
                idx = order[s : s + self.batch_size]
                w = seqs.windows(users[idx], ends[idx], cfg.max_len, cfg.n_time_buckets)
                t = {k: torch.from_numpy(w[k]).to(self.device) for k in ("items", "events", "gaps", "valid")}
                h = self.net.user_states(t["items"], t["events"], t["gaps"], t["valid"], item_table=table, last_only=True)  # (B, d)
                out[idx] = h.float().cpu().numpy()
        return out

    def category_lift(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """Return float32 (B, n_buckets) log P(category bucket | history) - log P(bucket).

        P(category | history) comes from the network's next-category head when it has one (from the
        user ``states``, base_user_vectors, computed when not given), else from the category
        transitions of the last events mixed with the last-two and habit estimates
        (models/prior.py, models/category_history.py).
        """
        head = getattr(self.net, "category_head", None)
        if head is None:
            return category_lift(self.prior, self.item_category, seqs, users, ends, history=self.category_history)
        if states is None:
            states = self.base_user_vectors(seqs, users, ends)
        with torch.no_grad():
            logits = head(torch.from_numpy(np.ascontiguousarray(states[:, : self.config.dim])).to(self.device)).float()
            log_proba = torch.log_softmax(logits, dim=1).cpu().numpy()
        return learned_category_lift(self.prior, log_proba)

    def user_vectors(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, D) user states for the histories seqs[offsets[u]:end] (empty -> generic state).

        D matches item_vectors(): the learned d columns plus the log-prior columns when the blend is on.
        """
        base = self.base_user_vectors(seqs, users, ends)
        weights = self.prior_weights
        if weights == (0.0, 0.0):
            return base
        lift = self.category_lift(seqs, users, ends, states=base) if weights[1] != 0 else None
        return np.concatenate([base, user_prior_columns(lift, len(base), weights)], axis=1)

    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, n_items) retrieval scores: user_vectors @ item_vectors.T (prior included)
        plus the validated item-kNN term (see neighbour_scores)."""
        return self.add_neighbour_scores(self.user_vectors(seqs, users, ends) @ self.item_vectors().T, seqs, users, ends)

    def neighbour_scores(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
        """Return float32 (B, n_items) item-kNN scores of the histories, or None when the term is off."""
        if self.knn is None or self.knn_weight == 0.0:
            return None
        return self.knn.score_histories(seqs, users, ends)

    def weighted_neighbour_scores(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
        """Return float32 (B, n_items) knn_weight * item-kNN scores: the term retrieval adds and the fusion
        scorer reads per candidate (compute it once per batch and use it for both); None when off."""
        nb = self.neighbour_scores(seqs, users, ends)
        return None if nb is None else np.float32(self.knn_weight) * np.asarray(nb, dtype=np.float32)

    def add_neighbour_scores(self, scores: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return ``scores`` (B, n_items) plus knn_weight * item-kNN scores (unchanged when the term is off)."""
        knn = self.weighted_neighbour_scores(seqs, users, ends)
        return scores if knn is None else scores + knn

    @property
    def has_neighbour_term(self) -> bool:
        """Whether retrieval includes the item-kNN term."""
        return self.knn is not None and self.knn_weight != 0.0

    # -- new items without retraining (issue 15, 3b) -------------------------------------------
    def add_items(self, items: pd.DataFrame) -> np.ndarray:
        """Append new items to the catalogue so they can be recommended at once; return their int64 item_idx.

        ``items`` has columns item_id, title, category (plus the model's attribute columns, optional).
        Each new item is placed like a cold item: title vector through the model's own text encoder
        (offline), category embedding, attribute tokens, ID part 0, popularity 0 and no item-kNN
        neighbours. Changes the model in place (build a new Recommender afterwards); it can be saved.
        Raises DataError for a missing column, an empty or repeated id, an id the model already knows,
        or a category the model was not trained on (it has no embedding for it).
        """
        frame = self._check_new_items(items)
        enc = self.net.item_encoder
        cat_idx = index_of(pd.Index(pd.Series(self.category_names, dtype=object).astype(str)), frame["category"])
        text = None
        if enc.use_text:
            if self._text_encoder is None:
                item_cfg = self.config.item
                self._text_encoder = TextEncoder(item_cfg.text_model_dir, max_seq_length=item_cfg.text_max_seq_length, device=str(self.device))
            text = torch.from_numpy(self._text_encoder.encode(item_texts(frame, self.attribute_columns)))
        tokens = None
        if enc.use_attr:
            tokens = torch.from_numpy(attribute_token_matrix(frame, self.attribute_columns, self.attr_vocab, self.config.item.attr_max_tokens))
        # vec_* columns: the training mean / spread they were scaled by is not saved, so new items get 0
        enc.append_items(torch.from_numpy(cat_idx), text_vecs=text, attr_tokens=tokens)
        start, m = self.n_items, len(frame)
        self.item_ids = np.concatenate([self.item_ids, frame["item_id"].to_numpy(dtype=object)])
        self.item_titles = np.concatenate([self.item_titles, frame["title"].to_numpy(dtype=object)])
        self.item_category = np.concatenate([self.item_category, cat_idx.astype(np.int32)])
        self.popularity = np.concatenate([self.popularity, np.zeros(m, dtype=np.float32)])
        for table in {id(t): t for t in (self.knn, self.rules) if t is not None}.values():
            table.grow(self.n_items)
        self.prior = build_item_prior(self.popularity, self.item_category, self.category_transitions)
        self._item_lookup = pd.Index(pd.Series(self.item_ids, dtype=object).astype(str))
        self.invalidate_cache()
        log.info("added %d new item(s) to model '%s' (now %d items)", m, self.name, self.n_items)
        return np.arange(start, start + m, dtype=np.int64)

    def _check_new_items(self, items: pd.DataFrame) -> pd.DataFrame:
        """Return ``items`` cleaned (ids and categories stripped text, titles text, attribute columns
        filled), or raise DataError with a sentence saying what to fix."""
        if not isinstance(items, pd.DataFrame):
            raise DataError("New items must be a table with the columns item_id, title and category.")
        missing = [c for c in ("item_id", "title", "category") if c not in items.columns]
        if missing:
            raise DataError(f"The new items have no {', '.join(missing)} column; give item_id, title and category for each.")
        if len(items) == 0:
            raise DataError("The table of new items is empty; give at least one item.")
        frame = items.reset_index(drop=True).copy()
        for c in ("item_id", "category"):
            frame[c] = frame[c].astype(object).where(frame[c].notna(), "").astype(str).str.strip()
        frame["title"] = frame["title"].astype(object).where(frame["title"].notna(), "").astype(str)
        for c in self.attribute_columns:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), "").astype(str) if c in frame else ""
        empty = frame.index[frame["item_id"] == ""]
        if len(empty):
            raise DataError(f"New item {int(empty[0]) + 1} has an empty item_id; give every item an id.")
        repeated = frame["item_id"][frame["item_id"].duplicated()]
        if len(repeated):
            raise DataError(f"Item '{repeated.iloc[0]}' is listed twice among the new items; give each id once.")
        known = frame["item_id"][self.item_index(frame["item_id"].to_numpy(dtype=object)) >= 0]
        if len(known):
            raise DataError(f"Item '{known.iloc[0]}' is already in the model's catalogue; new items need ids the model does not know.")
        cats = pd.Index(pd.Series(self.category_names, dtype=object).astype(str))
        unknown = frame["category"][cats.get_indexer(frame["category"]) < 0]
        if len(unknown):
            shown = ", ".join(cats[:8]) + (", ..." if len(cats) > 8 else "")
            raise DataError(f"Category '{unknown.iloc[0]}' is not one the model was trained on ({shown}), so it has no "
                            "vector for it; use one of those, or retrain (crossrec train --warm-start) on a log that has it.")
        return frame
