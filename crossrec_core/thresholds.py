"""Precision / recall / F1 of "recommend when the fusion probability is at least t", swept over t.

For each evaluated user (leave-last-out, split "valid" by default so the threshold is not tuned on the
test targets) the model retrieves its top-N unseen candidates; the fusion scorer gives each a
probability; a candidate is a positive when it is the held-out target. Two scopes are reported:

* ``top_k``: the list the app shows, the K most probable candidates, cut at the threshold;
* ``all``: every one of the N candidates, cut at the threshold.

Recall is over all evaluated users (a target outside the candidates is a miss at any threshold), so it
never increases with the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crossrec_core import metrics as M
from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.evaluate import rank_all, ranker_space, split_targets
from crossrec_core.scoring import ProbabilisticRanker

SCOPES = ("top_k", "all")


@dataclass(frozen=True)
class ThresholdCurve:
    """A precision / recall / F1 curve over probability thresholds.

    ``curve`` columns: scope ("top_k" / "all"), threshold, precision (NaN when nothing is recommended),
    recall, f1, n_recommended, share_users (users with at least one item left in top_k).
    """

    curve: pd.DataFrame
    best_threshold: float  # the threshold with the best F1 in the top_k scope (the smallest on ties)
    best_f1: float
    auc: float  # ROC AUC of the probability for "candidate is the target", over all candidates
    k: int
    n_candidates: int
    n_users: int
    candidate_recall: float  # share of users whose target is among the N candidates (recall at t = 0)

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


def threshold_curve(
    model: ProbabilisticRanker,
    ds: InteractionDataset,
    *,
    split: str = "valid",
    k: int = 10,
    n_candidates: int = 50,
    n_thresholds: int = 101,
    max_users: int | None = 5000,
    seed: int = 0,
    batch_size: int = 512,
) -> ThresholdCurve:
    """Return the ThresholdCurve of ``model``'s fusion probabilities on ``ds``.

    Args:
        split: "valid" (default: tune on validation targets) or "test".
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
    if not callable(getattr(model, "fusion_proba", None)):
        raise ModelError(f"'{getattr(model, 'name', model)}' has no probability scorer; a threshold curve needs a trained crossrec model.")
    k, n_candidates = int(k), int(n_candidates)
    targets = split_targets(ds, split, max_users=max_users, seed=seed)
    space = ranker_space(model, ds, targets.users, targets.ends, targets.targets)
    users = targets.users.astype(np.int64)
    cand = rank_all(model, space, users, n_candidates, batch_size=batch_size)  # (U, N) model item_idx, -1 pad
    valid = cand >= 0
    proba = np.zeros(cand.shape, dtype=np.float64)
    for a in range(0, len(users), batch_size):
        sl = slice(a, a + batch_size)
        c = np.where(valid[sl], cand[sl], 0)
        proba[sl] = model.fusion_proba(space.seqs, users[sl], space.ends[sl], c)
    proba = np.where(valid, proba, -np.inf)  # padding never passes a threshold
    labels = valid & (cand == space.targets[:, None]) & (space.targets[:, None] >= 0)
    # the shown list: the K most probable candidates (ties keep retrieval order)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    top_p = np.take_along_axis(proba, order, axis=1)
    top_l = np.take_along_axis(labels, order, axis=1)
    # an even grid for the chart plus quantiles of the shown probabilities, so a model whose probabilities
    # all sit below 0.1 still gets a fine-grained best threshold
    shown = top_p[np.isfinite(top_p)]
    quantiles = np.quantile(shown, np.linspace(0.0, 1.0, int(n_thresholds))) if len(shown) else np.zeros(0)
    grid = np.round(np.linspace(0.0, 1.0, int(n_thresholds)), 12)  # 0.7, not 0.7000000000000001
    thresholds = np.unique(np.clip(np.concatenate([grid, quantiles]), 0.0, 1.0))
    n_users = len(users)
    frames = []
    for scope, p, lab in (("top_k", top_p, top_l), ("all", proba, labels)):
        ok = np.isfinite(p)
        f = sweep(p[ok], lab[ok], n_users, thresholds)
        # users who still see at least one item at each threshold
        user_max = np.where(ok, p, -np.inf).max(axis=1)
        f["share_users"] = (user_max[None, :] >= thresholds[:, None]).mean(axis=1) if n_users else np.nan
        f.insert(0, "scope", scope)
        frames.append(f)
    curve = pd.concat(frames, ignore_index=True)
    top = curve[curve["scope"] == "top_k"]
    best = int(np.argmax(top["f1"].to_numpy()))
    return ThresholdCurve(
        curve=curve,
        best_threshold=float(top["threshold"].iloc[best]),
        best_f1=float(top["f1"].iloc[best]),
        auc=M.auc(labels[valid], proba[valid]),
        k=k,
        n_candidates=n_candidates,
        n_users=n_users,
        candidate_recall=float(labels.any(axis=1).mean()) if n_users else float("nan"),
    )
