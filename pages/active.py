"""The active dataset and model of a session: look them up, or stop the page with a call to action.

The router never lists this file as a page.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.serving.shoppers import search_users
from pages import through_app
from pages.caches import get_dataset, get_model
from pages.state import PAGE_DATA, PAGE_HOME, PAGE_TRAIN, show_error


def active_dataset():
    """Return (name, dataset) of the active dataset, or (None, None) when the workspace has none."""
    through_app()  # every page but Home starts here
    name = st.session_state.get("dataset_name")
    if not name:
        return None, None
    try:
        return name, get_dataset(name)
    except CrossrecError as err:
        show_error(err)


def active_model():
    """Return (name, model) of the active model, or (None, None) when the workspace has none."""
    name = st.session_state.get("model_name")
    if not name:
        return None, None
    try:
        return name, get_model(name)
    except CrossrecError as err:
        show_error(err)


def dataset_or_call_to_action():
    """Return (name, dataset), or (None, None) after showing a call to action when there is none (the page goes on)."""
    name, ds = active_dataset()
    if ds is None:
        st.info("No dataset yet. Load the demo store on Home or upload your own log on Data.", icon=":material/info:")
        st.page_link(PAGE_DATA, label="Upload a log", icon=":material/upload_file:")
        st.page_link(PAGE_HOME, label="Load the demo store", icon=":material/storefront:")
        return None, None
    return name, ds


def require_dataset():
    """Return (name, dataset); without one, show a call to action and stop the page."""
    name, ds = dataset_or_call_to_action()
    if ds is None:
        st.stop()
    return name, ds


def require_model():
    """Return (name, model); without one, show a call to action and stop the page."""
    name, model = active_model()
    if model is None:
        st.info("No trained model yet. Train one first: it takes a minute or two on the demo store.", icon=":material/info:")
        st.page_link(PAGE_TRAIN, label="Train a model", icon=":material/model_training:")
        st.stop()
    return name, model


def require_pair():
    """Return (ds_name, ds, model_name, model); stop with a call to action or a plain message when the
    active model was trained on another catalogue than the active dataset."""
    ds_name, ds = require_dataset()
    model_name, model = require_model()
    try:
        model.check_compatible(ds)
    except CrossrecError as err:
        st.warning(str(err), icon=":material/warning:")
        st.page_link(PAGE_TRAIN, label="Train a model on this dataset", icon=":material/model_training:")
        st.stop()
    return ds_name, ds, model_name, model


def user_options(ds, search: str = "", limit: int = 500, include_current: bool = True) -> list[str]:
    """Return up to ``limit`` user ids containing ``search`` (case-insensitive); with ``include_current``,
    the shopper shown now (``rec_user``) is always among them, first when the search leaves it out."""
    current = st.session_state.get("rec_user") if include_current else None
    return search_users(ds.user_ids, search, limit, current)
