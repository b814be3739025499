"""Tables and sentences for the Evaluation page (presentation only: no streamlit, no model math; the figures
are pages/evaluation_figures.py).

Every number comes from crossrec_core (``EvaluationResult``, its ``calibration`` reports, ``ThresholdCurve``);
this module only lays them out. Model names and other text from the workspace go into plotly traces and
frame headers (rendered as text) or through ``md_escape`` before markdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# the sentences live in crossrec_core, so the HTML report says exactly what the page says
from crossrec_core.evaluation.verdicts import (  # noqa: F401 (re-exported to the pages)
    SUBSET_LABELS,
    VERDICT_NOISE,
    VERDICT_REAL,
    calibration_note,
    calibration_sentence,
)

COMPARE_METRICS = ("NDCG@10", "HR@10")


def protocol_line(n_users: str, k: int, models: str = "the model was") -> str:
    """Return the one line saying which shoppers, targets and split every number below it uses."""
    return (f"Test targets: each shopper's last event, for {n_users} sampled shoppers; {models} trained on the events "
            f"before each shopper's last two, the baselines fitted on everything before each target. Every method "
            f"ranks the whole catalogue and shows {k} products; products the shopper already had are never counted.")


def per_category(result) -> tuple[str, pd.Series]:
    """Return (metric, the model's value per category of the hidden product): NDCG@10 when measured."""
    per_cat = result.per_category
    metric = "NDCG@10" if "NDCG@10" in set(per_cat["metric"]) else per_cat["metric"].iloc[0]
    mine = per_cat[(per_cat["method"] == result.methods[0]) & (per_cat["metric"] == metric)]
    return metric, mine.set_index("category")["value"]


def threshold_caption(curve, current: float) -> str:
    """Return the caption under the threshold curve: which targets it is on, where its marks come from."""
    row = curve.scope("top_k")
    at = row.iloc[int(np.searchsorted(row["threshold"].to_numpy(), current, side="left").clip(0, len(row) - 1))]
    shown = (f"{at['items_per_user']:.1f} products per shopper, precision per shown product {at['precision']:.3f}, "
             f"recall {at['recall']:.3f}, catalogue coverage {at['coverage']:.3f}")
    return (f"The curve is on the {curve.split} targets (each shopper's last event) of {curve.n_users:,} shoppers, "
            f"over the top {curve.k} they would be shown. The dotted mark ({curve.best_threshold:.3g}, F1 "
            f"{curve.best_f1:.3f}) was chosen on the {'validation' if curve.chosen_on == 'valid' else curve.chosen_on} "
            f"targets (each shopper's second-to-last event), so it was not tuned on the events it is measured on. "
            f"At your threshold {current:.3g}: {shown}. AUC {curve.auc:.3f}.")


def verdict(d) -> str:
    """Return 'a real difference' when the 95% interval excludes 0, else 'within noise'."""
    return VERDICT_REAL if d.significant else VERDICT_NOISE


_FIXED_COLUMNS = {"shoppers", "n", "metric", "difference", "95% interval", "verdict"}


def comparison_frame(result, a: str, b: str, metrics=COMPARE_METRICS) -> pd.DataFrame:
    """Return one row per (shoppers, metric): both models' values, the paired-bootstrap difference a - b,
    its 95% interval and the verdict; columns 3 and 4 are the two models. Subsets without shoppers are left out."""
    a_col, b_col = (m if m not in _FIXED_COLUMNS else f"{m} (model)" for m in (a, b))
    rows = []
    for subset, label in SUBSET_LABELS.items():
        n = int(result.subset_sizes.get(subset, 0))
        if n == 0:
            continue
        for metric in metrics:
            d = result.difference(a, b, subset, metric)
            rows.append({"shoppers": label, "n": n, "metric": metric,
                         a_col: result.value(a, subset, metric), b_col: result.value(b, subset, metric),
                         "difference": d.mean, "95% interval": _interval(d.low, d.high), "verdict": verdict(d)})
    return pd.DataFrame(rows, columns=["shoppers", "n", "metric", a_col, b_col, "difference", "95% interval", "verdict"])


def _interval(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "-"
    return f"{low:+.3f} to {high:+.3f}"
