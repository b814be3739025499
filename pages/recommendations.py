"""Recommendations: pick a shopper, see the history and the top-K with reasons, tune, what-if, export.

The shopper and the history are drawn on a full run; the controls and the list are a fragment
(pages/rec_tuning.py) that reruns alone when a knob moves or the what-if history is edited.
"""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import streamlit as st

from crossrec_core.serving.shoppers import history_table
from pages import charts_history
from pages.active import require_pair
from pages.rec_tuning import tuning
from pages.shopper import shopper_picker
from pages.state import md_escape

st.title("Recommendations")
ds_name, ds, model_name, model = require_pair()
state = st.session_state

if state.get("_threshold_of") != model_name:  # a model's saved threshold is the default of its list
    state["_threshold_of"], state["threshold"] = model_name, float(model.threshold or 0.0)
shopper_picker(ds)

hist = history_table(ds, state.rec_user)
st.subheader("History")
st.pills("Categories in this history", sorted(hist["category"].unique()), key="rec_chips", disabled=True,
         format_func=md_escape)
listed, timeline = st.tabs([f":material/list: Products ({len(hist)})", ":material/timeline: Timeline"])
listed.dataframe(hist.iloc[::-1][["when", "title", "category", "event", "item_id"]], hide_index=True, key="rec_history",
                 height=min(36 + 35 * len(hist), 246), column_config={"title": st.column_config.TextColumn(width="large")})
timeline.plotly_chart(charts_history.history_timeline(hist), key="rec_timeline")
if len(hist) > 1 and not charts_history.timeline_by_time(hist["when"]):
    timeline.caption(f"{len(hist)} events, {hist['when'].nunique()} distinct time(s): drawn in the log's order, "
                     "oldest first (hover a dot for its time).")

tuning(ds_name, model_name, hist)
