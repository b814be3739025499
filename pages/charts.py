"""Plotly figure builders for the studio pages (presentation only: no model math, no streamlit).

Text from the data (titles, categories, ids) only ever goes into plotly hover text / tick labels,
which plotly renders as text; hover templates reference customdata so no data is parsed as a
template. Strings are passed through ``plain`` which neutralises plotly's small HTML subset. The embedding
map's figure is pages/charts_map.py; the Evaluation page's are pages/evaluation_figures.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

PALETTE = px.colors.qualitative.Bold + px.colors.qualitative.Safe + px.colors.qualitative.Vivid


def plain(values) -> np.ndarray:
    """Return values as strings with '<' and '>' made inert (plotly labels accept a few HTML tags)."""
    s = pd.Series(np.asarray(values, dtype=object)).astype(str)
    return s.str.replace("<", "\u2039", regex=False).str.replace(">", "\u203a", regex=False).to_numpy(dtype=object)


def layout(fig: go.Figure, height: int = 380, **kw) -> go.Figure:
    """Return ``fig`` with the studio's height and margins (and any other layout keywords)."""
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), **kw)
    return fig


def bar(series: pd.Series, title: str, x_title: str, y_title: str, top: int = 30) -> go.Figure:
    """Return a bar chart of a Series (index = labels), largest first, at most ``top`` bars."""
    s = series.sort_values(ascending=False).head(top)
    fig = go.Figure(go.Bar(x=plain(s.index), y=s.to_numpy(), marker_color=PALETTE[0]))
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(title=y_title)
    return layout(fig, title=title)


def histogram(values: np.ndarray, title: str, x_title: str) -> go.Figure:
    """Return a histogram (log-x friendly) of per-user or per-item counts."""
    fig = go.Figure(go.Histogram(x=np.asarray(values), nbinsx=50, marker_color=PALETTE[1]))
    fig.update_xaxes(title=x_title)
    # ticks at the powers of ten only: plotly's default log ticks label 2 and 5 of every decade ("100, 5, 2, 10")
    fig.update_yaxes(title="count", type="log", dtick=1, tickformat=",d")
    return layout(fig, title=title)


def heatmap(frame: pd.DataFrame, title: str, colorscale: str = "Teal", zmax: float | None = None) -> go.Figure:
    """Return a category x category heatmap (rows = from, columns = to)."""
    fig = go.Figure(
        go.Heatmap(
            z=frame.to_numpy(dtype=float), x=plain(frame.columns), y=plain(frame.index),
            colorscale=colorscale, zmin=0, zmax=zmax, hovertemplate="%{y} \u2192 %{x}: %{z:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title="next category", type="category", tickangle=-45)
    fig.update_yaxes(title="from category", type="category", autorange="reversed")
    return layout(fig, height=max(380, 18 * len(frame) + 120), title=title)


def training_curves(loss_curve: list, valid_curve: list, reference: float | None = None) -> go.Figure:
    """Return the live training figure: loss per step (left axis) and validation NDCG@10 per epoch (right), a pair
    per fit run (points (x, y, run): length buckets and random batches take turns), with the most popular products'
    NDCG@10 on the same shoppers as a dashed line: the yardstick of "is 0.020 good"."""
    fig = go.Figure()
    for i, (run, pts) in enumerate(_by_run(loss_curve).items()):
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=_named("training loss", run),
                                 line=dict(color=PALETTE[0], dash="dot" if i else "solid")))
    for i, (run, pts) in enumerate(_by_run(valid_curve).items()):
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", yaxis="y2",
                                 name=_named("validation NDCG@10", run), line=dict(color=PALETTE[1 + i])))
    vx = [p[0] for p in valid_curve]
    if reference is not None and valid_curve:
        fig.add_trace(go.Scatter(x=[min(vx), max(vx)], y=[reference] * 2, mode="lines", yaxis="y2",
                                 name=f"most popular products: {reference:.3f}", line=dict(color="grey", dash="dash")))
    fig.update_layout(
        xaxis=dict(title="epoch"), yaxis=dict(title="loss"),
        yaxis2=dict(title="NDCG@10", overlaying="y", side="right", rangemode="tozero", tickmode="auto", nticks=6, showgrid=False),
        legend=dict(orientation="h", y=-0.25, yanchor="top"),  # below: two runs' four names take two rows, and above
    )                                                              # the plot they hid the top of the validation lines
    return layout(fig, height=380)


def _by_run(curve: list) -> dict[str, list]:
    """Return a curve's points grouped by their run label (a third element; "" when absent), in first-seen order."""
    runs: dict[str, list] = {}
    for pt in curve:
        runs.setdefault(str(pt[2]) if len(pt) > 2 else "", []).append(pt)
    return runs


def _named(what: str, run: str) -> str:
    return f"{what} ({run})" if run else what

