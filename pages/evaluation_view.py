"""Figures, tables and sentences for the Evaluation page (presentation only: no streamlit, no model math).

Every number comes from crossrec_core (``EvaluationResult``, its ``calibration`` reports, ``ThresholdCurve``);
this module only lays them out. Model names and other text from the workspace go into plotly traces and
frame headers (rendered as text) or through ``md_escape`` before markdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pages.charts import PALETTE, plain

SUBSET_LABELS = {"all": "All shoppers", "switch": "Next product in another category",
                 "novel": "Next product in a category new to them"}
COMPARE_METRICS = ("NDCG@10", "HR@10")
VERDICT_REAL, VERDICT_NOISE = "a real difference", "within noise"
CURRENT_COLOUR, CHOSEN_COLOUR = "#9E2A2B", "#2D6A4F"


def protocol_line(n_users: str, k: int, models: str = "the model was") -> str:
    """Return the one line saying which shoppers, targets and split every number below it uses."""
    return (f"Test targets: each shopper's last event, for {n_users} sampled shoppers; {models} trained on the events "
            f"before each shopper's last two, the baselines fitted on everything before each target. Every method "
            f"ranks the whole catalogue and shows {k} products; products the shopper already had are never counted.")


def calibration_sentence(report: dict) -> str:
    """Return one plain sentence with ECE, Brier and the mean probability against the hit rate."""
    if not report or not report.get("n"):
        return "No probabilities to check: the model showed no products to these shoppers."
    return (f"On the {report['n']:,} products shown, the mean probability is {report['mean_proba']:.3f} vs a hit "
            f"rate of {report['positive_rate']:.3f}: expected calibration error {report['ece']:.3f} "
            f"(0 = each probability comes true exactly as often as it says), Brier score {report['brier']:.3f}.")


def calibration_note(k: int) -> str:
    return (f"Measured on the test targets (each shopper's last event), over the {k} products shown to each "
            "shopper: a product counts as a hit when it is the one the shopper took next.")


def _bins(report: dict | None) -> pd.DataFrame:
    return pd.DataFrame((report or {}).get("bins", []), columns=["lo", "hi", "n", "mean_proba", "rate"])


def reliability_top(*reports: dict) -> float:
    """Return the axis end that shows every bin of ``reports`` (one scale for diagrams shown side by side)."""
    tops = [float(np.nanmax(b[["mean_proba", "rate", "hi"]].to_numpy())) for b in map(_bins, reports) if len(b)]
    return min(1.0, max([0.05, *tops]) * 1.08)


def reliability_figure(report: dict, title: str = "", height: int = 360, top: float | None = None) -> go.Figure:
    """Return a reliability diagram: observed hit rate against mean predicted probability per bin.

    Marker size grows with the number of shown products in the bin; the dashed diagonal is perfect
    calibration. The axes zoom to the populated range (probabilities of the next item are mostly small),
    or end at ``top`` (``reliability_top``) so that two diagrams share one scale.
    """
    bins = _bins(report)
    top = reliability_top(report) if top is None else float(top)
    n = bins["n"].to_numpy(dtype=float)
    size = 8 + 30 * np.sqrt(n / n.max()) if len(n) else n
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="perfect calibration",
                             line=dict(color="#888", dash="dash", width=1), hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=bins["mean_proba"], y=bins["rate"], mode="markers", name="observed",  # no line: a 1-product bin is a dot
        marker=dict(size=size, color=PALETTE[0], opacity=0.8, line=dict(width=1, color="white")),
        customdata=np.stack([bins["lo"], bins["hi"], bins["n"]], axis=1) if len(bins) else None,
        hovertemplate=("probability %{customdata[0]:.2f}-%{customdata[1]:.2f}: %{customdata[2]:,} products, "
                       "mean %{x:.3f}, hit rate %{y:.3f}<extra></extra>"),
    ))
    pad = 0.03 * top  # a bin at the edge stays a whole dot
    fig.update_xaxes(title="predicted probability (bin mean)", range=[-pad, top + pad])
    fig.update_yaxes(title="observed hit rate", range=[-pad, top + pad])
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), title=str(plain([title])[0]),
                      showlegend=False)
    return fig


THRESHOLD_LINES = {  # curve column: (legend label, colour index, dash)
    "precision": ("precision per shown product", 0, "solid"),
    "precision_per_user": ("precision per shopper", 1, "solid"),
    "recall": ("recall", 2, "solid"),
    "f1": ("F1", 3, "solid"),
    "coverage": ("catalogue coverage", 4, "dot"),
}


def threshold_figure(frame: pd.DataFrame, current: float, chosen: float) -> go.Figure:
    """Return P/R/F1/coverage against the threshold (left axis) and products shown per shopper (right axis),
    with the current threshold (dashed) and the one chosen on validation (dotted) marked."""
    fig = go.Figure()
    for col, (label, colour, dash) in THRESHOLD_LINES.items():
        if col in frame:
            fig.add_trace(go.Scatter(x=frame["threshold"], y=frame[col], mode="lines", name=label,
                                     line=dict(color=PALETTE[colour], dash=dash)))
    if "items_per_user" in frame:
        fig.add_trace(go.Scatter(x=frame["threshold"], y=frame["items_per_user"], mode="lines", yaxis="y2",
                                 name="products shown per shopper (right)", line=dict(color="#555", dash="dash")))
    # the two marks are labelled at different heights so they never overlap, even at the same threshold
    fig.add_vline(x=float(chosen), line_dash="dot", line_color=CHOSEN_COLOUR, annotation=dict(
        text=f"chosen on validation {chosen:.3g}", y=0.9, yanchor="top", xanchor="left", font_color=CHOSEN_COLOUR))
    fig.add_vline(x=float(current), line_dash="dash", line_color=CURRENT_COLOUR, annotation=dict(
        text=f"your threshold {current:.3g}", y=1.0, yanchor="top", xanchor="left", font_color=CURRENT_COLOUR))
    # zoom on the thresholds where something is still shown (calibrated next-item probabilities are small)
    shown = frame.loc[frame["n_recommended"] > 0, "threshold"] if "n_recommended" in frame else frame["threshold"]
    right = min(1.0, max(float(shown.max()) if len(shown) else 1.0, current, chosen) * 1.1 + 0.01)
    fig.update_layout(
        height=400, margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(title="probability threshold", range=[0, right]),
        yaxis=dict(title="share", range=[0, 1.02]),
        yaxis2=dict(title="products per shopper", overlaying="y", side="right", rangemode="tozero", showgrid=False),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


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
