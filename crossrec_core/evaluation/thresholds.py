"""Precision / recall / F1 of "show an item when its probability is at least t", swept over t.

The curve is measured on the TEST targets (each user's last event); the threshold it marks as best is
chosen on the VALIDATION targets (second-to-last event), so the number a merchandiser reads was not
tuned on the events it is measured on. For each evaluated user, a positive is the held-out target.
Two scopes:

* ``top_k``: the list the product ships (``Recommender.recommend_batch``: cold-start fallback, fusion
  re-rank, calibrated probability), cut at the threshold;
* ``all``: every one of the N retrieval candidates the fusion scorer saw, cut at the threshold.

Per threshold: precision per recommended item (what share of shown items are the next purchase),
precision per shopper (the mean over shoppers who still see something), recall (per shopper: one
target each; a target outside the list is a miss at any threshold, so recall never increases with the
threshold), F1 of the per-item precision and recall, items shown per shopper, the share of shoppers
who still see an item, and catalogue coverage of the shown items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.evaluation import metrics as M
from crossrec_core.evaluation.evaluator import rank_all, rank_shipped, ranker_space, ships_lists, split_targets
from crossrec_core.serving.recommender import Recommender
from crossrec_core.serving.scoring import ProbabilisticRanker

SCOPES = ("top_k", "all")


@dataclass(frozen=True)
class ThresholdCurve:
    """A precision / recall / F1 curve over probability thresholds.

    ``curve`` columns: scope ("top_k" / "all"), threshold, precision (NaN when nothing is recommended),
    recall, f1, n_recommended, share_users (users with at least one item left in top_k).
    """

    curve: pd.DataFrame
    best_threshold: float  # the threshold with the best F1 in the top_k scope on ``chosen_on`` (smallest on ties)
    best_f1: float  # that F1, on ``chosen_on``
    auc: float  # ROC AUC of the probability for "candidate is the target", over all candidates
    k: int
    n_candidates: int
    n_users: int
    candidate_recall: float  # share of users whose target is among the N candidates (recall at t = 0)
    split: str = "test"  # the targets the curve is measured on
    chosen_on: str = "valid"  # the targets best_threshold / best_f1 were chosen on

    def scope(self, scope: str = "top_k") -> pd.DataFrame:
        """Return the curve rows of one scope, thresholds ascending."""
        if scope not in SCOPES:
            raise ConfigError(f"Unknown scope '{scope}'. Use one of: {', '.join(SCOPES)}.")
        return self.curve[self.curve["scope"] == scope].reset_index(drop=True)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict with the summary numbers and the curve as records."""
        return {
            "best_threshold": self.best_threshold,
            "best_f1": self.best_f1,
            "auc": None if np.isnan(self.auc) else self.auc,
            "k": self.k,
            "n_candidates": self.n_candidates,
            "n_users": self.n_users,
            "candidate_recall": self.candidate_recall,
            "split": self.split,
            "chosen_on": self.chosen_on,
            "curve": self.curve.astype(object).where(self.curve.notna(), None).to_dict(orient="records"),
        }


def sweep(proba: np.ndarray, labels: np.ndarray, n_users: int, thresholds: np.ndarray) -> pd.DataFrame:
    """Return precision / recall / f1 / n_recommended of "p >= t" for each threshold t.

    Args:
        proba: float (M,) probabilities of the items considered; labels: bool (M,) positives among them;
        n_users: the number of relevant items overall (one per user) -- the recall denominator.
    """
    proba = np.asarray(proba, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    t = np.asarray(thresholds, dtype=np.float64)
    all_sorted = np.sort(proba)
    pos_sorted = np.sort(proba[labels])
    n_rec = len(all_sorted) - np.searchsorted(all_sorted, t, side="left")  # count of p >= t
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, t, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_rec > 0, tp / np.maximum(n_rec, 1), np.nan)
    recall = tp / max(n_users, 1)
    denom = np.nan_to_num(precision) + recall
    f1 = np.where(denom > 0, 2 * np.nan_to_num(precision) * recall / np.where(denom > 0, denom, 1), 0.0)
    return pd.DataFrame({"threshold": t, "precision": precision, "recall": recall, "f1": f1, "n_recommended": n_rec})


def _scored_lists(model, ds: InteractionDataset, split: str, k: int, n_candidates: int, max_users, seed: int, batch_size: int):
    """Return (shown_p (U, k), shown_l (U, k), shown_items (U, k), cand_p (U, N), cand_l (U, N), n_items)
    for the users of ``split``: the lists the model ships (a trained model: Recommender.recommend_batch,
    fusion order, calibrated probability) and its N retrieval candidates with their probabilities."""
    targets = split_targets(ds, split, max_users=max_users, seed=seed)
    space = ranker_space(model, ds, targets.users, targets.ends, targets.targets)
    users = targets.users.astype(np.int64)
    tgt = space.targets[:, None]
    if ships_lists(model):
        top, top_p = rank_shipped(model, space, users, k)
        rec = Recommender(model)
        cand = np.full((len(users), n_candidates), -1, dtype=np.int64)
        proba = np.full(cand.shape, -np.inf)
        for a in range(0, len(users), batch_size):
            sc = rec.candidates(space.seqs, users[a : a + batch_size], space.ends[a : a + batch_size], n_candidates)
            n = sc.cand.shape[1]
            cand[a : a + batch_size, :n] = np.where(sc.valid, sc.cand, -1)
            proba[a : a + batch_size, :n] = np.where(sc.valid, sc.probability, -np.inf)
        top_p = np.where(top >= 0, top_p, -np.inf)
    else:
        if not callable(getattr(model, "fusion_proba", None)):
            raise ModelError(f"'{getattr(model, 'name', model)}' has no probability scorer; a threshold curve needs a trained crossrec model.")
        cand = rank_all(model, space, users, n_candidates, batch_size=batch_size)  # (U, N) model item_idx, -1 pad
        valid = cand >= 0
        proba = np.zeros(cand.shape, dtype=np.float64)
        for a in range(0, len(users), batch_size):
            sl = slice(a, a + batch_size)
            proba[sl] = model.fusion_proba(space.seqs, users[sl], space.ends[sl], np.where(valid[sl], cand[sl], 0))
        proba = np.where(valid, proba, -np.inf)  # padding never passes a threshold
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]  # the K most probable (ties: retrieval order)
        top, top_p = np.take_along_axis(cand, order, axis=1), np.take_along_axis(proba, order, axis=1)
    labels = (cand >= 0) & (cand == tgt) & (tgt >= 0)
    top_l = (top >= 0) & (top == tgt) & (tgt >= 0)
    return top_p.astype(np.float64), top_l, top, proba.astype(np.float64), labels, len(space.to_ds)


def _curve(top_p, top_l, top_items, proba, labels, n_items: int, n_thresholds: int) -> pd.DataFrame:
    n_users = len(top_p)
    # an even grid for the chart plus quantiles of the shown probabilities, so a model whose probabilities
    # all sit below 0.1 still gets a fine-grained best threshold
    shown = top_p[np.isfinite(top_p)]
    quantiles = np.quantile(shown, np.linspace(0.0, 1.0, int(n_thresholds))) if len(shown) else np.zeros(0)
    grid = np.round(np.linspace(0.0, 1.0, int(n_thresholds)), 12)  # 0.7, not 0.7000000000000001
    thresholds = np.unique(np.clip(np.concatenate([grid, quantiles]), 0.0, 1.0))
    frames = []
    for scope, p, lab in (("top_k", top_p, top_l), ("all", proba, labels)):
        ok = np.isfinite(p)
        f = sweep(p[ok], lab[ok], n_users, thresholds)
        # users who still see at least one item at each threshold
        user_max = np.where(ok, p, -np.inf).max(axis=1) if p.shape[1] else np.full(n_users, -np.inf)
        f["share_users"] = (user_max[None, :] >= thresholds[:, None]).mean(axis=1) if n_users else np.nan
        f["items_per_user"] = f["n_recommended"] / max(n_users, 1)
        if scope == "top_k":
            # per shopper: the mean over shoppers who see something of (their hits / items they see)
            shown_mask = ok[None, :, :] & (p[None, :, :] >= thresholds[:, None, None])  # (T, U, k)
            n_u = shown_mask.sum(axis=2)
            hits_u = (shown_mask & lab[None]).sum(axis=2)
            with np.errstate(invalid="ignore", divide="ignore"):
                f["precision_per_user"] = np.where((n_u > 0).any(axis=1), (hits_u / np.maximum(n_u, 1)).sum(axis=1) / np.maximum((n_u > 0).sum(axis=1), 1), np.nan)
            f["coverage"] = [
                len(np.unique(top_items[m])) / max(n_items, 1) for m in shown_mask
            ]
        else:
            f["precision_per_user"] = np.nan
            f["coverage"] = np.nan
        f.insert(0, "scope", scope)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def _best(curve: pd.DataFrame) -> tuple[float, float]:
    top = curve[curve["scope"] == "top_k"]
    best = int(np.argmax(top["f1"].to_numpy()))
    return float(top["threshold"].iloc[best]), float(top["f1"].iloc[best])


def threshold_curve(
    model: ProbabilisticRanker,
    ds: InteractionDataset,
    *,
    split: str = "test",
    choose_split: str | None = "valid",
    k: int = 10,
    n_candidates: int = 50,
    n_thresholds: int = 101,
    max_users: int | None = 5000,
    seed: int = 0,
    batch_size: int = 512,
) -> ThresholdCurve:
    """Return the ThresholdCurve of ``model``'s probabilities on ``ds``.

    Args:
        split: the targets the curve is reported on ("test", the default, or "valid").
        choose_split: the targets the best threshold is chosen on ("valid" by default, so the threshold
            is never tuned on the targets it is reported on; None = ``split``).
        k: the shown list length; n_candidates: retrieved candidates scored by the fusion head (N >= K).
        n_thresholds: evenly spaced thresholds from 0 to 1 (plus as many quantiles of the shown probabilities).
        max_users: evaluate a seeded sample of at most this many users (None = all).
    """
    if int(k) < 1:
        raise ConfigError(f"k must be at least 1, got {k}.")
    if int(n_candidates) < int(k):
        raise ConfigError(f"n_candidates ({n_candidates}) must be at least k ({k}).")
    if int(n_thresholds) < 2:
        raise ConfigError(f"n_thresholds must be at least 2, got {n_thresholds}.")
    if not (ships_lists(model)) and not callable(getattr(model, "fusion_proba", None)):
        raise ModelError(f"'{getattr(model, 'name', model)}' has no probability scorer; a threshold curve needs a trained crossrec model.")
    k, n_candidates = int(k), int(n_candidates)
    top_p, top_l, top_items, proba, labels, n_items = _scored_lists(model, ds, split, k, n_candidates, max_users, seed, batch_size)
    curve = _curve(top_p, top_l, top_items, proba, labels, n_items, n_thresholds)
    chooser = split if choose_split in (None, split) else choose_split
    if chooser == split:
        best_t, best_f1 = _best(curve)
    else:
        best_t, best_f1 = _best(_curve(*_scored_lists(model, ds, chooser, k, n_candidates, max_users, seed, batch_size), n_thresholds))
    valid = np.isfinite(proba)
    n_users = len(top_p)
    return ThresholdCurve(
        curve=curve,
        best_threshold=best_t,
        best_f1=best_f1,
        auc=M.auc(labels[valid], proba[valid]),
        k=k,
        n_candidates=n_candidates,
        n_users=n_users,
        candidate_recall=float(labels.any(axis=1).mean()) if n_users else float("nan"),
        split=split,
        chosen_on=chooser,
    )
