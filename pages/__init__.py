"""The studio's pages, routed by app.py's ``st.navigation``.

Why this file does something: Streamlit still honours its legacy ``pages/`` auto-discovery until a
session has executed ``st.navigation``. On a freshly started server whose first request is a page's
address (``/recommendations`` from a bookmark or a link), Streamlit therefore runs that page file on
its own, without app.py: no logo, no dataset / model pickers, a sidebar listing every file of this
folder, and "No dataset yet". Renaming the folder (Streamlit's advice) would move every page; instead,
the first script run that imports this package switches the legacy mode off for the whole server and
reruns, so app.py routes the same address (page hashes come from the URL path in both modes).
"""

from __future__ import annotations

import streamlit as st

try:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx
except ImportError:  # a Streamlit without these internals: nothing to work around
    PagesManager = get_script_run_ctx = None


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
