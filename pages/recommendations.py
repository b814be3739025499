"""Recommendations: pick a shopper, see the history and the top-K with reasons, tune, what-if, export."""

import numpy as np
import pandas as pd
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.safe_text import neutralise_frame
from pages import charts
from pages.common import (
    current_history, get_recommender, item_labels, md_escape, persist, recommend_options, require_pair, show_error,
)
from pages.shopper import shopper_picker

st.title("Recommendations")
ds_name, ds, model_name, model = require_pair()
state = st.session_state


def mirror(*pairs: tuple[str, str]) -> None:
    """Set each widget key from its persistent session key before the widget is drawn."""
    for widget, key in pairs:
        state[widget] = state[key]


if state.get("_threshold_of") != model_name:  # a model's saved threshold is the default of its list
    state["_threshold_of"], state["threshold"] = model_name, float(model.threshold or 0.0)
shopper_picker(ds)
mirror(("_k_w", "k"), ("_threshold_w", "threshold"), ("_diversity_w", "diversity"), ("_cross_w", "cross_only"),
       ("_excluded_w", "excluded_categories"), ("_whatif_add_w", "whatif_add"), ("_whatif_remove_w", "whatif_remove"))
s1, s2, s3 = st.columns(3)
s1.slider("How many products (K)", 1, 50, key="_k_w", on_change=persist, args=("_k_w", "k"))
s2.slider("Only show products at least this likely", 0.0, 1.0, step=0.001, format="%.3f", key="_threshold_w", on_change=persist,
          args=("_threshold_w", "threshold"),
          help="The chance that the product is this shopper's next one (calibrated: 0.05 comes true about 1 time in 20). "
               "Higher = fewer, surer recommendations. Shared with Evaluation.")
s3.slider("Variety", 0.0, 1.0, step=0.05, key="_diversity_w", on_change=persist, args=("_diversity_w", "diversity"),
          help="0 = most likely first; higher = more different products from each other.")
t1, t2 = st.columns([1, 2])
t1.toggle("Only categories new to this shopper", key="_cross_w", on_change=persist, args=("_cross_w", "cross_only"))
t2.multiselect("Never recommend from", list(map(str, model.category_names)), key="_excluded_w", on_change=persist,
               args=("_excluded_w", "excluded_categories"))

u = int(ds.user_index([state.rec_user])[0])
items, times, events = ds.history(u)
hist = pd.DataFrame({"when": times if ds.has_timestamps else np.arange(len(items)), "item_id": ds.item_ids[items],
                     "title": ds.item_titles[items], "category": ds.category_names[ds.item_category[items]],
                     "event": ds.event_names[events]})
if ds.has_timestamps:
    hist["when"] = pd.to_datetime(hist["when"], unit="s")
st.subheader("History")
st.pills("Categories in this history", sorted(hist["category"].unique()), key="rec_chips", disabled=True,
         format_func=md_escape)
st.plotly_chart(charts.history_timeline(hist), key="rec_timeline")

with st.expander("What if... (edit the history)", icon=":material/edit:", expanded=bool(state.whatif_add or state.whatif_remove)):
    top = np.argsort(-model.popularity, kind="stable")[:3000]
    keep = np.union1d(top, model.item_index(np.asarray(state.whatif_add, dtype=object)))
    keep = keep[keep >= 0]
    label = dict(zip(model.item_ids[keep], item_labels(model.item_titles[keep], model.item_ids[keep],
                                                        model.category_names[model.item_category[keep]])))
    st.multiselect("Add products (newest last)", list(label), key="_whatif_add_w", format_func=label.get,
                   on_change=persist, args=("_whatif_add_w", "whatif_add"))
    own = dict(zip(hist["item_id"], item_labels(hist["title"], hist["item_id"], hist["category"])))
    st.multiselect("Remove products", list(own), key="_whatif_remove_w", format_func=own.get,
                   on_change=persist, args=("_whatif_remove_w", "whatif_remove"))

try:
    recs = get_recommender(model_name, ds_name).recommend(current_history(ds, state.rec_user), **recommend_options())
except CrossrecError as err:
    show_error(err)
st.subheader(f"Top {len(recs)} for shopper {md_escape(state.rec_user)}")
for note in recs.notes:
    st.caption(md_escape(note))
frame = recs.to_frame().drop(columns=["because"])
st.dataframe(frame, hide_index=True, key="rec_table", column_config={
    "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0, format="%.2f"),
    "score": st.column_config.NumberColumn("score", format="%.3f"),
    "explanation": st.column_config.TextColumn("why", width="large"),
})

e1, e2 = st.columns(2)
e1.download_button("Download this list (CSV)", neutralise_frame(frame).to_csv(index=False).encode(),
                   f"recs-{state.rec_user}.csv"[:80], "text/csv", key="rec_dl_one", icon=":material/download:")
with_reasons = e2.toggle("With the reason for each item", key="rec_all_explain",
                         help="Adds an 'explanation' column to the all-shoppers file; slower on big logs.")
if e2.button("Prepare the list for all shoppers", icon=":material/groups:", key="rec_all"):
    bar = st.progress(0.0, text="Recommending for every shopper...")
    opts = recommend_options()
    seqs = model.align(ds)
    batch = get_recommender(model_name, ds_name).recommend_batch(
        seqs, np.arange(ds.n_users), seqs.offsets[1:], opts.pop("k"), **opts, explain=with_reasons,
        on_batch=lambda done, total: bar.progress(done / max(total, 1), text=f"{done:,} / {total:,} shoppers"))
    out = pd.DataFrame({"user_id": ds.user_ids[batch["user_idx"]], "rank": batch["rank"],
                        "item_id": model.item_ids[batch["item_idx"]], "title": model.item_titles[batch["item_idx"]],
                        "category": batch["category"], "probability": batch["probability"], "score": batch["score"]})
    if with_reasons:
        out["explanation"] = batch["explanation"].to_numpy()
    state["_rec_all_csv"] = neutralise_frame(out).to_csv(index=False).encode()
if state.get("_rec_all_csv"):
    e2.download_button("Download all shoppers (CSV)", state["_rec_all_csv"], f"recs-{model_name}.csv", "text/csv",
                       key="rec_dl_all", icon=":material/download:")
