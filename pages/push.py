"""Push a category: the shoppers most likely to buy in it next and the items that would bring them."""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.serving.category_push import audience_csv, category_audience
from pages import charts_push
from pages.active import require_pair
from pages.caches import get_recommender
from pages.state import show_error

st.title("Push a category")
st.caption("Who should see a category next, and with which products: every shopper's list restricted to one "
           "category, ranked by the chance that their next product is one of those shown.")
ds_name, ds, model_name, model = require_pair()
state = st.session_state
with st.form("push_form", border=False):
    c1, c2, c3 = st.columns([2, 1, 1])
    category = c1.selectbox("Category to push", sorted(map(str, model.category_names)), key="push_category")
    k_items = c2.number_input("Products per shopper", 1, 20, 5, key="push_k",
                              help="Each shopper's best products of this category; their chance is summed over them.")
    new_only = c3.toggle("Only shoppers new to it", key="push_new_only",
                         help="Cross-selling: keep shoppers who never had a product of this category.")
    go = st.form_submit_button("Find the audience", icon=":material/campaign:", type="primary")
key = (model_name, ds_name, category, int(k_items), bool(new_only))
if go:
    bar = st.progress(0.0, text="Scoring every shopper...")
    try:
        state["_push"] = (key, category_audience(
            model, ds, category, k_items=int(k_items), new_to_category_only=bool(new_only),
            recommender=get_recommender(model_name, ds_name),
            on_batch=lambda done, total: bar.progress(done / max(total, 1), text=f"{done:,} / {total:,} shoppers")))
    except CrossrecError as err:
        show_error(err)
    bar.empty()
if not state.get("_push") or state["_push"][0] != key:
    st.info("Pick a category and press **Find the audience**.", icon=":material/campaign:")
    st.stop()
aud = state["_push"][1]
m1, m2, m3 = st.columns(3)
m1.metric("Shoppers scored", f"{aud.n_shoppers_scored:,}")
m2.metric("Expected to take one of these products next", f"{aud.expected_shoppers:,.1f}")
m3.metric("Best shopper's chance", f"{aud.shoppers['chance'].max() if len(aud.shoppers) else 0:.1%}")
left, right = st.columns(2)
with left:
    st.subheader("Shoppers to target")
    st.dataframe(aud.shoppers.head(500), hide_index=True, key="push_shoppers", column_config={
        "chance": st.column_config.ProgressColumn("chance", min_value=0.0, max_value=float(max(aud.shoppers["chance"].max(), 1e-9)),
                                                  format="%.3f", help="Chance that the shopper's next product is one of those shown."),
        "new_to_category": st.column_config.CheckboxColumn("new to it", help="Never had a product of this category."),
        "user_id": st.column_config.TextColumn("shopper", width="small"),  # long hashed ids must not hide the chance
        "titles": st.column_config.TextColumn("products", width="large")}, column_order=["user_id", "chance", "new_to_category", "titles"])
    st.download_button("Download the shoppers (CSV)", audience_csv(aud.shoppers), f"push-{aud.category}-shoppers.csv"[:80],
                       "text/csv", key="push_dl_shoppers", icon=":material/download:")
with right:
    st.subheader("Products that would bring them")
    st.plotly_chart(charts_push.expected_shoppers_bar(aud.items), key="push_items_chart")
    st.download_button("Download the products (CSV)", audience_csv(aud.items), f"push-{aud.category}-products.csv"[:80],
                       "text/csv", key="push_dl_items", icon=":material/download:")
