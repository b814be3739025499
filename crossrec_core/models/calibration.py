"""The probability mapping: Platt scaling with a cold-user term, increasing by construction.

Fitted by training/fusion_fit.py on out-of-fold scorer logits of held-out positions (or on retrieval
scores when the re-rank is off), stored with the model (calibration.json) and applied on every list.

What it maps (``basis``):

- ``"log_softmax"`` (every model trained since session 7): the candidate's logit minus the log-sum-exp
  of the logits of the user's candidate pool -- the fusion fit's own listwise estimate of "this is the
  one among the pool", which Platt then scales for how often the target is in the pool at all. Why:
  the listwise loss fixes a logit only up to a per-user shift, so one curve through raw logits of many
  users flattens (it came out 2-4x low at the top of the list on every log measured), and the final
  scorer's logits sat on another scale than the out-of-fold ones it was fitted on (chain-a: the mean
  best logit -0.70 against 1.42). Both shift the logit of every candidate of a user alike, and the
  log-softmax is blind to such a shift. Measured on test, top-10 rows, mean probability against hit
  rate: demo 0.036 / 0.038 (raw logits: 0.021), chain-a 0.043 / 0.042 (raw: 0.011); bench/RESULTS.md.
  The pool is always the unfiltered pool the scorer was fitted on (Recommender._pool_normaliser), so a
  filter that hides items never raises the probability of the rest.
- ``"logit"``: the raw logit; what models saved before then use (their calibration.json has no basis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASES = ("logit", "log_softmax")
MIN_SLOPE = 1e-3  # the smallest slope the mapping may have (it is increasing by construction)


@dataclass(frozen=True)
class Calibration:
    """Platt scaling with a cold-user term: P = sigmoid(a * logit + b + c * cold + e * cold * logit).

    Fitted on out-of-fold logits of held-out positions (never on positions the scorer learned from).
    """

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    e: float = 0.0
    basis: str = "logit"  # what the curve reads: "logit" or "log_softmax" (module docstring)

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"calibration basis must be one of {BASES}, got {self.basis!r}")

    @property
    def needs_normaliser(self) -> bool:
        """Whether ``apply`` needs each user's pool log-sum-exp (``log_normaliser``)."""
        return self.basis == "log_softmax"

    def apply(self, logits: np.ndarray, cold: np.ndarray, normaliser: np.ndarray | None = None) -> np.ndarray:
        """Return float32 probabilities for ``logits`` (B, N) of users with cold flags (B,).

        ``normaliser`` (B,): each user's ``log_normaliser`` over the candidate pool; required when the
        basis is "log_softmax", ignored otherwise.
        """
        cold = np.asarray(cold, dtype=np.float64)[:, None]
        x = logits.astype(np.float64)
        if self.needs_normaliser:
            if normaliser is None:
                raise ValueError("a log-softmax calibration needs each user's pool normaliser")
            x = x - np.asarray(normaliser, dtype=np.float64)[:, None]
        z = self.a * x + self.b + cold * (self.c + self.e * x)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "e": self.e, "basis": self.basis}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        # a model saved before the basis existed mapped raw logits
        return cls(**{k: float(d[k]) for k in ("a", "b", "c", "e")}, basis=str(d.get("basis", "logit")))

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, cold: np.ndarray, ridge: float = 1.0, basis: str = "logit") -> "Calibration":
        """Return the logistic fit of labels on (x, 1, cold, cold * x), increasing in x.

        ``logits`` are the x values of ``basis``: raw logits, or logits minus their user's
        ``log_normaliser`` for "log_softmax".

        Newton steps on the standardised logit (float64, a small ridge); a slope that comes out <= 0
        (a scorer no better than chance on few held-out users) is fixed at a small positive value and
        the rest refitted, so the probability never falls as the logit rises.
        """
        x = np.asarray(logits, dtype=np.float64).ravel()
        y = np.asarray(labels, dtype=np.float64).ravel()
        c = np.asarray(cold, dtype=np.float64).ravel()
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if len(y) else 1e-6
        mu, sd = (float(x.mean()), float(x.std())) if len(x) else (0.0, 1.0)
        sd = sd if sd > 1e-12 else 1.0
        if y.sum() == 0 or y.sum() == len(y):
            return cls(MIN_SLOPE, float(np.log(rate / (1 - rate))) - MIN_SLOPE * mu, 0.0, 0.0, basis)
        xs = (x - mu) / sd
        use_cold = 0 < c.sum() < len(c) and y[c > 0].sum() > 0
        X = np.stack([xs, np.ones_like(xs), c, c * xs], axis=1) if use_cold else np.stack([xs, np.ones_like(xs)], axis=1)
        w = np.zeros(X.shape[1])
        w[1] = float(np.log(rate / (1 - rate)))
        fixed = np.zeros(X.shape[1], dtype=bool)
        min_std_slope = MIN_SLOPE * sd
        for _ in range(3):  # refit with a slope fixed when one comes out non-increasing
            w = _newton(X, y, w, fixed, ridge)
            if w[0] < min_std_slope and not fixed[0]:
                w[0], fixed[0] = min_std_slope, True
                if use_cold:
                    w[3], fixed[3] = 0.0, True
                continue
            if use_cold and w[0] + w[3] < min_std_slope and not fixed[3]:
                w[3], fixed[3] = min_std_slope - w[0], True
                continue
            break
        a_s, b_s, c_s, e_s = (w[0], w[1], w[2], w[3]) if use_cold else (w[0], w[1], 0.0, 0.0)
        # back to the raw logit: a_s * (x - mu) / sd + b_s
        return cls(float(a_s / sd), float(b_s - a_s * mu / sd), float(c_s - e_s * mu / sd), float(e_s / sd), basis)


def log_normaliser(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Return float64 (B,): log-sum-exp of each row's ``valid`` logits (B, N); 0 for a row with none."""
    x = np.where(valid, np.asarray(logits, dtype=np.float64), -np.inf)
    top = x.max(axis=1, initial=-np.inf)
    safe = np.where(np.isfinite(top), top, 0.0)
    total = np.exp(x - safe[:, None]).sum(axis=1)
    return np.where(total > 0, safe + np.log(np.where(total > 0, total, 1.0)), 0.0)


def _newton(X: np.ndarray, y: np.ndarray, w: np.ndarray, fixed: np.ndarray, ridge: float) -> np.ndarray:
    """Return logistic-regression weights from ``w`` by damped Newton steps on the free columns."""
    w = w.copy()
    free = ~fixed
    for _ in range(100):
        z = np.clip(X @ w, -60, 60)
        p = 1.0 / (1.0 + np.exp(-z))
        g = X[:, free].T @ (p - y) + ridge * w[free]
        H = (X[:, free] * (p * (1 - p))[:, None]).T @ X[:, free] + ridge * np.eye(int(free.sum()))
        step = np.linalg.solve(H, g)
        step *= min(1.0, 5.0 / max(np.abs(step).max(), 1e-12))  # damped: no overshoot on separable data
        w[free] -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


