"""Workspace housekeeping shared by the Data and Train pages: delete with a confirmation, one-shot notices.

Deleting runs in a button callback, i.e. before app.py draws the sidebar, so the sidebar never lists a
dataset or model that is gone. The router never lists this file as a page.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from crossrec_core.errors import CrossrecError
from pages.state import md_escape

_NOTICE = "_manage_notice"


def notify(text: str) -> None:
    """Queue a success message for the next run of whichever page comes next (shown once)."""
    st.session_state[_NOTICE] = text


def show_notice() -> None:
    """Show (and forget) the queued message, if any."""
    text = st.session_state.pop(_NOTICE, None)
    if text:
        st.success(text, icon=":material/check_circle:")


def forget_active(state_key: str) -> Callable[[str], None]:
    """Return an ``after`` callback that clears ``session_state[state_key]`` when it names the deleted entry
    (the sidebar then picks another one)."""

    def forget(name: str) -> None:
        if st.session_state.get(state_key) == name:
            st.session_state[state_key] = None

    return forget


def _ask(key: str) -> None:
    st.session_state[f"_{key}_confirm"] = st.session_state[f"{key}_name"]


def _cancel(key: str) -> None:
    st.session_state.pop(f"_{key}_confirm", None)


def _delete(key: str, kind: str, delete: Callable[[str], None], after: Callable[[str], None] | None) -> None:
    name = st.session_state.pop(f"_{key}_confirm", None)
    if not name:
        return
    try:
        delete(name)
    except CrossrecError as err:
        st.session_state[f"_{key}_error"] = str(err)
        return
    if after is not None:
        after(name)
    notify(f"Deleted the {kind} '{name}'.")


def delete_with_confirmation(kind: str, names: list[str], key: str, delete: Callable[[str], None],
                             after: Callable[[str], None] | None = None) -> None:
    """Draw 'pick one, Delete', then ask 'Delete it for good?' before calling ``delete(name)``.

    Args:
        kind: 'dataset' or 'model' (used in the labels).
        key: widget key prefix (unique per page).
        after: called with the name once it is deleted (e.g. to forget it as the active one).
    """
    if err := st.session_state.pop(f"_{key}_error", None):
        st.error(err, icon=":material/error:")
    pending = st.session_state.get(f"_{key}_confirm")
    if pending is not None and pending not in names:  # deleted elsewhere meanwhile
        _cancel(key)
        pending = None
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.selectbox(f"{kind.capitalize()} to delete", names, key=f"{key}_name", disabled=pending is not None)
    c2.button("Delete…", icon=":material/delete:", key=key, on_click=_ask, args=(key,), disabled=pending is not None)
    if pending is None:
        return
    st.warning(f"Delete the {kind} '{md_escape(pending)}' for good? This cannot be undone.", icon=":material/warning:")
    y, n, _ = st.columns([1, 1, 3])
    y.button("Yes, delete it", key=f"{key}_yes", type="primary", on_click=_delete, args=(key, kind, delete, after))
    n.button("Keep it", key=f"{key}_no", on_click=_cancel, args=(key,))
