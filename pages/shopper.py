"""The shopper picker of the Recommendations page: search by id, choose, or draw one at random.

One rule keeps the page honest: the Shopper box always shows ``rec_user``, the shopper whose history,
heading and list the page draws. Every way of choosing (search, box, random) goes through
``pick_user`` in a callback, so the whole page already sees the new shopper on the run that follows.
The router never lists this file as a page.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.serving.shoppers import random_user
from pages.active import user_options
from pages.state import forget_whatif, md_escape


def pick_user(user: str | None) -> None:
    """Show ``user`` on Recommendations and the map; a new shopper starts without what-if edits."""
    if user != st.session_state.get("rec_user"):
        forget_whatif()
    st.session_state.rec_user = user


def _matches(user: object, search: str) -> bool:
    return bool(search) and search.lower() in str(user).lower()


def _on_search(ds) -> None:
    """Show the first shopper whose id contains the search text (unless the current one does)."""
    search = st.session_state.get("rec_search", "").strip()
    if not search or _matches(st.session_state.get("rec_user"), search):
        return
    found = user_options(ds, search, limit=1, include_current=False)
    if found:
        pick_user(found[0])


def _on_random(ds) -> None:
    st.session_state["_rec_random_n"] = st.session_state.get("_rec_random_n", 0) + 1
    pick_user(random_user(ds, st.session_state["_rec_random_n"]))
    st.session_state.rec_search = ""  # a random shopper would not match the old search


def shopper_picker(ds) -> str | None:
    """Draw the search box, the Shopper box and the Random button; return the shopper to show."""
    state = st.session_state
    if ds.n_users and (state.rec_user is None or int(ds.user_index([state.rec_user])[0]) < 0):
        pick_user(str(ds.user_ids[0]))  # first visit, or a shopper of another dataset
    c1, c2, c3 = st.columns([2, 2, 1])
    search = c1.text_input("Find a shopper by id", key="rec_search", placeholder="type part of an id",
                           on_change=_on_search, args=(ds,), help="Shows the first shopper whose id contains this.")
    options = user_options(ds, search.strip())  # always holds the shown shopper, first when it matches
    state["_rec_user_w"] = state.rec_user
    c2.selectbox("Shopper", options, key="_rec_user_w", on_change=lambda: pick_user(state["_rec_user_w"]))
    c3.button("Random shopper", icon=":material/shuffle:", key="rec_random", on_click=_on_random, args=(ds,))
    if search.strip() and not any(_matches(u, search.strip()) for u in options):
        c1.caption(f"No shopper id contains '{md_escape(search.strip())}'.")
    return state.rec_user
