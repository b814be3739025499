"""Home: what crossrec does, the workspace at a glance, and the two ways to start."""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import pandas as pd
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.training.bootstrap import DEMO_DATASET, ensure_demo_dataset
from pages import through_app
from pages.caches import dataset_names, model_datasets, model_for_dataset, model_infos
from pages.model_card import show_model_card
from pages.state import PAGE_DATA, PAGE_MAP, PAGE_RECS, PAGE_TRAIN, show_error

through_app()
st.title("crossrec studio")
st.markdown(
    "crossrec learns from your shop's interaction log (views, carts, purchases) which products people "
    "go on to buy **in other categories**. It trains a sequence model on the log, draws the catalogue as a "
    "map of category islands, and previews for every shopper what to recommend next, with a reason. "
    "Everything runs on this machine; nothing is uploaded anywhere."
)

col_a, col_b = st.columns(2)
with col_a:
    if st.button("Load the demo store", icon=":material/storefront:", key="home_demo", type="primary",
                 help="A simulated shop: 5,000 shoppers, 2,000 products in 12 categories, planted cross-category journeys."):
        try:
            with st.spinner("Building the demo store..."):
                ensure_demo_dataset()
        except CrossrecError as err:
            show_error(err)
        st.session_state.dataset_name = DEMO_DATASET
        st.session_state.model_name = model_for_dataset(DEMO_DATASET, model_datasets()) or st.session_state.model_name
        st.session_state._home_flash = "Demo store loaded and selected."
        st.rerun()  # redraw the sidebar with the new dataset
    if st.session_state.pop("_home_flash", None):
        st.success("Demo store loaded and selected.", icon=":material/check_circle:")
        st.page_link(PAGE_TRAIN, label="Train a model on it", icon=":material/model_training:")
with col_b:
    st.page_link(PAGE_DATA, label="Upload your own log", icon=":material/upload_file:")

st.subheader("Workspace")
try:
    datasets, models = dataset_names(), model_infos()
except CrossrecError as err:
    show_error(err)
c1, c2 = st.columns(2)
c1.metric("Datasets", len(datasets))
c2.metric("Models", len(models))
if datasets:
    st.dataframe(pd.DataFrame({"dataset": datasets}), hide_index=True, key="home_datasets")
if models:
    lineage = model_datasets()
    rows = [{"model": m.name, "trained on": ", ".join(lineage.get(m.name, ())) or "another log", "encoder": m.encoder,
             "items": m.n_items, "best epoch": m.best_epoch, "valid NDCG@10": m.valid_ndcg10} for m in models]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="home_models",
                 column_config={"valid NDCG@10": st.column_config.NumberColumn(format="%.3f")})
    show_model_card(st.session_state.get("model_name"), "home_card_load")
    st.page_link(PAGE_MAP, label="Open the embedding map", icon=":material/scatter_plot:")
    st.page_link(PAGE_RECS, label="Preview recommendations", icon=":material/recommend:")
