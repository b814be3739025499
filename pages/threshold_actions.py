"""The Evaluation page's threshold buttons: use the validated threshold, save the shared one with the model.

Both run as button callbacks, before the page is drawn again. The router never lists this file as a page.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.registry import save_threshold
from crossrec_core.storage.workspace import models_dir
from pages.state import md_escape


def save_threshold_callback(model_name: str) -> None:
    """on_click: save the session threshold with the model; the outcome is shown on the next run."""
    t = float(st.session_state.get("threshold", 0.0))
    try:
        save_threshold(models_dir() / model_name, t)
        st.session_state["_eval_saved"] = ("ok", f"Saved threshold {t:.3g} with {md_escape(model_name)}: Recommendations and "
                                                  "`crossrec recommend --threshold model` start from it.")
    except CrossrecError as err:
        st.session_state["_eval_saved"] = ("error", str(err))


def use_threshold_callback(value: float) -> None:
    """on_click: set the shared session threshold (Recommendations and Evaluation) to ``value``."""
    st.session_state["threshold"] = float(value)  # exact: not snapped to the slider grid


def show_saved() -> None:
    """Show (and forget) the outcome of the last 'Save this threshold' click."""
    if saved := st.session_state.pop("_eval_saved", None):
        ok = saved[0] == "ok"
        (st.success if ok else st.error)(saved[1], icon=":material/check_circle:" if ok else ":material/error:")
