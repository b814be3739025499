"""The Push a category page's figure (presentation only: no model math, no streamlit)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pages.charts import PALETTE, layout, plain


def expected_shoppers_bar(items: pd.DataFrame, top: int = 15) -> go.Figure:
    """Return a horizontal bar per product (best at the top): shoppers expected to take it next
    (category_push.ITEM_COLUMNS rows). Labels are the titles, cut to 40 characters, with the id added
    where two shown titles would read the same."""
    rows = items.head(top).iloc[::-1]
    titles = pd.Series(plain(rows["title"].astype(str).str.slice(0, 40)), index=rows.index)
    clash = titles.duplicated(keep=False)
    labels = titles.where(~clash, titles + " (" + pd.Series(plain(rows["item_id"]), index=rows.index) + ")")
    fig = go.Figure(go.Bar(x=rows["expected_shoppers"], y=labels, orientation="h", marker_color=PALETTE[0],
                           customdata=plain(rows["item_id"]),
                           hovertemplate="%{y} (%{customdata})<br>%{x:.1f} shoppers expected<extra></extra>"))
    fig.update_yaxes(type="category")
    fig.update_xaxes(title="shoppers expected to take it next")
    layout(fig, height=max(300, 26 * len(rows) + 80))
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
    return fig
