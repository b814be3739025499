"""The studio's pages, routed by app.py's ``st.navigation``.

Why this file does something: Streamlit still honours its legacy ``pages/`` auto-discovery until a
session has executed ``st.navigation``. On a freshly started server whose first request is a page's
address (``/recommendations`` from a bookmark or a link), Streamlit therefore runs that page file on
its own, without app.py: no logo, no dataset / model pickers, a sidebar listing every file of this
folder, and "No dataset yet". Renaming the folder (Streamlit's advice) would move every page; instead,
the first script run that imports this package switches the legacy mode off for the whole server and
reruns, so app.py routes the same address (page hashes come from the URL path in both modes).

That import happens once per process, so a second session whose first run had already started in the
legacy mode (two people opening an address at once on a fresh server; found by bench/load.py) would
still see the page alone: ``through_app`` (called by every page, via pages/active.py) reruns such a run,
which app.py did not start (``routed``), once per session.

Every routed page imports this package before anything else (tests/test_architecture.py holds it): the
reroute then happens before the page's own imports load torch, and Streamlit's bare file list shows for a
fraction of a second instead of the 3.5-4 s those imports took (bench/first_visit.py, bench/RESULTS.md).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import streamlit as st

try:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx
except ImportError:  # a Streamlit without these internals: nothing to work around
    PagesManager = get_script_run_ctx = None

_run = threading.local()  # each session's script runs in its own thread


@contextmanager
def routed():
    """app.py runs the chosen page inside this: a page run outside it was not started by the router."""
    _run.routed = True
    try:
        yield
    finally:
        _run.routed = False


def through_app() -> None:
    """Rerun through app.py (once per session) when this page file runs without the router."""
    ctx = get_script_run_ctx(suppress_warning=True) if get_script_run_ctx is not None else None
    if ctx is None or getattr(_run, "routed", False) or getattr(ctx, "fragment_ids_this_run", None):
        return  # outside Streamlit, routed, or a fragment's own rerun (app.py does not run then)
    if st.session_state.get("_rerouted"):
        return  # a page run on its own on purpose (a test): never loop
    st.session_state["_rerouted"] = True
    PagesManager.uses_pages_directory = False
    st.rerun()


def route_through_app() -> None:
    """Rerun through app.py when Streamlit's legacy pages/ mode would run a page on its own.

    A no-op outside a Streamlit script run (tests importing helpers, the CLI), once ``st.navigation``
    has run anywhere on this server, and on a Streamlit without these internals.
    """
    if PagesManager is None or not PagesManager.uses_pages_directory or get_script_run_ctx(suppress_warning=True) is None:
        return
    PagesManager.uses_pages_directory = False  # what st.navigation itself sets, server-wide
    st.rerun()


route_through_app()
