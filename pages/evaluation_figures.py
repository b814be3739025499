"""Figures of the Evaluation page: reliability diagrams and the threshold curve (presentation only).

Every number comes from crossrec_core (``EvaluationResult.calibration`` reports, ``ThresholdCurve``); model
names go into plotly titles through ``charts.plain``. The router never lists this file as a page.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pages.charts import PALETTE, plain

CURRENT_COLOUR, CHOSEN_COLOUR = "#9E2A2B", "#2D6A4F"


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
