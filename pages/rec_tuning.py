"""The tuning half of Recommendations: the sliders, filters, what-if editor and the list, as one fragment.

Moving K, the threshold or variety, toggling a filter or editing the what-if history reruns only this
fragment (``st.fragment``): the shopper picker, the history table and its timeline are not redrawn. The
shopper's encoded history is kept by the Recommender per history (serving/recommender.py), so a knob
that leaves the history alone re-ranks without encoding it again. The router never lists this file.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.serving.export import recommend_for_log, to_csv_bytes
from crossrec_core.serving.shoppers import item_labels
from pages.caches import get_dataset, get_model, get_recommender
from pages.caches_data import get_whatif_labels
from pages.state import current_history, md_escape, mirror, persist, recommend_options, show_error


def _controls(model) -> None:
    mirror(("_k_w", "k"), ("_threshold_w", "threshold"), ("_diversity_w", "diversity"), ("_cross_w", "cross_only"),
           ("_excluded_w", "excluded_categories"), ("_whatif_add_w", "whatif_add"), ("_whatif_remove_w", "whatif_remove"))
    s1, s2, s3 = st.columns(3)
    s1.slider("How many products (K)", 1, 50, key="_k_w", on_change=persist, args=("_k_w", "k"))
    s2.slider("Only show products at least this likely", 0.0, 1.0, step=0.001, format="%.3f", key="_threshold_w",
              on_change=persist, args=("_threshold_w", "threshold"),
              help="The chance that the product is this shopper's next one (calibrated: 0.05 comes true about 1 time "
                   "in 20). Higher = fewer, surer recommendations. Shared with Evaluation.")
    s3.slider("Variety", 0.0, 1.0, step=0.05, key="_diversity_w", on_change=persist, args=("_diversity_w", "diversity"),
              help="0 = most likely first; higher = more different products from each other.")
    t1, t2 = st.columns([1, 2])
    t1.toggle("Only categories new to this shopper", key="_cross_w", on_change=persist, args=("_cross_w", "cross_only"))
    t2.multiselect("Never recommend from", list(map(str, model.category_names)), key="_excluded_w", on_change=persist,
                   args=("_excluded_w", "excluded_categories"))


def _whatif(model_name: str, hist: pd.DataFrame) -> None:
    state = st.session_state
    with st.expander("What if... (edit the history)", icon=":material/edit:",
                     expanded=bool(state.whatif_add or state.whatif_remove)):
        label = get_whatif_labels(model_name, state.whatif_add)
        # no "Select N matches": one click on it added every product a search matched (388 on hm) to the history
        st.multiselect("Add products (newest last)", list(label), key="_whatif_add_w", format_func=label.get,
                       on_change=persist, args=("_whatif_add_w", "whatif_add"), select_all=False,
                       help="Each one counts as the history's strongest kind of event (a purchase if there is one).")
        own = dict(zip(hist["item_id"], item_labels(hist["title"], hist["item_id"], hist["category"])))
        st.multiselect("Remove products", list(own), key="_whatif_remove_w", format_func=own.get,
                       on_change=persist, args=("_whatif_remove_w", "whatif_remove"))


@st.fragment
def tuning(ds_name: str, model_name: str, hist: pd.DataFrame) -> None:
    """Draw the controls, the what-if editor, the list and its downloads (reruns on its own)."""
    state = st.session_state
    ds, model = get_dataset(ds_name), get_model(model_name)
    _controls(model)
    _whatif(model_name, hist)
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
    with st.expander("Why each product, in full", icon=":material/info:"):  # the table's column cuts long reasons
        st.markdown("\n".join(f"{r.rank}. **{md_escape(r.title)}** ({md_escape(r.category)}): "
                               f"{md_escape(r.explanation.sentence)}" for r in recs) or "Nothing to explain: the list is empty.")
    _downloads(ds, model, ds_name, model_name, frame)


def _downloads(ds, model, ds_name: str, model_name: str, frame: pd.DataFrame) -> None:
    state = st.session_state
    e1, e2 = st.columns(2)
    e1.download_button("Download this list (CSV)", to_csv_bytes(frame), f"recs-{state.rec_user}.csv"[:80], "text/csv",
                       key="rec_dl_one", icon=":material/download:")
    with_reasons = e2.toggle("With the reason for each item", key="rec_all_explain",
                             help="Adds an 'explanation' column to the all-shoppers file; slower on big logs.")
    if e2.button("Prepare the list for all shoppers", icon=":material/groups:", key="rec_all"):
        bar = st.progress(0.0, text="Recommending for every shopper...")
        try:
            out = recommend_for_log(
                model, ds, **recommend_options(), detailed=True, explain=with_reasons,
                recommender=get_recommender(model_name, ds_name),
                on_batch=lambda done, total: bar.progress(done / max(total, 1), text=f"{done:,} / {total:,} shoppers"))
        except CrossrecError as err:
            show_error(err)
        state["_rec_all_csv"] = to_csv_bytes(out)
    if state.get("_rec_all_csv"):
        e2.download_button("Download all shoppers (CSV)", state["_rec_all_csv"], f"recs-{model_name}.csv", "text/csv",
                           key="rec_dl_all", icon=":material/download:")
