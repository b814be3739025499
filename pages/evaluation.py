"""Evaluation: the model against the baselines, its calibration, thresholds, affinities, journeys, two models."""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import streamlit as st

from crossrec_core.errors import CrossrecError, ModelError
from pages import charts, evaluation_figures as figures
from pages import evaluation_view as view
from pages.active import require_pair
from pages.compare_cache import lead_sentence, reach_sentence
from pages.evaluation_report import metric_table, report_button
from pages.evaluation_cache import EVAL_MAX_USERS, get_affinities, get_evaluation, get_journey_report, get_threshold_curve, scores_key
from pages.model_compare import compare_models
from pages.state import md_escape, mirror, persist, show_error
from pages.threshold_actions import save_threshold_callback, show_saved, use_threshold_callback

st.title("Evaluation")
ds_name, ds, model_name, model = require_pair()
ready_key = f"_eval_ready:{model_name}:{ds_name}"
st.caption(protocol := view.protocol_line(f"up to {EVAL_MAX_USERS:,}", 10))
if not st.session_state.get(ready_key):
    slot = st.empty()  # the button goes once pressed: the results replace it
    if not slot.button("Evaluate", icon=":material/play_arrow:", key="eval_run", type="primary",
                       help=f"Scores the model and the baselines on up to {EVAL_MAX_USERS:,} shoppers: seconds on the demo store, longer on big catalogues."):
        st.stop()
    slot.empty()
    st.session_state[ready_key] = True

try:
    result = get_evaluation(model_name, ds_name)
    curve = get_threshold_curve(model_name, ds_name)
    observed, learned = get_affinities(model_name, ds_name)
    journeys = get_journey_report(model_name, ds_name)
except ModelError as err:  # the leak guard: this model was trained on the targets held out here
    st.warning(str(err).replace("'crossrec'", f"'{model_name}'", 1), icon=":material/warning:")  # evaluated as "crossrec"
    st.caption("Pick a model trained on this dataset, or on an older export of it, in the sidebar.")
    st.stop()
except CrossrecError as err:
    show_error(err)

report_slot = st.empty()  # filled at the end, once the charts exist
for tab, (subset, label) in zip(st.tabs(list(view.SUBSET_LABELS.values())), view.SUBSET_LABELS.items()):
    with tab:
        st.caption(f"{label}: {result.subset_sizes.get(subset, 0):,} shoppers")
        metric_table(result, subset, key=f"eval_table_{subset}")
        if result.subset_sizes.get(subset, 0):
            for line in (lead_sentence(scores_key(model_name, ds_name), subset, result), reach_sentence(result, subset)):
                st.caption(line)

st.subheader("Do the probabilities mean what they say?")
report = result.calibration.get(result.methods[0], {})
left, right = st.columns([3, 2], vertical_alignment="center")
reliability = figures.reliability_figure(report, "Predicted probability vs how often it came true")
left.plotly_chart(reliability, key="eval_reliability")
right.markdown(view.calibration_sentence(report))
right.caption(view.calibration_note(result.k))

st.subheader("Per category (crossrec, all shoppers)")
metric, mine = view.per_category(result)
per_cat = charts.bar(mine, f"{metric} by the hidden product's category", "category", metric)
st.plotly_chart(per_cat, key="eval_per_cat")

st.subheader("Precision, recall and F1 against the probability threshold")
st.caption(f"Saved with {md_escape(model_name)}: threshold {model.threshold:.3g}." if model.threshold is not None
           else f"No threshold saved with {md_escape(model_name)} yet.")
if st.session_state.get("_threshold_of") != model_name:  # as on Recommendations: a saved threshold is the default
    st.session_state["_threshold_of"] = model_name
    st.session_state["threshold"] = st.session_state.threshold if model.threshold is None else model.threshold
mirror(("_eval_threshold_w", "threshold"))
st.slider("Threshold (the same as on Recommendations)", 0.0, 1.0, step=0.001, format="%.3f", key="_eval_threshold_w",
          on_change=persist, args=("_eval_threshold_w", "threshold"))
current = float(st.session_state.threshold)
threshold_fig = figures.threshold_figure(curve.scope("top_k"), current, curve.best_threshold)
st.plotly_chart(threshold_fig, key="eval_threshold_curve")
st.caption(threshold_text := view.threshold_caption(curve, current))
use_col, save_col = st.columns(2)
use_col.button(f"Use the validated threshold ({curve.best_threshold:.3g})", key="eval_use_best",
               icon=":material/rule:", on_click=use_threshold_callback, args=(curve.best_threshold,))
save_col.button("Save this threshold with the model", key="eval_save_threshold", icon=":material/save:",
                on_click=save_threshold_callback, args=(model_name,))
show_saved()

st.subheader("Which category follows which: observed in the log vs learned by the model")
left, right = st.columns(2)
observed_fig, learned_fig = charts.heatmap(observed, "Observed", zmax=1.0), charts.heatmap(learned, "Learned", zmax=1.0)
left.plotly_chart(observed_fig, key="eval_observed")
right.plotly_chart(learned_fig, key="eval_learned")

if journeys is not None:
    st.subheader("Planted journeys recovered (demo store)")
    st.metric("Journey steps recovered", f"{journeys.recovered} of {journeys.total}", help=journeys.summary())
    st.dataframe(journeys.steps, hide_index=True, key="eval_journeys")

journey_line = [f"{journeys.summary()} (demo store)."] if journeys is not None else []
report_button(report_slot, result, model_name, [protocol, *journey_line],
              reliability=reliability, per_category=(metric, per_cat), threshold=(threshold_fig, threshold_text),
              affinity=(observed_fig, learned_fig))

st.subheader("Compare two models")
compare_models(ds_name, model_name)
