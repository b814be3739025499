"""The Evaluation page's "Compare two models" panel: two saved models on the active dataset, one table with
paired-bootstrap intervals on all / switch / novel shoppers, and their reliability diagrams side by side.
The router never lists this file.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.errors import CrossrecError, ModelError
from pages import evaluation_figures as figures
from pages import evaluation_view as view
from pages.compare_cache import comparable_models, get_comparison


def compare_models(ds_name: str, active_model: str) -> None:
    """Show the panel; nothing is evaluated until the button is pressed (both models in one evaluation)."""
    names = comparable_models(ds_name)
    if len(names) < 2:
        st.info("Train a second model on this catalogue to compare two models here.", icon=":material/info:")
        return
    pick_a, pick_b = st.columns(2)
    a = pick_a.selectbox("First model", names, index=names.index(active_model) if active_model in names else 0,
                         key="eval_cmp_a")
    b = pick_b.selectbox("Second model", [n for n in names if n != a], key="eval_cmp_b")
    done_key = f"_eval_cmp:{a}:{b}:{ds_name}"
    if not (st.button("Compare them on this dataset", key="eval_cmp_run", icon=":material/compare_arrows:")
            or st.session_state.get(done_key)):
        return
    st.session_state[done_key] = True
    try:
        frame, calibration, sizes = get_comparison(a, b, ds_name)
    except ModelError as err:  # the leak guard (a model trained on the held-out targets) or an unloadable model
        st.warning(str(err), icon=":material/warning:")
        return
    except CrossrecError as err:
        st.error(str(err), icon=":material/error:")
        return
    st.caption(view.protocol_line(f"{sizes.get('all', 0):,}", 10, "both models were")
               + " Both are scored on the same shoppers.")
    models = {c: "{:.3f}" for c in frame.columns[3:5]}
    st.dataframe(frame.style.format({**models, "difference": "{:+.3f}"}), hide_index=True,
                 key="eval_cmp_table")
    top = figures.reliability_top(*calibration.values())  # one scale, so the two can be read side by side
    for i, (col, name) in enumerate(zip(st.columns(2), (a, b))):
        col.plotly_chart(figures.reliability_figure(calibration[name], f"{name}: predicted vs observed", 320, top),
                         key=f"eval_cmp_rel_{i}")
        col.caption(view.calibration_sentence(calibration[name]))
