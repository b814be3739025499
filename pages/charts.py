"""Plotly figure builders for the studio pages (presentation only: no model math, no streamlit).

Text from the data (titles, categories, ids) only ever goes into plotly hover text / tick labels,
which plotly renders as text; hover templates reference customdata so no data is parsed as a
template. Strings are passed through ``plain`` which neutralises plotly's small HTML subset.
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


def _layout(fig: go.Figure, height: int = 380, **kw) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), **kw)
    return fig


def bar(series: pd.Series, title: str, x_title: str, y_title: str, top: int = 30) -> go.Figure:
    """Return a bar chart of a Series (index = labels), largest first, at most ``top`` bars."""
    s = series.sort_values(ascending=False).head(top)
    fig = go.Figure(go.Bar(x=plain(s.index), y=s.to_numpy(), marker_color=PALETTE[0]))
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(title=y_title)
    return _layout(fig, title=title)


def histogram(values: np.ndarray, title: str, x_title: str) -> go.Figure:
    """Return a histogram (log-x friendly) of per-user or per-item counts."""
    fig = go.Figure(go.Histogram(x=np.asarray(values), nbinsx=50, marker_color=PALETTE[1]))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count", type="log")
    return _layout(fig, title=title)


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
    return _layout(fig, height=max(380, 18 * len(frame) + 120), title=title)


def curves(frame: pd.DataFrame, x: str, ys: list[str], title: str, marker_x: float | None = None) -> go.Figure:
    """Return line curves of ``ys`` against ``x``, with an optional vertical marker (e.g. the threshold)."""
    fig = go.Figure()
    for i, y in enumerate(ys):
        fig.add_trace(go.Scatter(x=frame[x], y=frame[y], mode="lines", name=y, line=dict(color=PALETTE[i])))
    if marker_x is not None:
        fig.add_vline(x=marker_x, line_dash="dash", line_color="#9E2A2B", annotation_text=f"threshold {marker_x:.2f}")
    fig.update_xaxes(title=x)
    return _layout(fig, title=title)


def training_curves(loss_curve: list, valid_curve: list) -> go.Figure:
    """Return the live training figure: loss per step (left axis) and validation NDCG@10 per epoch (right)."""
    fig = go.Figure()
    if loss_curve:
        lx, ly = zip(*loss_curve)
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", name="training loss", line=dict(color=PALETTE[0])))
    if valid_curve:
        vx, vy = zip(*valid_curve)
        fig.add_trace(go.Scatter(x=vx, y=vy, mode="lines+markers", name="validation NDCG@10",
                                 yaxis="y2", line=dict(color=PALETTE[1])))
    fig.update_layout(
        xaxis=dict(title="epoch"), yaxis=dict(title="loss"),
        yaxis2=dict(title="NDCG@10", overlaying="y", side="right", rangemode="tozero"),
        legend=dict(orientation="h", y=1.12),
    )
    return _layout(fig, height=320)


def embedding_map(
    xy: np.ndarray,
    categories: np.ndarray,
    titles: np.ndarray,
    popularity: np.ndarray,
    *,
    users_xy: np.ndarray | None = None,
    user_labels: np.ndarray | None = None,
    history_idx: np.ndarray | None = None,
    rec_idx: np.ndarray | None = None,
    user_xy: np.ndarray | None = None,
    title: str = "",
) -> go.Figure:
    """Return the item map (scattergl, one trace per category so the legend toggles islands).

    Point size grows with log popularity; hover shows title, category and popularity. Optionally a
    users layer, and one user's history (circles) and recommendations (stars) with arrows from the
    last history items to each recommendation.
    """
    cats = plain(categories)
    titles = plain(titles)
    pop = np.asarray(popularity, dtype=float)
    size = 4 + 10 * np.log1p(pop) / max(np.log1p(pop).max(), 1e-9)
    fig = go.Figure()
    order = pd.Series(cats).value_counts().index
    for i, cat in enumerate(order):
        m = np.flatnonzero(cats == cat)
        fig.add_trace(
            go.Scattergl(
                x=xy[m, 0], y=xy[m, 1], mode="markers", name=str(cat)[:40],
                marker=dict(size=size[m], color=PALETTE[i % len(PALETTE)], opacity=0.75, line=dict(width=0)),
                customdata=np.stack([m, titles[m], cats[m], pop[m]], axis=1),
                hovertemplate="%{customdata[1]}<br>%{customdata[2]}<br>popularity %{customdata[3]}<extra></extra>",
            )
        )
    if users_xy is not None and len(users_xy):
        fig.add_trace(
            go.Scattergl(
                x=users_xy[:, 0], y=users_xy[:, 1], mode="markers", name="users",
                marker=dict(size=4, color="rgba(40,40,40,0.35)", symbol="diamond"),
                text=plain(user_labels) if user_labels is not None else None,
                hovertemplate="user %{text}<extra></extra>",
            )
        )
    if history_idx is not None and len(history_idx):
        h = np.asarray(history_idx)
        fig.add_trace(go.Scatter(
            x=xy[h, 0], y=xy[h, 1], mode="markers+lines", name="history",
            marker=dict(size=12, color="rgba(0,0,0,0)", line=dict(width=2.5, color="#1F2A2E")),
            line=dict(width=1, color="#1F2A2E", dash="dot"), text=titles[h],
            hovertemplate="history: %{text}<extra></extra>",
        ))
    if rec_idx is not None and len(rec_idx):
        r = np.asarray(rec_idx)
        fig.add_trace(go.Scatter(
            x=xy[r, 0], y=xy[r, 1], mode="markers", name="recommended",
            marker=dict(size=16, symbol="star", color="#E09F3E", line=dict(width=1, color="#1F2A2E")),
            text=titles[r], hovertemplate="recommended: %{text}<extra></extra>",
        ))
        # arrows start at the user's position when known, else at the last history item
        if user_xy is not None:
            start = np.asarray(user_xy, dtype=float).reshape(2)
        elif history_idx is not None and len(history_idx):
            start = xy[np.asarray(history_idx)[-1]]
        else:
            start = None
        if start is not None:
            for j in r:
                fig.add_annotation(
                    x=float(xy[j, 0]), y=float(xy[j, 1]), ax=float(start[0]), ay=float(start[1]),
                    xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=3,
                    arrowsize=1.2, arrowwidth=1.5, arrowcolor="#9E2A2B", opacity=0.8, text="",
                )
    if user_xy is not None:
        u = np.asarray(user_xy, dtype=float).reshape(2)
        fig.add_trace(go.Scatter(
            x=[u[0]], y=[u[1]], mode="markers", name="this user",
            marker=dict(size=18, symbol="diamond", color="#9E2A2B", line=dict(width=1, color="white")),
            hovertemplate="this user<extra></extra>",
        ))
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False)
    return _layout(fig, height=620, title=title, dragmode="lasso", legend=dict(itemsizing="constant"))


def history_timeline(frame: pd.DataFrame) -> go.Figure:
    """Return a timeline of one user's history: x = position (or time), y = category, colour = event."""
    fig = px.scatter(
        frame.assign(category=plain(frame["category"]), title=plain(frame["title"])),
        x="when", y="category", color="event", hover_data={"title": True, "when": True, "category": False},
        color_discrete_sequence=PALETTE,
    )
    fig.update_traces(marker=dict(size=11))
    fig.update_yaxes(type="category", title=None)
    return _layout(fig, height=max(220, 40 * frame["category"].nunique() + 120))


def map_trace_members(categories: np.ndarray) -> list[np.ndarray]:
    """Return, per category trace of ``embedding_map`` (same order), the item_idx of its points."""
    cats = plain(categories)
    return [np.flatnonzero(cats == c) for c in pd.Series(cats).value_counts().index]


def selected_items(points: list, members: list[np.ndarray]) -> list[int]:
    """Return the item_idx of selected map points (category traces only; users/history/recs are skipped)."""
    out = []
    for p in points:
        curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and idx is not None and 0 <= int(curve) < len(members):
            out.append(int(members[int(curve)][int(idx)]))
    return sorted(set(out))
