"""The Embedding map's figure: category islands, shoppers on top, one shopper's path (presentation only).

Text from the data goes into hover text through ``charts.plain``; hover templates reference customdata, so
no data is parsed as a template. The router never lists this file as a page.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pages.charts import PALETTE, layout, plain


def _path_traces(fig: go.Figure, xy: np.ndarray, titles: np.ndarray, history_idx, rec_idx, user_xy) -> None:
    """Add one user's history (circles), recommendations (stars), arrows to each star and the user's mark."""
    if history_idx is not None and len(history_idx):
        h = np.asarray(history_idx)
        fig.add_trace(go.Scatter(
            x=xy[h, 0], y=xy[h, 1], mode="markers+lines", name="history",
            marker=dict(size=12, color="rgba(0,0,0,0)", line=dict(width=2.5, color="#1F2A2E")),
            line=dict(width=1, color="#1F2A2E", dash="dot"), text=titles[h], hovertemplate="history: %{text}<extra></extra>",
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
        for j in r if start is not None else ():
            fig.add_annotation(
                x=float(xy[j, 0]), y=float(xy[j, 1]), ax=float(start[0]), ay=float(start[1]), xref="x", yref="y",
                axref="x", ayref="y", showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#9E2A2B",
                opacity=0.8, text="",
            )
    if user_xy is not None:
        u = np.asarray(user_xy, dtype=float).reshape(2)
        fig.add_trace(go.Scatter(
            x=[u[0]], y=[u[1]], mode="markers", name="this user", hovertemplate="this user<extra></extra>",
            marker=dict(size=18, symbol="diamond", color="#9E2A2B", line=dict(width=1, color="white")),
        ))


def embedding_map(xy: np.ndarray, categories: np.ndarray, titles: np.ndarray, popularity: np.ndarray, *,
                  users_xy: np.ndarray | None = None, user_labels: np.ndarray | None = None,
                  history_idx: np.ndarray | None = None, rec_idx: np.ndarray | None = None,
                  user_xy: np.ndarray | None = None, title: str = "", groups: np.ndarray | None = None) -> go.Figure:
    """Return the item map (scattergl, one trace per category or ``groups`` value: the legend toggles islands).

    Point size grows with log popularity; hover shows title, category and popularity. Optionally a
    users layer, and one user's history (circles) and recommendations (stars) with arrows from the
    user (else the last history item) to each recommendation.
    """
    groups = categories if groups is None else groups
    cats, titles, names = plain(categories), plain(titles), plain(groups)
    pop = np.asarray(popularity, dtype=float)
    size = 4 + 10 * np.log1p(pop) / max(np.log1p(pop).max(), 1e-9)
    fig = go.Figure()
    for i, m in enumerate(map_trace_members(groups)):
        fig.add_trace(go.Scattergl(
            x=xy[m, 0], y=xy[m, 1], mode="markers", name=str(names[m[0]])[:40],
            marker=dict(size=size[m], color=PALETTE[i % len(PALETTE)], opacity=0.75, line=dict(width=0)),
            customdata=np.stack([m, titles[m], cats[m], pop[m]], axis=1),
            hovertemplate="%{customdata[1]}<br>%{customdata[2]}<br>popularity %{customdata[3]}<extra></extra>",
        ))
    if users_xy is not None and len(users_xy):
        fig.add_trace(go.Scattergl(
            x=users_xy[:, 0], y=users_xy[:, 1], mode="markers", name="users",
            marker=dict(size=4, color="rgba(40,40,40,0.35)", symbol="diamond"),
            text=plain(user_labels) if user_labels is not None else None, hovertemplate="user %{text}<extra></extra>",
        ))
    _path_traces(fig, xy, titles, history_idx, rec_idx, user_xy)
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False)
    return layout(fig, height=620, title=title, dragmode="lasso", legend=dict(itemsizing="constant"))


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
