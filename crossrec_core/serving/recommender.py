"""Top-K recommendations from a trained model: cross-category filters, diversity, cold users, what-if.

Pipeline (the same for one user and for thousands, see ``Recommender.recommend_batch``):

1. retrieval scores by dot product over the whole catalogue (``model.score_histories``); cold users
   (0-2 events known to the model) use category-aware popularity plus vector similarity instead;
2. items already in the history, and items outside the category filters, are masked out BEFORE the
   top-N cut, so filters never starve the list: K items come back whenever the catalogue allows;
3. the top ``n_candidates`` (default: as many as the fusion scorer was trained on) are described by
   the cross-category features (models/features.py), re-ranked by the fusion scorer and given the
   calibrated probability (models/calibration.py);
4. the probability threshold, the per-category cap and diversity (maximal marginal relevance on item
   vectors) are applied by one greedy pass, vectorised over users (serving/selection.py).

One shopper's retrieval stage (step 1, the costly user encoding) is kept per history in a small
per-Recommender cache (``_one_history``): moving K, the threshold or variety, or toggling a filter on the
same history re-runs steps 2-4 only. Cached arrays are read-only; filters work on a copy.

Why one module of ~630 lines: these steps share the per-model tables built once in ``__init__`` and the
per-chunk retrieval state, and the single-user, batch, fusion-fit and threshold-curve callers must all
go through the very same steps; history parsing (serving/history.py) and list cutting
(serving/selection.py) live apart because they need neither.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from crossrec_core.data.dataset import DEFAULT_EVENT, InteractionDataset, Sequences
from crossrec_core.errors import ConfigError
from crossrec_core.models.calibration import log_normaliser
from crossrec_core.models.features import candidate_features, fusion_logits, history_context
from crossrec_core.models.prior import category_flow, category_mass
from crossrec_core.serving.explain import (contributions, display_title, explain_cold, explain_warm, recency_weights,
                                           with_category_step)
from crossrec_core.serving.history import resolve_history
from crossrec_core.serving.blocked import WIDE_KEEP_MARGIN, blocked_retrieve, walk_in_bf16
from crossrec_core.serving.retrieval import BLOCKED_USERS, COMPACT_MIN_ITEMS, History as _History, Retrieved as _Retrieved
from crossrec_core.serving.retrieval import Tables, allowed_categories, build_tables, cold_scores, history_of, lookup, neighbour_values, novel_in_order, rows_subset
from crossrec_core.serving.scoring import one_user_sequences
from crossrec_core.serving.selection import greedy_select, stable_top_n, tie_keys
from crossrec_core.serving.types import RecommendableModel, Recommendation, RecommendationList, RecommendOptions

__all__ = [
    "Recommender", "RecommendOptions", "Recommendation", "RecommendationList", "RecommendableModel",
]

log = logging.getLogger(__name__)

# A user with at most this many events known to the model is "cold": a GRU state from 1-2 items is noisy,
# so retrieval falls back to category-aware popularity plus similarity to those items.
COLD_MAX_EVENTS = 2
# How much each signal weighs in a cold user's retrieval score: COLD_WEIGHTS in serving/retrieval.py.
# Candidates re-ranked by fusion when the model does not say how deep its fusion scorer was trained.
DEFAULT_CANDIDATES = 200
# Cells (users x items) of scores held at once by the batch path (~128 MB per float32 matrix, a few
# of them at once: ~0.6 GB). Why not smaller: each chunk reads the whole item table once, so at 500k
# items 16-user chunks spent most of their time there (32M cells: 64 users a chunk; bench/RESULTS.md).
BATCH_CELLS = 32_000_000
# Score cells (histories x items) the single-history retrieval cache may hold (~3 float32 rows an entry):
# 64 histories of a 5k-item catalogue, 2 of a 2.7M-item one (~100 MB at most).
ONE_HISTORY_CELLS = 8_000_000


@dataclass(frozen=True)
class _Ranked:
    """Internal result of one batch: (B, k) arrays, item -1 where fewer than k items qualified."""

    item_idx: np.ndarray
    score: np.ndarray
    probability: np.ndarray
    cold: np.ndarray  # bool (B,)


class Recommender:
    """Recommends products from a trained model, for a known user, a hand-made history or many users.

    Args:
        model: a TrainedModel (or anything implementing RecommendableModel).
        dataset: optional InteractionDataset whose users can be named by id in ``recommend``.
        cold_max_events: users with at most this many events known to the model get the cold fallback
            (default: the model's own, chosen on validation, else COLD_MAX_EVENTS).
        recency_half_life: in explanations, a history item's weight halves every this many events back.
    """

    def __init__(
        self,
        model: RecommendableModel,
        dataset: InteractionDataset | None = None,
        *,
        cold_max_events: int | None = None,
        recency_half_life: float = 5.0,
    ) -> None:
        self.model = model
        self.dataset = dataset
        if cold_max_events is None:
            cold_max_events = getattr(model, "cold_max_events", None)
        self.cold_max_events = COLD_MAX_EVENTS if cold_max_events is None else int(cold_max_events)
        self.recency_half_life = float(recency_half_life)
        self.item_category = np.asarray(model.item_category, dtype=np.int64)
        self.category_names = np.asarray(model.category_names, dtype=object)
        self.n_items = len(model.item_ids)
        self.n_categories = len(self.category_names)
        vecs = np.asarray(model.item_vectors(), dtype=np.float32)
        self.item_vecs = vecs
        # unit vectors (diversity, cold similarity) on first use: at 500k items the table is 0.6 GB
        self._norms = np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-8)
        self._unit_vecs: np.ndarray | None = None
        pop = np.log1p(np.maximum(np.asarray(model.popularity, dtype=np.float64), 0.0))
        self.pop_norm = (pop / pop.max() if pop.max() > 0 else pop).astype(np.float32)
        trans = np.asarray(model.category_transitions, dtype=np.float64)
        if trans.shape != (self.n_categories, self.n_categories):
            trans = np.zeros((self.n_categories, self.n_categories))
        self.transitions = trans.astype(np.float32)
        self.flow = category_flow(trans).astype(np.float32)
        net = getattr(model, "net", None)
        enc = getattr(net, "item_encoder", None)
        # the learned columns of the item vectors (past them: the prior columns, models/prior.py)
        self.base_dim = int(getattr(getattr(model, "config", None), "dim", vecs.shape[1]))
        self.unit_base = _unit_rows(vecs[:, : self.base_dim])
        text = getattr(enc, "text_vecs", None) if enc is not None and getattr(enc, "use_text", False) else None
        # float16: at 500k items the title table is 768 MB in float32; the fusion feature needs 3 digits
        self.unit_text = None if text is None else _unit_rows(text.detach().float().cpu().numpy()).astype(np.float16)
        depth = getattr(getattr(getattr(model, "config", None), "train", None), "fusion_candidates", None)
        self.default_candidates = int(depth) if isinstance(depth, (int, np.integer)) and depth > 0 else DEFAULT_CANDIDATES
        novel = getattr(getattr(getattr(model, "config", None), "train", None), "fusion_novel_candidates", 0)
        self.novel_candidates = int(novel) if isinstance(novel, (int, np.integer)) and novel > 0 else 0
        cat_pop = category_mass(self.item_category, pop, self.n_categories)
        self.category_prior = (cat_pop / cat_pop.max() if cat_pop.max() > 0 else cat_pop).astype(np.float32)
        # history -> its retrieval stage (read-only); shared by every session that holds this Recommender
        self._retrieved: OrderedDict[tuple, _Retrieved] = OrderedDict()
        self._retrieved_max = int(np.clip(ONE_HISTORY_CELLS // max(3 * self.n_items, 1), 2, 64))
        self._retrieved_lock = threading.Lock()
        # from this many items recommend_batch retrieves in blocks (serving/retrieval.py); tables built on first use
        self.compact_min_items = COMPACT_MIN_ITEMS if hasattr(model, "user_vectors") else np.inf
        self._tables: Tables | None = None
        self._pop_order = np.argsort(-tie_keys(self.pop_norm[None, :])[0], kind="stable")  # novel slots: most popular first

    @property
    def unit_vecs(self) -> np.ndarray:
        """float32 (n_items, D) item vectors scaled to length 1 (built on first use, then kept)."""
        if self._unit_vecs is None:
            self._unit_vecs = self.item_vecs / self._norms
        return self._unit_vecs

    def unit_rows(self, items: np.ndarray) -> np.ndarray:
        """Return rows ``items`` of unit_vecs (the same floats) without building the whole table."""
        return self.item_vecs[items] / self._norms[items]

    # -- single history (app, what-if) ---------------------------------------------------------
    def recommend(
        self,
        history: str | Sequence[Any] | pd.DataFrame,
        k: int | None = None,
        *,
        options: RecommendOptions | None = None,
        **knobs: Any,
    ) -> RecommendationList:
        """Return the top-``k`` recommendations, with explanations, for one history.

        Args:
            history: a user id of ``dataset`` (str); or a list of item ids, or of (item_id, event) pairs,
                or a frame with an ``item_id`` (and optional ``event``) column, oldest first (what-if).
                Ids the model does not know are ignored and listed in ``unknown_item_ids``.
            k: list length (default 10, or ``options.k``); fewer only when filters or the threshold
                leave fewer items.
            options, knobs: the filters and re-ranking settings, as a RecommendOptions and/or its
                fields by name (``cross_category_only=True``); names override ``options``.
        """
        opts = RecommendOptions.merged(options, k=k, **knobs)
        user_id, ids, events, times = resolve_history(history, self.dataset)
        idx = self.model.item_index(np.asarray(ids, dtype=object)) if len(ids) else np.zeros(0, np.int64)
        known = idx >= 0
        unknown = tuple(dict.fromkeys(str(i) for i in np.asarray(ids, dtype=object)[~known]))
        if unknown:
            log.info("%d history item(s) unknown to the model were ignored, e.g. %s", len(unknown), unknown[0])
        items = idx[known].astype(np.int32)
        ev_names = None if events is None else np.asarray(events, dtype=object)[known]
        # no event names: the model's default event (what a log without an event column gets)
        ev_idx = self.model.event_index(ev_names if ev_names is not None else np.full(len(items), DEFAULT_EVENT, dtype=object))
        # a known user keeps real times (time-gap features); a hand-made history is one step apart
        seqs = one_user_sequences(items, np.asarray(ev_idx, dtype=np.int16), None if times is None else times[known])
        ranked = self._rank(seqs, np.zeros(1, np.int64), np.array([len(items)], np.int64), opts, retrieved=self._one_history(seqs))
        sel = ranked.item_idx[0] >= 0
        rec_idx = ranked.item_idx[0][sel]
        cold = bool(ranked.cold[0])
        m = self.model
        if cold:
            expl = explain_cold(rec_idx, items, self.item_vecs, m.item_ids, m.item_titles, self.item_category,
                                self.category_names, self.transitions)
        else:
            w = recency_weights(len(items), ev_names, self.recency_half_life)
            contrib = contributions(self.item_vecs[items], w, self.item_vecs[rec_idx])
            expl = with_category_step(
                explain_warm(contrib, items, m.item_ids, m.item_titles, self.item_category, self.category_names),
                rec_idx, items, self.item_category, self.category_names, self.transitions)
        rows = tuple(
            Recommendation(
                rank=r + 1,
                item_idx=int(i),
                item_id=str(m.item_ids[i]),
                title=display_title(m.item_titles[i], m.item_ids[i]),
                category=str(self.category_names[self.item_category[i]]),
                score=float(s),
                probability=float(p),
                explanation=e,
            )
            for r, (i, s, p, e) in enumerate(zip(rec_idx, ranked.score[0][sel], ranked.probability[0][sel], expl))
        )
        notes = []
        if unknown:
            notes.append(f"{len(unknown)} history item(s) are not in the model's catalogue and were ignored (e.g. {unknown[0]}).")
        if cold:
            notes.append(f"Only {len(items)} known event(s): using popular items in likely next categories.")
        if len(rows) < opts.k:
            notes.append(f"Only {len(rows)} item(s) pass the filters and threshold (asked for {opts.k}).")
        return RecommendationList(
            items=rows,
            user_id=user_id,
            history_item_ids=tuple(str(m.item_ids[i]) for i in items),
            unknown_item_ids=unknown,
            cold_start=cold,
            notes=tuple(notes),
        )

    def _one_history(self, seqs: Sequences) -> "_Retrieved":
        """Return the retrieval stage of a one-user ``seqs``, computed once per distinct history (items,
        events, times) and kept, read-only, in a small LRU cache."""
        key = (seqs.items.tobytes(), seqs.events.tobytes(), seqs.times.tobytes())
        with self._retrieved_lock:
            hit = self._retrieved.get(key)
            if hit is not None:
                self._retrieved.move_to_end(key)
                return hit
        one = np.zeros(1, np.int64)
        r = self._retrieve(seqs, one, np.array([len(seqs.items)], np.int64))
        for a in (r.dot, r.retrieval, r.best, r.cold, r.user_vecs, r.knn, r.hist.rows, r.hist.items, r.hist.lengths):
            if isinstance(a, np.ndarray):
                a.flags.writeable = False  # shared by sessions: an in-place write must fail, not leak
        with self._retrieved_lock:
            self._retrieved[key] = r
            while len(self._retrieved) > self._retrieved_max:
                self._retrieved.popitem(last=False)
        return r

    # -- many users ------------------------------------------------------------------------------
    def recommend_batch(
        self,
        seqs: Sequences,
        users: np.ndarray,
        ends: np.ndarray,
        k: int | None = None,
        *,
        options: RecommendOptions | None = None,
        extra_history_categories: tuple[np.ndarray, np.ndarray] | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        explain: bool = False,
        **knobs: Any,
    ) -> pd.DataFrame:
        """Return top-``k`` rows for many histories: user_idx, rank (1..k), item_idx, score (dot product),
        probability (fusion, used for ranking and threshold), category (name).

        The same ranking as ``recommend`` (one ``_rank`` path, the same RecommendOptions), as a table:
        one row per (history, rank) instead of one list with explanations per call.

        Args:
            seqs: sequences in the MODEL's item/event index space (e.g. ``model.align(ds)``).
            users, ends: the history of users[i] is seqs[offsets[users[i]]:ends[i]]; items in it are
                never recommended to that user.
            k, options, knobs: as in ``recommend``.
            extra_history_categories: optional (user_idx, category_idx) pairs that also count as "in
                the history" for cross_category_only (e.g. categories of items the model does not know).
            batch_size: users per chunk (default: as many as fit ~8M score cells).
            on_batch: called as on_batch(users_done, users_total) after each chunk (progress bars).
            explain: also add an ``explanation`` column (plain text; a Python loop per user, so off by
                default: the CSV export of the app turns it on, the CLI leaves it off for speed).
        """
        opts = RecommendOptions.merged(options, k=k, **knobs)
        users = np.asarray(users, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if users.shape != ends.shape:
            raise ConfigError(f"users and ends must have the same length, got {len(users)} and {len(ends)}.")
        bs = int(batch_size or (BLOCKED_USERS if self.n_items >= self.compact_min_items else max(1, min(4096, BATCH_CELLS // max(self.n_items, 1)))))
        extra_lookup = None
        if extra_history_categories is not None and opts.cross_category_only:
            extra_lookup = (np.asarray(extra_history_categories[0], np.int64), np.asarray(extra_history_categories[1], np.int64))

        def chunk(lo: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
            u, e = users[lo : lo + bs], ends[lo : lo + bs]
            extra = None
            if extra_lookup is not None:
                where = np.full(seqs.n_users, -1, dtype=np.int64)
                where[u] = np.arange(len(u))
                rows = where[extra_lookup[0]]
                keep = rows >= 0
                extra = (rows[keep], extra_lookup[1][keep])
            return u, e, extra

        # a large catalogue: the next chunk's walk (both cores) runs while this chunk is ranked (mostly one core)
        ahead = ThreadPoolExecutor(1) if self.n_items >= self.compact_min_items and len(users) > bs else None
        if ahead is not None:
            self._blocked_tables()  # built once, before two threads could both build them
        try:
            return self._batch_frames(seqs, users, bs, chunk, opts, ahead, explain, on_batch)
        finally:
            if ahead is not None:
                ahead.shutdown(wait=True, cancel_futures=True)

    def _batch_frames(self, seqs: Sequences, users: np.ndarray, bs: int, chunk: Callable, opts: RecommendOptions,
                      ahead: "ThreadPoolExecutor | None", explain: bool, on_batch: Callable[[int, int], None] | None) -> pd.DataFrame:
        """recommend_batch's chunks, each ranked (``ahead``: the next chunk walked meanwhile), as one table."""
        walking = None
        frames = []
        for lo in range(0, len(users), bs):  # chunks of users, each fully vectorised
            u, e, extra = chunk(lo)
            walked = walking.result() if walking is not None else None
            walking = None if ahead is None or lo + bs >= len(users) else ahead.submit(self._walk, seqs, *chunk(lo + bs), opts)
            r = self._rank(seqs, u, e, opts, extra, walked=walked)
            ok = r.item_idx >= 0
            b, rank0 = np.nonzero(ok)
            items = r.item_idx[ok]
            frames.append(
                pd.DataFrame(
                    {
                        "user_idx": u[b],
                        "rank": (rank0 + 1).astype(np.int64),
                        "item_idx": items.astype(np.int64),
                        "score": r.score[ok].astype(np.float32),
                        "probability": r.probability[ok].astype(np.float32),
                        "category": pd.Series(self.category_names[self.item_category[items]], dtype=object),
                    }
                )
            )
            if explain:
                frames[-1]["explanation"] = self._explain_rows(seqs, u, e, r, b, items)
            if on_batch is not None:
                on_batch(min(lo + bs, len(users)), len(users))
        if not frames:
            return pd.DataFrame(
                {
                    "user_idx": pd.Series([], dtype=np.int64), "rank": pd.Series([], dtype=np.int64),
                    "item_idx": pd.Series([], dtype=np.int64), "score": pd.Series([], dtype=np.float32),
                    "probability": pd.Series([], dtype=np.float32), "category": pd.Series([], dtype=object),
                }
            )
        return pd.concat(frames, ignore_index=True)

    def _explain_rows(
        self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, ranked: _Ranked, rows: np.ndarray, items: np.ndarray
    ) -> pd.Series:
        """Return the explanation sentence of each (row, item) recommendation of one chunk."""
        m = self.model
        row, pos = seqs.history_positions(users, ends)
        out = np.empty(len(rows), dtype=object)
        bounds = np.searchsorted(row, np.arange(len(users) + 1))
        for b in np.unique(rows):  # explanations only: list-sized work per user
            hist = seqs.items[pos[bounds[b] : bounds[b + 1]]].astype(np.int64)
            at = np.flatnonzero(rows == b)
            rec_idx = items[at]
            if ranked.cold[b]:
                expl = explain_cold(rec_idx, hist, self.item_vecs, m.item_ids, m.item_titles, self.item_category,
                                    self.category_names, self.transitions)
            else:
                ev = np.asarray(m.event_names, dtype=object)[seqs.events[pos[bounds[b] : bounds[b + 1]]]]
                w = recency_weights(len(hist), ev, self.recency_half_life)
                contrib = contributions(self.item_vecs[hist], w, self.item_vecs[rec_idx])
                expl = with_category_step(
                    explain_warm(contrib, hist, m.item_ids, m.item_titles, self.item_category, self.category_names),
                    rec_idx, hist, self.item_category, self.category_names, self.transitions)
            out[at] = [x.sentence for x in expl]
        return pd.Series(out, dtype=object)

    # -- the shared core -------------------------------------------------------------------------
    def _static_mask(self, opts: RecommendOptions) -> np.ndarray | None:
        """Return bool (n_items,) items allowed by include/exclude categories, or None for all."""
        names = pd.Index(self.category_names.astype(str))
        allowed = np.ones(self.n_categories, dtype=bool)
        touched = False
        for label, wanted in (("include", opts.include_categories), ("exclude", opts.exclude_categories)):
            if wanted is None or (label == "exclude" and not wanted):
                continue
            idx = names.get_indexer(list(wanted))
            if (idx < 0).any():
                bad = [w for w, i in zip(wanted, idx) if i < 0]
                raise ConfigError(
                    f"Unknown category '{bad[0]}' in the {label} filter. The model knows {self.n_categories} "
                    f"categories, e.g. {', '.join(map(str, self.category_names[:3]))}."
                )
            if label == "include":
                allowed[:] = False
                allowed[idx] = True
            else:
                allowed[idx] = False
            touched = True
        return allowed[self.item_category] if touched else None

    def _retrieve(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> "_Retrieved":
        """Return the retrieval stage of a chunk: scores over the whole catalogue, seen items at -inf."""
        B = len(users)
        hist = history_of(seqs, users, ends, self.n_items)
        row, hist_items, lengths = hist.rows, hist.items, hist.lengths
        user_vecs = None
        knn = None  # (B, n_items) weighted item-kNN term, computed once for retrieval and fusion
        if hasattr(self.model, "user_vectors"):
            # one pass of the user encoder serves retrieval and fusion (score_histories is U @ V.T)
            user_vecs = np.asarray(self.model.user_vectors(seqs, users, ends), dtype=np.float32)  # (B, d)
            dot = user_vecs @ self.item_vecs.T  # (B, n_items)
            knn_fn = getattr(self.model, "weighted_neighbour_scores", None)  # the validated item-kNN term, if any
            knn = knn_fn(seqs, users, ends) if callable(knn_fn) else None
            if knn is not None:
                dot += knn
        else:
            dot = np.asarray(self.model.score_histories(seqs, users, ends), dtype=np.float32)  # (B, n_items)
        retrieval = dot.copy()
        cold = lengths <= self.cold_max_events
        if cold.any():
            cold_rows = np.flatnonzero(cold)
            remap = np.full(B, -1, dtype=np.int64)
            remap[cold_rows] = np.arange(len(cold_rows))
            pick = cold[row]
            retrieval[cold_rows] = cold_scores(self, remap[row[pick]], hist_items[pick], len(cold_rows))
        seqs.mask_seen(retrieval, users, ends)  # never recommend an item the user interacted with
        # the fusion features describe an item whatever the filters: the user's best unseen score is
        # taken before the category filters apply
        best = retrieval.max(axis=1) if self.n_items else np.zeros(B, np.float32)
        return _Retrieved(dot, retrieval, best, cold, user_vecs, knn, hist)

    def retrieval_scores(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Return float32 (B, n_items) the retrieval stage's scores of these histories (the cold fallback's for
        cold ones), items in the history at -inf: what the candidate pool is cut from."""
        return self._retrieve(seqs, np.asarray(users, dtype=np.int64), np.asarray(ends, dtype=np.int64)).retrieval

    def candidates(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, n: int | None = None, dense: bool = False,
                   margin: int | None = None) -> ScoredCandidates:
        """Return the top-``n`` unseen candidates of each history (no filters), best retrieval first, as
        the fusion scorer sees them: what the fusion fit learns from and the threshold curve sweeps.
        Large catalogues retrieve in blocks unless ``dense`` (rows the blocks cannot decide exactly walk again
        with WIDE_KEEP_MARGIN, then go dense)."""
        users = np.asarray(users, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        n = min(int(n or self.default_candidates), self.n_items)
        blocked = len(users) > 0 and self.n_items >= self.compact_min_items and not dense
        if blocked:  # a large catalogue: retrieval in blocks, as recommending does (no users x items arrays)
            r = blocked_retrieve(self, self._blocked_tables(), seqs, users, ends, None, max(self._fit_pool_size(), n), 0, margin)
        else:
            r = self._retrieve(seqs, users, ends)
        norm = None if n == self._fit_pool_size() else self._pool_normaliser(seqs, users, ends, r)
        cand = self._candidate_pool(r.retrieval, n, r.hist, r.cols)
        out = self.score_candidates(seqs, users, ends, cand, r.retrieval, r.best, r.cold, r.user_vecs, r.knn, r.hist, norm, cols=r.cols)
        if blocked and r.exact is not None and not r.exact.all():  # a tie bucket crossed the kept set's edge
            rows = np.flatnonzero(~r.exact)
            sub = self.candidates(seqs, users[rows], ends[rows], n, dense=margin is not None, margin=WIDE_KEEP_MARGIN)
            for f in fields(out):
                mine = getattr(out, f.name)
                if isinstance(mine, np.ndarray):
                    mine[rows] = getattr(sub, f.name)
        return out

    def _blocked_tables(self) -> Tables:
        """Return the tables blocked retrieval walks (built on first use, kept: they depend on the model only)."""
        if self._tables is None:
            self._tables = build_tables(self.model, self.item_vecs, self._norms, self.item_category, self.n_categories,
                                        self.base_dim, self.pop_norm, low_precision=walk_in_bf16())
        return self._tables

    def _fit_pool_size(self) -> int:
        """Return the size of the candidate pool the fusion scorer and its probability were fitted on."""
        return min(self.default_candidates, self.n_items)

    def _pool_normaliser(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, r: "_Retrieved") -> np.ndarray | None:
        """Return (B,) each user's log-sum-exp of relevance over the unfiltered pool the probability was
        fitted on (models/calibration.py), or None when the model's calibration does not use one.
        ``r`` must be unfiltered (call before category filters write -inf into ``r.retrieval``)."""
        cal = getattr(self.model, "calibration", None)
        if cal is None or not cal.needs_normaliser:
            return None
        cand = self._candidate_pool(r.retrieval, self._fit_pool_size(), r.hist, r.cols)
        return self.score_candidates(seqs, users, ends, cand, r.retrieval, r.best, r.cold, r.user_vecs, r.knn, r.hist, cols=r.cols).normaliser

    def _candidate_pool(self, retrieval: np.ndarray, n: int, hist: "_History", cols: np.ndarray | None = None) -> np.ndarray:
        """Return int64 (B, n) candidates: the best by retrieval, with the last ``novel_candidates`` slots
        given to the most popular allowed items of categories absent from each history (distinct from
        every retrieval candidate; a slot keeps its retrieval item when a shopper has no such item left).
        ``cols``: the items of a compact ``retrieval`` (serving/retrieval.py), None when it is dense.
        """
        top_pos = stable_top_n(retrieval, n)
        top = top_pos if cols is None else np.take_along_axis(cols, top_pos, axis=1)
        m = min(self.novel_candidates, n // 2)
        if m == 0:
            return top
        user_cats = hist.categories(self.item_category, self.n_categories)
        if cols is None:  # never a duplicate of a kept candidate: top[:, :n - m] is excluded
            extra, ok = novel_in_order(self._pop_order, self.item_category, user_cats, retrieval, top[:, : n - m], m)
        else:
            outside = ~np.take_along_axis(user_cats, self.item_category[cols], axis=1)
            key = np.where(np.isfinite(retrieval) & outside, self.pop_norm[cols], -np.inf).astype(np.float32)
            np.put_along_axis(key, top_pos[:, : n - m], -np.inf, axis=1)
            extra_pos = stable_top_n(key, m)
            ok = np.isfinite(np.take_along_axis(key, extra_pos, axis=1))
            extra = np.take_along_axis(cols, extra_pos, axis=1)
        # the m slots: these popular items first, then the retrieval items they displaced (minus repeats)
        tail = top[:, n - m :]
        repeat = ((tail[:, :, None] == extra[:, None, :]) & ok[:, None, :]).any(axis=2)
        merged = np.concatenate([extra, tail], axis=1)
        order = np.argsort(np.concatenate([np.where(ok, 0, 2), np.where(repeat, 2, 1)], axis=1), axis=1, kind="stable")
        top[:, n - m :] = np.take_along_axis(merged, order[:, :m], axis=1)
        return top

    def _rank(
        self,
        seqs: Sequences,
        users: np.ndarray,
        ends: np.ndarray,
        opts: RecommendOptions,
        extra_categories: tuple[np.ndarray, np.ndarray] | None = None,
        retrieved: "_Retrieved | None" = None,
        dense: bool = False,
        margin: int | None = None,
        walked: "tuple[np.ndarray | None, _Retrieved] | None" = None,
    ) -> _Ranked:
        """Rank a chunk; ``retrieved``: its retrieval stage already computed (read-only, copied before the
        filters write into it). Large catalogues retrieve in blocks (serving/retrieval.py) unless
        ``dense``; rows that path cannot decide exactly, and rows whose pool must widen, are ranked again
        on the dense path (the same lists either way); rows the first walk could not decide walk again with
        WIDE_KEEP_MARGIN (``margin``: None on the first walk) first. ``walked``: ``_walk``'s result for
        this chunk, when it was walked ahead."""
        opts, static, n_cand, filtered = self._cut(opts)
        B = len(users)
        blocked = retrieved is None and not dense and B > 0 and self.n_items >= self.compact_min_items
        allowed = None
        if blocked:
            allowed, r = walked if walked is not None else self._walk(seqs, users, ends, extra_categories, opts, margin)
        else:
            r = self._retrieve(seqs, users, ends) if retrieved is None else replace(retrieved, retrieval=retrieved.retrieval.copy())
        retrieval, cold, hist, user_vecs, knn, best, cols = r.retrieval, r.cold, r.hist, r.user_vecs, r.knn, r.best, r.cols
        # the probability's normaliser comes from the unfiltered pool it was fitted on: a filter that
        # hides items must not raise the probability of the rest (None: the first pool below is that pool)
        norm = None
        if filtered or n_cand != self._fit_pool_size():
            norm = self._pool_normaliser(seqs, users, ends, r)
        if cols is not None:
            if filtered:
                retrieval[~np.take_along_axis(allowed, self.item_category[cols], axis=1)] = -np.inf
            seen = np.bincount(hist.rows, weights=allowed[hist.rows, self.item_category[hist.items]] if filtered else None, minlength=B)
            n_allowed = (allowed.astype(np.int64) @ self._tables.cat_size if filtered else np.full(B, self.n_items)) - seen.astype(np.int64)
        else:
            if static is not None:
                retrieval[:, ~static] = -np.inf
            if opts.cross_category_only:
                user_cats = ~allowed_categories(hist, None, True, extra_categories, self.item_category, self.n_categories)
                retrieval[user_cats[:, self.item_category]] = -np.inf  # (B, n_items)
            n_allowed = np.isfinite(retrieval).sum(axis=1)  # (B,)
        item_idx = np.full((B, opts.k), -1, dtype=np.int64)
        prob = np.full((B, opts.k), np.nan, dtype=np.float32)
        todo = np.arange(B)
        redo = np.zeros(B, dtype=bool) if r.exact is None else ~r.exact
        while True:
            # filters that act after the cut (threshold, cap) can leave a list short: widen the pool
            # for those users only, until the list is full or every allowed item was a candidate
            got_items, got_prob, got_norm = self._select(
                seqs, users[todo], ends[todo], None if user_vecs is None else user_vecs[todo],
                retrieval[todo], cold[todo], n_cand, opts, None if knn is None else knn[todo],
                best[todo], hist.subset(todo), None if norm is None else norm[todo], None if cols is None else cols[todo],
            )
            item_idx[todo], prob[todo] = got_items, got_prob
            if norm is None and got_norm is not None:
                norm = got_norm  # the first pass's pool was the fitted pool (all users): keep it for widening
            short = ((got_items >= 0).sum(axis=1) < opts.k) & (n_allowed[todo] > n_cand)
            if not short.any() or n_cand >= self.n_items:
                break
            if cols is not None:  # a compact pool cannot widen: those rows go to the dense path
                redo[todo[short]] = True
                break
            todo = todo[short]
            n_cand = min(n_cand * 4, self.n_items)
        has = item_idx >= 0
        score = np.where(has, lookup(r.dot, cols, np.where(has, item_idx, 0)), np.nan).astype(np.float32)
        if redo.any():
            rows = np.flatnonzero(redo)
            wider = blocked and margin is None  # walk those rows again with a wide margin, then dense
            sub = self._rank(seqs, users[rows], ends[rows], opts, rows_subset(extra_categories, rows, B), dense=not wider,
                             margin=WIDE_KEEP_MARGIN)
            item_idx[rows], score[rows], prob[rows], cold = sub.item_idx, sub.score, sub.probability, cold.copy()
            cold[rows] = sub.cold
        return _Ranked(item_idx, score, prob, cold)

    def _cut(self, opts: RecommendOptions) -> tuple[RecommendOptions, np.ndarray | None, int, bool]:
        """Return (opts with k at most the catalogue, the static item mask or None, the pool size, filtered?)."""
        opts = replace(opts, k=min(opts.k, max(self.n_items, 1)))  # no (B, k) arrays for k = 2**31
        static = self._static_mask(opts)
        n_cand = min(max(int(opts.n_candidates or self.default_candidates), opts.k), self.n_items)
        return opts, static, n_cand, static is not None or opts.cross_category_only

    def _walk(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray, extra_categories: tuple[np.ndarray, np.ndarray] | None,
              opts: RecommendOptions, margin: int | None = None) -> tuple[np.ndarray | None, "_Retrieved"]:
        """Return (allowed categories or None, the compact retrieval stage) of a chunk on the blocked path."""
        opts, static, n_cand, filtered = self._cut(opts)
        allowed = allowed_categories(history_of(seqs, users, ends, self.n_items), static, opts.cross_category_only,
                                     extra_categories, self.item_category, self.n_categories)
        n_unf = max(self._fit_pool_size(), 1 if filtered else n_cand)
        return allowed, blocked_retrieve(self, self._blocked_tables(), seqs, users, ends, allowed, n_unf, n_cand if filtered else 0, margin)

    def _select(
        self,
        seqs: Sequences,
        users: np.ndarray,
        ends: np.ndarray,
        user_vecs: np.ndarray | None,
        retrieval: np.ndarray,
        cold: np.ndarray,
        n_cand: int,
        opts: RecommendOptions,
        knn: np.ndarray | None,
        best: np.ndarray,
        hist: "_History",
        norm: np.ndarray | None = None,
        cols: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Return (item_idx int64 (B, k), probability float32 (B, k), the probability's normaliser (B,)
        or None) from the top-``n_cand`` of ``retrieval`` (-inf = blocked), re-ranked by the fusion
        scorer; -1 / NaN where none is left. ``norm``, ``cols``: as ``score_candidates``'s."""
        B = len(users)
        cand = self._candidate_pool(retrieval, n_cand, hist, cols)  # (B, N); ties: smaller item_idx
        valid = np.isfinite(lookup(retrieval, cols, cand))
        scored = self.score_candidates(seqs, users, ends, cand, retrieval, best, cold, user_vecs, knn, hist, norm, cols)
        proba, rel = scored.probability, scored.relevance
        if opts.threshold is not None:
            valid &= proba >= float(opts.threshold)
        rel = rel.astype(np.float64)
        if cold.any():
            # a cold user's list comes from the popularity / category-flow pool; fusion only orders it
            # (items past the pool are used only when filters empty the pool)
            pool = min(n_cand, max(2 * opts.k, 20))
            rel[np.ix_(cold, np.arange(pool, n_cand))] -= 1e6
        chosen = greedy_select(cand, rel, valid, opts, self.item_category, self.unit_vecs if opts.diversity else None)  # (B, k) positions into N, -1 = none
        has = chosen >= 0
        safe = np.where(has, chosen, 0)
        rows_b = np.arange(B)[:, None]
        item_idx = np.where(has, cand[rows_b, safe], -1)
        prob = np.where(has, proba[rows_b, safe], np.nan).astype(np.float32)
        return item_idx, prob, scored.normaliser

    def score_candidates(
        self,
        seqs: Sequences,
        users: np.ndarray,
        ends: np.ndarray,
        cand: np.ndarray,
        retrieval: np.ndarray,
        best: np.ndarray,
        cold: np.ndarray,
        user_vecs: np.ndarray | None,
        knn: np.ndarray | None,
        hist: "_History",
        normaliser: np.ndarray | None = None,
        cols: np.ndarray | None = None,
    ) -> "ScoredCandidates":
        """Return the fusion scorer's view of candidates ``cand`` (B, N): its features, logits, the
        calibrated probability and the relevance the list is ordered by (the logit when the re-rank is
        on, else the retrieval score). A model without a fusion network gives its ``fusion_proba``.

        ``normaliser`` (B,): each user's log-sum-exp of relevance over the fitted pool, for a
        calibration on the log-softmax (models/calibration.py); None = ``cand`` IS that pool. ``cols``: the
        items of a compact ``retrieval`` / ``knn`` (serving/retrieval.py); None when they are dense."""
        m = self.model
        net = getattr(m, "net", None)
        r_cand = lookup(retrieval, cols, cand)
        if net is None or not hasattr(net, "fusion") or user_vecs is None:
            proba = np.asarray(m.fusion_proba(seqs, users, ends, cand), dtype=np.float32)
            return ScoredCandidates(cand, None, None, proba, proba, np.isfinite(r_cand), cold)
        d = self.base_dim
        dot_cand = np.einsum("bd,bnd->bn", user_vecs[:, :d], self.item_vecs[cand, :d])  # gathers the learned columns only
        knn_w = float(getattr(m, "knn_weight", 0.0))
        if knn is not None and knn_w:
            knn_cand = lookup(knn, cols, cand) / np.float32(knn_w)
        elif getattr(m, "knn", None) is not None and cols is None:
            knn_cand = np.take_along_axis(m.knn.score_histories(seqs, users, ends), cand, axis=1)
        elif getattr(m, "knn", None) is not None:  # compact: the candidate cells only
            knn_cand = neighbour_values(m.knn, seqs, users, ends, cand, self.n_items)
        else:
            knn_cand = None
        rules = getattr(m, "rules", None)
        if rules is not None and rules is getattr(m, "knn", None) and knn_cand is not None:
            rules_cand = knn_cand  # the rules are the term of retrieval: their scores are already here
        else:
            rules_cand = None if rules is None else neighbour_values(rules, seqs, users, ends, cand, self.n_items)
        ctx = history_context(seqs, users, ends, hist.rows, hist.items)
        # a next-category head reads the user state retrieval already computed (no second encoder pass)
        head = getattr(net, "category_head", None)
        lift = m.category_lift(seqs, users, ends, states=user_vecs[:, :d]) if head is not None else m.category_lift(seqs, users, ends)
        feats = candidate_features(m, ctx, cand, r_cand, best, dot_cand, knn_cand, cold, lift, self.unit_base, self.unit_text, rules_cand)
        logits = fusion_logits(net.fusion, feats, getattr(m, "device", torch.device("cpu")))
        rel = logits if m.fusion_rerank else r_cand
        finite = np.isfinite(r_cand)  # -inf: a seen or padding candidate (never shown)
        if normaliser is None and m.calibration.needs_normaliser:
            normaliser = log_normaliser(rel, finite)
        proba = np.where(finite, m.calibration.apply(np.where(finite, rel, 0.0), cold, normaliser), 0.0).astype(np.float32)
        return ScoredCandidates(cand, feats, logits, proba, rel, finite, cold, normaliser)

def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)).astype(np.float32)


@dataclass(frozen=True)
class ScoredCandidates:
    """Candidates of a chunk (B, N) as the fusion scorer sees them (features / logits None for models
    without a fusion network)."""

    cand: np.ndarray
    features: np.ndarray | None
    logits: np.ndarray | None
    probability: np.ndarray
    relevance: np.ndarray
    valid: np.ndarray  # bool (B, N): a real, unseen candidate
    cold: np.ndarray  # bool (B,)
    normaliser: np.ndarray | None = None  # (B,) the probability's pool log-sum-exp (models/calibration.py)
