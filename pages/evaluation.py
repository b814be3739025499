"""Evaluation: the model against the baselines, thresholds, category affinities, planted journeys."""

import streamlit as st

from crossrec_core.errors import CrossrecError
from pages import charts
from pages.common import (
    dataset_key, get_affinities, get_evaluation, get_journey_report, get_threshold_curve, md_escape, model_key,
    persist, require_pair, show_error,
)

@st.cache_data(show_spinner=False, max_entries=32)
def lead_sentence(model_key: tuple, ds_key: tuple, subset: str, _result) -> str:
    """Return one sentence: the model's NDCG@10 lead over the best other method, with its 95% interval.

    Cached per (model, dataset, subset) with the same stamped keys as the evaluation itself, so a
    retrained model never shows a stale sentence; the bootstrap would otherwise rerun on every slider move."""
    result = _result
    metric = f"NDCG@{result.k}"
    mine = result.methods[0]
    others = [m for m in result.methods[1:] if m in result.per_user]
    if not others or mine not in result.per_user:
        return ""
    best = max(others, key=lambda m: result.value(m, subset, metric))
    d = result.difference(mine, best, subset, metric)
    verdict = ("a real difference" if d.significant else
               "within noise: these shoppers cannot tell the two apart, more are needed")
    return (f"{md_escape(mine)} vs the best other method ({md_escape(best)}): {metric} {d.mean:+.3f}, 95% interval "
            f"{d.low:+.3f} to {d.high:+.3f} (paired bootstrap over shoppers): {verdict}.")


SUBSETS = {"all": "All shoppers", "switch": "Next product in another category", "novel": "Next product in a category new to them"}

st.title("Evaluation")
ds_name, ds, model_name, model = require_pair()
ready_key = f"_eval_ready:{model_name}:{ds_name}"
st.caption("Leave-last-out: each shopper's last event is hidden and every method ranks the whole catalogue; "
           "products the shopper already had are never counted. Up to 3,000 shoppers are sampled.")
if not st.session_state.get(ready_key):
    slot = st.empty()  # the button goes once pressed: the results replace it
    if not slot.button("Evaluate (about a minute)", icon=":material/play_arrow:", key="eval_run", type="primary"):
        st.stop()
    slot.empty()
    st.session_state[ready_key] = True

try:
    result = get_evaluation(model_name, ds_name)
    curve = get_threshold_curve(model_name, ds_name)
    observed, learned = get_affinities(model_name, ds_name)
    journeys = get_journey_report(model_name, ds_name)
except CrossrecError as err:
    show_error(err)

for tab, (subset, label) in zip(st.tabs(list(SUBSETS.values())), SUBSETS.items()):
    with tab:
        st.caption(f"{label}: {result.subset_sizes.get(subset, 0):,} shoppers")
        st.dataframe(result.table(subset).style.format("{:.3f}", na_rep="-"), key=f"eval_table_{subset}")
        if result.subset_sizes.get(subset, 0):
            st.caption(lead_sentence(model_key(model_name), dataset_key(ds_name), subset, result))

st.subheader("Per category (crossrec, all shoppers)")
per_cat = result.per_category
metric = "NDCG@10" if "NDCG@10" in set(per_cat["metric"]) else per_cat["metric"].iloc[0]
mine = per_cat[(per_cat["method"] == result.methods[0]) & (per_cat["metric"] == metric)].set_index("category")["value"]
st.plotly_chart(charts.bar(mine, f"{metric} by the hidden product's category", "category", metric), key="eval_per_cat")

st.subheader("Precision, recall and F1 against the probability threshold")
st.session_state["_eval_threshold_w"] = st.session_state.threshold
st.slider("Threshold (the same as on Recommendations)", 0.0, 1.0, step=0.01, key="_eval_threshold_w",
          on_change=persist, args=("_eval_threshold_w", "threshold"))
frame = curve.curve[curve.curve["scope"] == "top_k"] if "scope" in curve.curve else curve.curve
st.plotly_chart(charts.curves(frame, "threshold", [c for c in ("precision", "recall", "f1") if c in frame],
                              "", marker_x=float(st.session_state.threshold)), key="eval_threshold_curve")
st.caption(f"Within the top {curve.k}: best F1 {curve.best_f1:.3f} at threshold {curve.best_threshold:.2f}; "
           f"AUC {curve.auc:.3f} over {curve.n_users:,} shoppers.")

st.subheader("Which category follows which: observed in the log vs learned by the model")
left, right = st.columns(2)
left.plotly_chart(charts.heatmap(observed, "Observed", zmax=1.0), key="eval_observed")
right.plotly_chart(charts.heatmap(learned, "Learned", zmax=1.0), key="eval_learned")

if journeys is not None:
    st.subheader("Planted journeys recovered (demo store)")
    st.metric("Journey steps recovered", f"{journeys.recovered} of {journeys.total}", help=journeys.summary())
    st.dataframe(journeys.steps, hide_index=True, key="eval_journeys")
