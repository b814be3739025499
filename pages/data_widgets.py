"""Widgets of the Data page: the column mapping of an upload, item vectors and a dataset's profile.

The router never lists this file as a page.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.data.item_vectors import attach_item_vectors, read_item_vectors
from crossrec_core.data.schema import suggest_mapping
from crossrec_core.errors import CrossrecError
from pages import charts
from pages.state import md_escape, show_error

NONE = "(not in this file)"
CANONICAL = {"user_id": "Shopper id (required)", "item_id": "Product id (required)", "timestamp": "Time of the event",
             "event": "Event type (view / cart / purchase)", "category": "Product category", "title": "Product title"}
ITEM_CANONICAL = {"item_id": "Product id (required)", "category": "Product category", "title": "Product title"}


def mapping_picker(columns: list[str], table: str = "interactions") -> dict[str, str]:
    """Draw one selectbox per canonical column of ``table`` ("interactions": the log, "items": the items table),
    preset to crossrec's guess; return {canonical: file column}."""
    guess = suggest_mapping(columns, table=table)
    log = table == "interactions"
    wanted = CANONICAL if log else ITEM_CANONICAL
    st.subheader("Column mapping" if log else "Items table mapping")
    st.caption("crossrec guessed which column is which; change any that are wrong." if log else
               "Which column of the items table is the product id, the category and the title. Any column can be the "
               "category: pick the level to recommend across (e.g. index_group_name, product_type_name).")
    mapping = {}
    cols = st.columns(3)
    for i, (canon, label) in enumerate(wanted.items()):
        options = [NONE, *columns]
        default = options.index(guess[canon]) if guess.get(canon) in columns else 0
        choice = cols[i % 3].selectbox(label, options, index=default, key=f"{'map' if log else 'map_items'}_{canon}")
        if choice != NONE:
            mapping[canon] = choice
    return mapping


VECTOR_TYPES = ["csv", "parquet", "gz"]
VECTOR_HELP = ("item_id plus one vector per item: columns vec_0, vec_1, ... or one list column. For example image "
               "embeddings computed with CLIP elsewhere (README, \"Item vectors\"). Training fuses them into every item's "
               "vector, so items nobody has bought yet are carried by them too.")


@st.cache_data(show_spinner="Reading the item vectors...", max_entries=4)
def _vectors(raw: bytes, name: str, file_id: str):
    return read_item_vectors(raw, name)


def with_vectors(ds, upload):
    """Return ``ds`` carrying the uploaded item vectors (``ds`` itself when none); a plain error stops the page."""
    if upload is None:
        return ds
    try:
        ids, vecs = _vectors(upload.getvalue(), upload.name, upload.file_id)
        out = attach_item_vectors(ds, ids, vecs, label=f"'{upload.name}'")
    except CrossrecError as err:
        show_error(err)
    st.success(f"Item vectors: {vecs.shape[1]} values for each of the {ds.n_items:,} items, from {md_escape(upload.name)}. "
               "Models trained on this dataset use them.", icon=":material/view_in_ar:")
    return out


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
