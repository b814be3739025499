"""Offline evaluation: leave-last-out, full ranking, on all users and on cross-category users.

Protocol: for split "test" the history is every event before a user's last one and the target is the last
one; for "valid" the history ends before the second-to-last event, which is the target. Every ranker ranks
the whole catalogue; items already in the history are excluded (the app never recommends them back).
Metrics are reported on three user subsets:

* ``all``: every evaluated user;
* ``switch``: the target's category differs from the category of the last history item;
* ``novel``: the target's category never occurs in the user's history (a subset of ``switch``).

Baselines (``baselines.BaselineRanker``) are fitted here on the training part of the same split, so they
never see a target. A trained model (anything with ``align`` and ``item_index``, i.e. ``TrainedModel``)
is scored in its own item space: targets it does not know count as misses.

Why one module of ~530 lines: the split, the leak guard, the ranking of every method and the result
table are one protocol, and comparisons are only honest if every method goes through all of it;
the metric formulas live in evaluation/metrics.py and the baselines in evaluation/baselines.py.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.errors import ConfigError, DataError, LeakError, ModelError
from crossrec_core.evaluation import metrics as M
from crossrec_core.evaluation.baselines import BaselineRanker
from crossrec_core.models.trained import event_hashes
from crossrec_core.serving.recommender import Recommender
from crossrec_core.serving.scoring import Ranker

log = logging.getLogger(__name__)

SPLITS = ("test", "valid")
SUBSETS = ("all", "switch", "novel")
BEYOND_METRICS = ("coverage", "category_coverage", "diversity", "novelty", "cross_share")
# Why a cap: scores are a dense (batch, n_items) float32 block; 2**25 floats = 128 MB whatever the catalogue.
_MAX_SCORE_CELLS = 2**25


# -- split ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalTargets:
    """The evaluated users of one split, in dataset item space."""

    split: str
    users: np.ndarray  # int32 (U,) user_idx
    ends: np.ndarray  # int64 (U,) exclusive history end = absolute position of the target event
    targets: np.ndarray  # int64 (U,) target item_idx
    target_category: np.ndarray  # int64 (U,)
    switch: np.ndarray  # bool (U,) target category != last history item's category
    novel: np.ndarray  # bool (U,) target category absent from the whole history

    @property
    def n_users(self) -> int:
        return len(self.users)

    def mask(self, subset: str) -> np.ndarray:
        """Return the boolean (U,) membership of ``subset`` ("all", "switch" or "novel")."""
        if subset == "all":
            return np.ones(self.n_users, dtype=bool)
        if subset == "switch":
            return self.switch
        if subset == "novel":
            return self.novel
        raise ConfigError(f"Unknown user subset '{subset}'. Use one of: {', '.join(SUBSETS)}.")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}'. Use 'test' (last event) or 'valid' (second-to-last event).")


def split_targets(ds: InteractionDataset, split: str = "test", *, max_users: int | None = None, seed: int = 0) -> EvalTargets:
    """Return the evaluated users, history ends, targets and subset flags of a leave-last-out split.

    Args:
        max_users: evaluate a seeded random sample of at most this many users (None = all).
    """
    _check_split(split)
    llo = ds.leave_last_out()
    users, pos = (llo.test_users, llo.test_pos) if split == "test" else (llo.valid_users, llo.valid_pos)
    if len(users) == 0:
        raise DataError(
            f"Dataset '{ds.name}' has no user with enough events for the {split} split "
            f"(needs {'2' if split == 'test' else '3'} or more events per user). Upload a longer log."
        )
    if max_users is not None and len(users) > max_users:
        if max_users < 1:
            raise ConfigError(f"max_users must be at least 1, got {max_users}.")
        pick = np.sort(np.random.default_rng(seed).choice(len(users), size=max_users, replace=False))
        users, pos = users[pick], pos[pick]
    cat = ds.item_category.astype(np.int64)
    targets = ds.seqs.items[pos].astype(np.int64)
    tcat = cat[targets]
    last_cat = cat[ds.seqs.items[pos - 1]]  # every split user has at least one history event
    rows, hpos = ds.seqs.history_positions(users, pos)
    n_cat = max(ds.n_categories, 1)
    seen = np.unique(rows * n_cat + cat[ds.seqs.items[hpos]])
    novel = ~np.isin(np.arange(len(users), dtype=np.int64) * n_cat + tcat, seen)
    return EvalTargets(split, users.astype(np.int32), pos.astype(np.int64), targets, tcat, tcat != last_cat, novel)


def training_sequences(ds: InteractionDataset, split: str = "test") -> Sequences:
    """Return the sequences a baseline may learn from for ``split`` (everything before the split's targets)."""
    _check_split(split)
    llo = ds.leave_last_out()
    if split == "valid":
        return ds.seqs.truncate(llo.train_end)
    ends = ds.seqs.offsets[1:].copy()
    ends[llo.test_users] = llo.test_pos
    return ds.seqs.truncate(ends)


# -- ranker item spaces --------------------------------------------------------------------------
@dataclass(frozen=True)
class RankerSpace:
    """Histories and targets re-expressed in one ranker's item space."""

    seqs: Sequences  # one row per dataset user, in ranker item_idx
    ends: np.ndarray  # int64 (U,) history ends in ``seqs``
    targets: np.ndarray  # int64 (U,) ranker item_idx of the targets, -1 when unknown to the ranker
    to_ds: np.ndarray  # int64 (n_ranker_items,) ranker item_idx -> dataset item_idx (-1 when absent)
    item_category: np.ndarray  # int64 (n_ranker_items,) category_idx in the ranker's own category list
    category_names: np.ndarray  # object (n_ranker_categories,)


def is_model_like(ranker: object) -> bool:
    """Return True for rankers with their own vocabulary (TrainedModel): they have align and item_index."""
    return callable(getattr(ranker, "align", None)) and callable(getattr(ranker, "item_index", None))


def ships_lists(ranker: object) -> bool:
    """Return True for a trained model (it has its own vocabulary and item vectors): it is evaluated on
    the lists it ships (``rank_shipped``), not on bare retrieval scores."""
    return is_model_like(ranker) and callable(getattr(ranker, "item_vectors", None)) and callable(getattr(ranker, "user_vectors", None))


def ranker_space(ranker: object, ds: InteractionDataset, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> RankerSpace:
    """Return the histories (``users`` up to ``ends``) and ``targets`` of ``ds`` in ``ranker``'s item space."""
    if not is_model_like(ranker):
        return RankerSpace(
            ds.seqs, np.asarray(ends, dtype=np.int64), np.asarray(targets, dtype=np.int64),
            np.arange(ds.n_items, dtype=np.int64), ds.item_category.astype(np.int64), ds.category_names,
        )
    check = getattr(ranker, "check_compatible", None)
    if callable(check):
        check(ds)
    ds_to_model = np.asarray(ranker.item_index(ds.item_ids), dtype=np.int64)
    mseqs = ranker.align(ds)
    known = ds_to_model[ds.seqs.items] >= 0
    if mseqs.n_users != ds.n_users or mseqs.n_events != int(known.sum()):
        raise ModelError(
            f"The model re-indexed dataset '{ds.name}' inconsistently ({mseqs.n_events} of {int(known.sum())} known "
            "events kept). Re-train the model on this dataset."
        )
    cum = np.zeros(len(known) + 1, dtype=np.int64)
    np.cumsum(known, out=cum[1:])
    users = np.asarray(users, dtype=np.int64)
    m_ends = mseqs.offsets[users] + cum[np.asarray(ends, dtype=np.int64)] - cum[ds.seqs.offsets[users]]
    model_ids = np.asarray(ranker.item_ids, dtype=object)
    to_ds = ds.item_index(model_ids)
    m_targets = ds_to_model[np.asarray(targets, dtype=np.int64)]
    return RankerSpace(
        mseqs, m_ends, m_targets, to_ds,
        np.asarray(ranker.item_category, dtype=np.int64), np.asarray(ranker.category_names, dtype=object),
    )


def top_k_excluding_history(scores: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray, k: int) -> np.ndarray:
    """Return int64 (B, k) item_idx of the best scores, history items excluded, -1 where fewer than k remain.

    ``scores`` (B, n_items) is modified in place (history items and NaN set to -inf). Ties break toward the
    smaller item_idx, so results are deterministic.
    """
    b, n = scores.shape
    seqs.mask_seen(scores, users, ends)
    nan = np.isnan(scores)
    if nan.any():
        scores[nan] = -np.inf
    kk = min(k, n)
    if kk == 0:
        return np.full((b, k), -1, dtype=np.int64)
    kth = torch.topk(torch.from_numpy(scores), kk, dim=1, sorted=True).values[:, -1:].numpy()  # (B, 1)
    greater = scores > kth
    need = kk - greater.sum(axis=1)  # (B,) how many of the boundary tie group to take
    equal = scores == kth
    # the boundary tie group is cut toward smaller item_idx: take its first `need` members in index order
    r, c = np.nonzero(equal)  # row-major, so columns ascend within each row
    first = np.searchsorted(r, np.arange(b))
    take = (np.arange(len(r)) - first[r]) < need[r]
    greater[r[take], c[take]] = True
    top = np.nonzero(greater)[1].reshape(b, kk)  # exactly kk per row, in item_idx order
    vals = np.take_along_axis(scores, top, axis=1)
    top = np.take_along_axis(top, np.lexsort((top, -vals), axis=-1), axis=1).astype(np.int64)
    top_scores = np.take_along_axis(scores, np.maximum(top, 0), axis=1)
    top[~np.isfinite(top_scores) | (top < 0)] = -1
    if kk < k:
        top = np.concatenate([top, np.full((b, k - kk), -1, dtype=np.int64)], axis=1)
    return top


def rank_all(
    ranker: Ranker,
    space: RankerSpace,
    users: np.ndarray,
    k: int,
    *,
    batch_size: int = 1024,
) -> np.ndarray:
    """Return int64 (U, k) top-k lists in the ranker's item space, history excluded, scored in batches."""
    users = np.asarray(users, dtype=np.int64)
    n = len(space.to_ds)
    step = max(1, min(int(batch_size), _MAX_SCORE_CELLS // max(n, 1)))
    out = np.full((len(users), k), -1, dtype=np.int64)
    for a in range(0, len(users), step):
        u, e = users[a : a + step], space.ends[a : a + step]
        scores = np.array(ranker.score_histories(space.seqs, u, e), dtype=np.float32)
        if scores.shape != (len(u), n):
            raise ModelError(
                f"Ranker '{getattr(ranker, 'name', ranker)}' returned scores of shape {scores.shape}, "
                f"expected {(len(u), n)}."
            )
        out[a : a + step] = top_k_excluding_history(scores, space.seqs, u, e, k)
    return out


def seen_targets(model, ds: InteractionDataset, targets: EvalTargets) -> np.ndarray:
    """Return bool (U,): which held-out targets are among the events ``model`` was fitted on.

    Evaluating a model on the log it was trained on is the normal case (it was fitted only on the
    events before each user's held-out ones); a target it WAS fitted on (a log that another log
    extends, or one sharing events with it) would make its figures a leak."""
    known = np.asarray(getattr(model, "train_event_hashes", np.zeros(0, np.int64)), dtype=np.int64)
    if len(known) == 0 or targets.n_users == 0:
        return np.zeros(targets.n_users, dtype=bool)
    h = event_hashes(ds.user_ids[targets.users], ds.item_ids[targets.targets], ds.seqs.times[targets.ends])
    pos = np.clip(np.searchsorted(known, h), 0, len(known) - 1)
    return known[pos] == h


def rank_shipped(model, space: RankerSpace, users: np.ndarray, k: int, *, on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """Return (int64 (U, k) item_idx, float32 (U, k) probability) of the lists ``model`` ships for these
    histories: the very ``Recommender.recommend_batch`` that `crossrec recommend`, the Recommendations
    page and the exports use (cold-start fallback, fusion re-rank, calibrated probability); -1 / NaN pad."""
    users = np.asarray(users, dtype=np.int64)
    recs = Recommender(model).recommend_batch(space.seqs, users, space.ends, k, on_batch=on_batch)
    top = np.full((len(users), k), -1, dtype=np.int64)
    prob = np.full((len(users), k), np.nan, dtype=np.float32)
    # recommend_batch reports user_idx; map back to the row of each requested user (users are distinct)
    row = pd.Index(users).get_indexer(recs["user_idx"].to_numpy(np.int64))
    top[row, recs["rank"].to_numpy(np.int64) - 1] = recs["item_idx"].to_numpy(np.int64)
    prob[row, recs["rank"].to_numpy(np.int64) - 1] = recs["probability"].to_numpy(np.float32)
    return top, prob


# -- result --------------------------------------------------------------------------------------
def _metric_label(metric: str, k: int) -> str:
    return f"{metric}@{k}" if metric in M.RANKING_METRICS else metric


def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class EvaluationResult:
    """Tidy evaluation tables.

    ``metrics``: one row per (method, subset, metric) with value and n_users (the subset size).
    ``per_category``: one row per (method, category, metric) for ranking metrics, grouped by the target's
    category on all users. ``subset_sizes``: users per subset. ``seconds``: fit + scoring time per method.
    """

    dataset: str
    split: str
    k: int
    metrics: pd.DataFrame
    per_category: pd.DataFrame
    subset_sizes: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    # per-user ranking metrics {method: {"NDCG@10": (U,) ...}} and subset masks {subset: bool (U,)},
    # kept so two methods can be compared user by user (``difference``)
    per_user: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    subset_masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # {method: metrics.calibration_report of the shown rows' probabilities} for methods that give one
    calibration: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. the leak guard's, under allow_seen

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.metrics["method"]))

    def value(self, method: str, subset: str, metric: str) -> float:
        """Return one number, e.g. value("item-kNN", "novel", "HR@10")."""
        m = self.metrics
        sel = m[(m["method"] == method) & (m["subset"] == subset) & (m["metric"] == metric)]
        if sel.empty:
            raise KeyError(f"no value for {method!r} / {subset!r} / {metric!r}")
        return float(sel["value"].iloc[0])

    def difference(
        self, a: str, b: str, subset: str = "all", metric: str | None = None, *, n_boot: int = 2000, seed: int = 0
    ) -> M.PairedDifference:
        """Return ``a - b`` on ``metric`` (default NDCG@K) over ``subset``, with a paired-bootstrap 95% interval."""
        metric = metric or _metric_label("NDCG", self.k)
        for method in (a, b):
            if method not in self.per_user:
                raise KeyError(f"no per-user scores for {method!r}; evaluated: {', '.join(self.per_user) or 'none'}")
            if metric not in self.per_user[method]:
                raise KeyError(f"no per-user {metric!r}; available: {', '.join(self.per_user[method])}")
        if subset not in self.subset_masks:
            raise KeyError(f"unknown subset {subset!r}; use one of: {', '.join(self.subset_masks)}")
        mask = self.subset_masks[subset]
        return M.paired_bootstrap(self.per_user[a][metric][mask], self.per_user[b][metric][mask], n_boot=n_boot, seed=seed)

    def table(self, subset: str = "all") -> pd.DataFrame:
        """Return a wide frame: rows method (evaluation order), columns metric (reporting order)."""
        m = self.metrics[self.metrics["subset"] == subset]
        wide = m.pivot(index="method", columns="metric", values="value")
        cols = [c for c in dict.fromkeys(m["metric"]) if c in wide.columns]
        return wide.reindex(index=self.methods, columns=cols)

    def to_text(self, subsets: Iterable[str] = SUBSETS, digits: int = 4) -> str:
        """Return a readable plain-text table per subset (rows method, columns metrics)."""
        parts = [*self.warnings, f"Dataset {self.dataset}: leave-last-out ({self.split}), full ranking, K={self.k}"]
        for subset in subsets:
            n = self.subset_sizes.get(subset, 0)
            parts.append("")
            parts.append(f"{subset} users (n={n})")
            if n == 0:
                parts.append("  (no users in this subset)")
                continue
            parts.append(self.table(subset).to_string(float_format=lambda x: f"{x:.{digits}f}", na_rep="-"))
        for method, c in self.calibration.items():
            if c.get("n"):
                parts.append("")
                parts.append(
                    f"Probabilities of {method} on the {c['n']} shown rows: mean {c['mean_proba']:.{digits}f} vs hit rate "
                    f"{c['positive_rate']:.{digits}f}; expected calibration error {c['ece']:.{digits}f}, Brier {c['brier']:.{digits}f}"
                )
        return "\n".join(parts)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict: {dataset, split, k, n_users, metrics[method][subset][metric], per_category, seconds}."""
        nested: dict = {}
        for row in self.metrics.itertuples(index=False):
            nested.setdefault(row.method, {}).setdefault(row.subset, {})[row.metric] = _json_float(row.value)
        per_cat: dict = {}
        for row in self.per_category.itertuples(index=False):
            entry = per_cat.setdefault(row.method, {}).setdefault(str(row.category), {"n_users": int(row.n_users)})
            entry[row.metric] = _json_float(row.value)
        return {
            "dataset": self.dataset,
            "split": self.split,
            "k": self.k,
            "n_users": {s: int(n) for s, n in self.subset_sizes.items()},
            "metrics": nested,
            "per_category": per_cat,
            "seconds": {m: round(float(s), 3) for m, s in self.seconds.items()},
            "calibration": self.calibration,
            "warnings": list(self.warnings),
        }


# -- main entry ----------------------------------------------------------------------------------
def _as_named(rankers: Mapping[str, Ranker] | Iterable[Ranker]) -> dict[str, Ranker]:
    if isinstance(rankers, Mapping):
        named = dict(rankers)
    else:
        named = {}
        for r in rankers:
            name = str(getattr(r, "name", type(r).__name__))
            if name in named:
                raise ConfigError(f"Two rankers are both named '{name}'. Pass a dict with distinct names.")
            named[name] = r
    if not named:
        raise ConfigError("No rankers to evaluate. Pass at least one model or baseline.")
    return named


def per_user_scores(
    topk_ds: np.ndarray,
    targets: EvalTargets,
    ds: InteractionDataset,
    k: int,
    *,
    popularity: np.ndarray,
    item_vectors: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Return per-user arrays of every ranking metric plus diversity, novelty and cross_share (dataset space)."""
    out = M.per_user_ranking_metrics(topk_ds, targets.targets, k)
    if item_vectors is not None:
        out["diversity"] = M.intra_list_diversity(topk_ds, item_vectors=item_vectors)
    else:
        out["diversity"] = M.intra_list_diversity(topk_ds, item_category=ds.item_category)
    out["novelty"] = M.novelty(topk_ds, popularity)
    out["cross_share"] = M.cross_category_share(topk_ds, ds.item_category, ds.seqs, targets.users, targets.ends)
    return out


def evaluate_rankers(
    ds: InteractionDataset,
    rankers: Mapping[str, Ranker] | Iterable[Ranker],
    *,
    k: int = 10,
    split: str = "test",
    batch_size: int = 1024,
    item_vectors: np.ndarray | None = None,
    max_users: int | None = None,
    seed: int = 0,
    fit_baselines: bool = True,
    retrieval_diagnostic: bool = False,
    allow_seen: bool = False,
) -> EvaluationResult:
    """Return an EvaluationResult comparing ``rankers`` on ``ds`` with leave-last-out and full ranking.

    Args:
        rankers: {name: ranker} or a list (names from ``ranker.name``). Baselines are fitted here on the
            training part of the split when ``fit_baselines`` (the default: it guarantees no target leaks).
        k: list length K.
        split: "test" (target = last event) or "valid" (target = second-to-last event).
        batch_size: users scored at once (capped so a score block stays near 128 MB).
        item_vectors: optional float (n_items, d) in dataset item space for intra-list diversity; without
            it diversity is 1 - the share of same-category pairs.
        max_users: evaluate a seeded sample of at most this many users.
        retrieval_diagnostic: also rank each trained model by retrieval alone (no cold-start fallback,
            no fusion re-rank), as "<name> (retrieval only)": a diagnostic, not what ships.
        allow_seen: evaluate even when a model was fitted on some of the held-out targets (the result's
            ``warnings`` then say so); by default that raises ModelError (``seen_targets``).

    A trained model (``is_model_like``) is scored on exactly the lists it ships (``rank_shipped``), and
    the calibration of their probabilities is reported in ``calibration``.
    """
    if int(k) < 1:
        raise ConfigError(f"k must be at least 1, got {k}.")
    k = int(k)
    named = _as_named(rankers)
    targets = split_targets(ds, split, max_users=max_users, seed=seed)
    train_seqs = training_sequences(ds, split)
    popularity = np.bincount(train_seqs.items, minlength=ds.n_items).astype(np.float64)
    if item_vectors is not None and len(item_vectors) != ds.n_items:
        raise ConfigError(f"item_vectors has {len(item_vectors)} rows but the dataset has {ds.n_items} items.")
    masks = {s: targets.mask(s) for s in SUBSETS}
    cat_names = np.asarray(ds.category_names, dtype=object)
    rows: list[tuple] = []
    cat_rows: list[pd.DataFrame] = []
    seconds: dict[str, float] = {}
    kept: dict[str, dict[str, np.ndarray]] = {}
    calibration: dict[str, dict] = {}
    warnings: list[str] = []
    for name, ranker in named.items():
        if not ships_lists(ranker):
            continue
        seen = seen_targets(ranker, ds, targets)
        if seen.any():
            message = (
                f"Model '{name}' was trained on {int(seen.sum())} of the {targets.n_users} events held out as "
                f"{split} targets in '{ds.name}', so its figures would overstate it"
            )
            if not allow_seen:
                raise LeakError(f"{message}. Evaluate it on a log it was not trained on.")
            warnings.append(f"WARNING: {message}; evaluated anyway as asked (allow_seen).")
    jobs: list[tuple[str, Ranker, bool]] = []
    for name, ranker in named.items():
        shipped = ships_lists(ranker)
        jobs.append((name, ranker, shipped))
        if shipped and retrieval_diagnostic:
            jobs.append((f"{name} (retrieval only)", ranker, False))
    for name, ranker, shipped in jobs:
        t0 = time.perf_counter()
        if fit_baselines and isinstance(ranker, BaselineRanker):
            ranker.fit(ds, train_seqs)
        space = ranker_space(ranker, ds, targets.users, targets.ends, targets.targets)
        if shipped:
            topk, proba = rank_shipped(ranker, space, targets.users, k)
        else:
            topk = rank_all(ranker, space, targets.users, k, batch_size=batch_size)
        topk_ds = np.where(topk >= 0, space.to_ds[np.maximum(topk, 0)], -1)
        if shipped:
            shown = topk >= 0
            calibration[name] = M.calibration_report(proba[shown], (topk_ds == targets.targets[:, None])[shown])
        seconds[name] = time.perf_counter() - t0
        per_user = per_user_scores(topk_ds, targets, ds, k, popularity=popularity, item_vectors=item_vectors)
        kept[name] = {_metric_label(metric, k): per_user[metric] for metric in M.RANKING_METRICS}
        for subset in SUBSETS:
            mask = masks[subset]
            n = int(mask.sum())
            for metric in M.RANKING_METRICS:
                rows.append((name, subset, _metric_label(metric, k), float(per_user[metric][mask].mean()) if n else np.nan, n))
            sub = topk_ds[mask]
            rows.append((name, subset, "coverage", M.catalogue_coverage(sub, ds.n_items) if n else np.nan, n))
            rows.append((name, subset, "category_coverage", M.category_coverage(sub, ds.item_category, ds.n_categories) if n else np.nan, n))
            for metric in ("diversity", "novelty", "cross_share"):
                vals = per_user[metric][mask]
                rows.append((name, subset, metric, float(np.nanmean(vals)) if n and np.isfinite(vals).any() else np.nan, n))
        frame = pd.DataFrame({"category": cat_names[targets.target_category]})
        for metric in M.RANKING_METRICS:
            frame[_metric_label(metric, k)] = per_user[metric]
        grouped = frame.groupby("category", sort=True)
        means = grouped.mean()
        counts = grouped.size()
        long = means.reset_index().melt(id_vars="category", var_name="metric", value_name="value")
        long["n_users"] = long["category"].map(counts).astype(np.int64)
        long.insert(0, "method", name)
        cat_rows.append(long)
        log.info("evaluated %s on %d users in %.1fs", name, targets.n_users, seconds[name])
    metrics_df = pd.DataFrame(rows, columns=["method", "subset", "metric", "value", "n_users"])
    per_category = pd.concat(cat_rows, ignore_index=True) if cat_rows else pd.DataFrame(
        columns=["method", "category", "metric", "value", "n_users"]
    )
    return EvaluationResult(
        dataset=ds.name,
        split=split,
        k=k,
        metrics=metrics_df,
        per_category=per_category,
        subset_sizes={s: int(m.sum()) for s, m in masks.items()},
        seconds=seconds,
        per_user=kept,
        subset_masks=masks,
        calibration=calibration,
        warnings=warnings,
    )
