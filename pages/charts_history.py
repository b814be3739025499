"""The shopper's history as a figure (Recommendations): a timeline in time, or in order when times cannot space it.

Titles and categories go through ``charts.plain`` (plotly renders a small HTML subset in labels).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from pages.charts import PALETTE, layout, plain


def timeline_by_time(when: pd.Series) -> bool:
    """Return True when a history's times can space its dots: datetimes, at least two events, and at least
    4 in 5 events with a time of their own (a one-day log's events all share one time: drawn in order)."""
    return (pd.api.types.is_datetime64_any_dtype(when) and len(when) >= 2
            and when.nunique() >= max(2, 0.8 * len(when)))


def history_timeline(frame: pd.DataFrame) -> go.Figure:
    """Return a timeline of one user's history: x = time (or the event's place in the history when times
    cannot space the dots, see ``timeline_by_time``), y = category, colour = event; the title on hover."""
    by_time = timeline_by_time(frame["when"])
    f = frame.assign(category=plain(frame["category"]), title=plain(frame["title"]), step=np.arange(1, len(frame) + 1),
                     when=frame["when"] if by_time else frame["when"].astype(str))
    fig = px.scatter(
        f, x="when" if by_time else "step", y="category", color="event",
        hover_data={"title": True, "when": True, "step": True, "category": False},
        labels={"step": "event", "when": "when"}, color_discrete_sequence=PALETTE,
    )
    fig.update_traces(marker=dict(size=11))
    fig.update_yaxes(type="category", title=None)
    if not by_time:  # whole steps, oldest first; never fractions of a step
        fig.update_xaxes(title="event, oldest first", tickformat="d", dtick=1 if len(f) <= 25 else None,
                         range=[0.5, len(f) + 0.5])
    return layout(fig, height=max(220, 40 * frame["category"].nunique() + 120))
