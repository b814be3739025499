"""Widgets of the Data page: the column mapping of an upload and a dataset's profile.

The router never lists this file as a page.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.data.schema import suggest_mapping
from pages import charts

NONE = "(not in this file)"
CANONICAL = {"user_id": "Shopper id (required)", "item_id": "Product id (required)", "timestamp": "Time of the event",
             "event": "Event type (view / cart / purchase)", "category": "Product category", "title": "Product title"}


def mapping_picker(columns: list[str]) -> dict[str, str]:
    """Draw one selectbox per canonical column, preset to crossrec's guess; return {canonical: file column}."""
    guess = suggest_mapping(columns)
    st.subheader("Column mapping")
    st.caption("crossrec guessed which column is which; change any that are wrong.")
    mapping = {}
    cols = st.columns(3)
    for i, (canon, label) in enumerate(CANONICAL.items()):
        options = [NONE, *columns]
        default = options.index(guess[canon]) if guess.get(canon) in columns else 0
        choice = cols[i % 3].selectbox(label, options, index=default, key=f"map_{canon}")
        if choice != NONE:
            mapping[canon] = choice
    return mapping


def show_profile(profile) -> None:
    """Show a DatasetProfile: sizes, category distribution, events per user, transition heatmap."""
    c = st.columns(4)
    c[0].metric("Users", f"{profile.n_users:,}")
    c[1].metric("Items", f"{profile.n_items:,}")
    c[2].metric("Categories", f"{profile.n_categories:,}")
    c[3].metric("Events", f"{profile.n_events:,}")
    st.caption(f"{profile.cross_category_user_share:.0%} of shoppers span two or more categories; "
               f"{profile.cross_category_transition_share:.0%} of consecutive events change category.")
    left, right = st.columns(2)
    left.plotly_chart(charts.bar(profile.category_counts, "Events per category", "category", "events"), key="data_cat_chart")
    right.plotly_chart(charts.histogram(profile.user_lengths, "Events per shopper", "events"), key="data_len_chart")
    st.plotly_chart(charts.heatmap(profile.transitions, "Which category comes next (counts)"), key="data_heatmap")
