"""Embedding map: the catalogue as category islands, users on top, one shopper's path drawn with arrows."""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import numpy as np
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.serving.shoppers import history_vector, items_table
from pages import charts_map
from pages.active import require_pair, user_options
from pages.caches import get_recommender
from pages.caches_data import get_projection, get_user_vectors, umap_ready
from pages.state import current_history, forget_whatif, mirror, persist, recommend_options, set_widget, show_error


def pick_user() -> None:
    picked = st.session_state["_map_user_w"]
    st.session_state.rec_user = None if picked == "(nobody)" else picked
    forget_whatif()


st.title("Embedding map")
ds_name, ds, model_name, model = require_pair()

c1, c2, c3 = st.columns([1, 1, 2])
mirror(("_map_method_w", "map_method"))
method = c1.radio("Layout", ["PCA", "UMAP"], key="_map_method_w", horizontal=True,
                  on_change=persist, args=("_map_method_w", "map_method"),
                  help="PCA is instant. UMAP separates islands better; it is computed once per model and kept.")
show_users = c2.toggle("Show shoppers", key="map_users", help="Places a sample of shoppers on the map.")
colour = c2.radio("Colour by", ["category", "strongest part"], key="map_colour", horizontal=True,
                  help="Strongest part: what places each product, the part of the item encoder with the largest "
                       "share of its vector (its ID, learned from what shoppers did, its category, title text, ...).")
groups = None
if colour == "strongest part":
    part_names, shares = model.part_shares()
    groups = np.array([f"mostly {n}" for n in part_names], dtype=object)[shares.argmax(axis=1)] if part_names else None
users = ["(nobody)", *user_options(ds, limit=300)]
set_widget("_map_user_w", st.session_state.rec_user if st.session_state.rec_user in users else "(nobody)")
c3.selectbox("Draw a shopper's path", users, key="_map_user_w", on_change=pick_user,
             help="Their history (circles) and recommendations (stars), with arrows from the shopper.")

notice = st.empty()  # the UMAP notice and its button: cleared once the layout is there
try:
    if method == "UMAP" and not umap_ready(model_name):
        with notice.container():
            st.info("The UMAP layout takes about half a minute the first time after an install and about 10 s in a new session; after that this map opens at once.", icon=":material/info:")
            if not st.button("Compute the UMAP layout", icon=":material/scatter_plot:", key="map_umap"):
                st.stop()
    proj = get_projection(model_name, "umap" if method == "UMAP" else "pca")
    notice.empty()
    users_xy = labels = None
    if show_users:
        u_idx, u_vecs = get_user_vectors(model_name, ds_name)
        users_xy, labels = proj.place(u_vecs), ds.user_ids[u_idx]
    hist_idx = rec_idx = user_xy = None
    if st.session_state.rec_user is not None:
        history = current_history(ds, st.session_state.rec_user)
        recs = get_recommender(model_name, ds_name).recommend(history, **recommend_options())
        hist_idx = model.item_index(np.asarray(recs.history_item_ids, dtype=object))
        rec_idx = np.array([r.item_idx for r in recs.items], dtype=np.int64)
        user_xy = proj.place(history_vector(model, history)[None, :])[0]  # from what the recommender reads
except CrossrecError as err:
    show_error(err)

fig = charts_map.embedding_map(
    proj.items_xy, model.category_names[model.item_category], model.item_titles, model.popularity,
    users_xy=users_xy, user_labels=labels, history_idx=hist_idx, rec_idx=rec_idx, user_xy=user_xy,
    title=f"{model.n_items:,} items of {model_name} ({method})", groups=groups)
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key="map_chart")
try:
    points = event["selection"]["points"]
except (KeyError, TypeError):
    points = []
if points:  # a lasso / box selection replaces the stored one; tests set map_selection directly
    members = charts_map.map_trace_members(model.category_names[model.item_category] if groups is None else groups)
    st.session_state.map_selection = charts_map.selected_items(points, members)
selected = items_table(model, st.session_state.map_selection)
st.caption("Drag a lasso or a box over the map to list the items inside.")
if len(selected):
    st.dataframe(selected, hide_index=True, key="map_selected_table")
