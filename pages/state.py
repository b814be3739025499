"""Session state of the studio: every cross-page key, the active dataset and model, errors, shared settings.

The router never lists this file as a page. The active dataset and model are looked up in pages/active.py,
switched in pages/sidebar.py, and loaded through the caches of pages/caches.py.
"""

from __future__ import annotations

import re

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.serving.shoppers import history_frame

# One place for every cross-page session key (STYLE.md: set up keys in one helper).
DEFAULTS: dict[str, object] = {
    "dataset_name": None,  # active dataset (workspace name)
    "model_name": None,  # active model (workspace name)
    "threshold": 0.0,  # probability threshold, shared by Recommendations and Evaluation
    "k": 10,
    "diversity": 0.0,
    "cross_only": False,
    "excluded_categories": [],
    "rec_user": None,  # user shown on Recommendations and on the map
    "whatif_add": [],  # item_ids added to the history (what-if)
    "whatif_remove": [],  # item_ids removed from the history (what-if)
    "map_method": "PCA",
    "map_selection": [],  # item_idx selected on the map (lasso / box); tests set it directly
    "job_id": None,  # the training job this session follows
}

PAGE_HOME = "pages/home.py"
PAGE_DATA = "pages/data.py"
PAGE_TRAIN = "pages/train.py"
PAGE_MAP = "pages/embedding_map.py"
PAGE_RECS = "pages/recommendations.py"
PAGE_EVAL = "pages/evaluation.py"

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def init_state() -> None:
    """Create every session key with its default (never overwrites a value already set)."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = list(value) if isinstance(value, list) else value


def md_escape(text: object) -> str:
    """Return ``text`` safe to embed in st.markdown: markdown and HTML characters are escaped."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def show_error(err: CrossrecError) -> None:
    """Show a core error as its plain message and stop the page (never a traceback)."""
    st.error(str(err), icon=":material/error:")
    st.stop()


def persist(widget_key: str, state_key: str) -> None:
    """on_change callback: copy a widget's value to a session key that survives page switches."""
    st.session_state[state_key] = st.session_state[widget_key]


def mirror(*pairs: tuple[str, str]) -> None:
    """Set each widget key from its persistent session key before the widget is drawn (``set_widget``)."""
    for widget, key in pairs:
        set_widget(widget, st.session_state[key])


def set_widget(widget: str, value) -> None:
    """Set a widget key to ``value`` before the widget is drawn, only when it differs. Why: a key the script
    writes is sent to the browser as the widget's value and overwrote key presses made during the run (ten
    presses on a slider moved K from 10 to 19)."""
    if widget not in st.session_state or st.session_state[widget] != value:
        st.session_state[widget] = value


def forget_whatif() -> None:
    """Drop the what-if edits of the history (a new shopper or a new user space starts without them)."""
    st.session_state.whatif_add, st.session_state.whatif_remove = [], []


def current_history(ds, user_id: str | None):
    """Return the history to recommend from: the shopper's events with the what-if edits (history_frame)."""
    return history_frame(ds, user_id, st.session_state.get("whatif_add", []), st.session_state.get("whatif_remove", []))


def recommend_options() -> dict:
    """Return the shared recommendation settings (Recommendations sliders) as recommend() keywords."""
    t = float(st.session_state.get("threshold", 0.0))
    return {
        "k": int(st.session_state.get("k", 10)),
        "cross_category_only": bool(st.session_state.get("cross_only", False)),
        "exclude_categories": tuple(st.session_state.get("excluded_categories", [])),
        "threshold": t if t > 0 else None,
        "diversity": float(st.session_state.get("diversity", 0.0)),
    }

