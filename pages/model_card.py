"""The model card shown on Home and Train: what the active model was trained on, when, how, and how well,
with a button that makes its dataset the active one. The card's content is crossrec_core's
(``storage.model_card``); this helper only lays it out. The router never lists this file as a page.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.model_card import model_card
from pages.state import forget_whatif, md_escape


def load_dataset_of(dataset: str) -> None:
    """on_click: make ``dataset`` the active dataset (the model stays); a new pair forgets the what-if edits,
    the map selection and the shopper, as the sidebar does."""
    st.session_state.dataset_name = dataset
    forget_whatif()
    st.session_state.map_selection = []
    st.session_state.rec_user = None


def show_model_card(model_name: str | None, key: str) -> None:
    """Show the card of ``model_name`` (nothing when None) and its 'load its dataset' button (key ``key``)."""
    if not model_name:
        return
    try:
        card = model_card(model_name)
    except CrossrecError as err:
        st.warning(f"No card for {md_escape(model_name)}: {err}", icon=":material/warning:")
        return
    with st.container(border=True, key=f"{key}_box"):
        st.markdown(f"**Model card: {md_escape(card.name)}**")
        rows = pd.DataFrame(card.rows(), columns=["section", "field", "value"])
        st.dataframe(rows, hide_index=True, key=f"{key}_table", height=35 * (len(rows) + 1) + 3,  # every row, no scroll
                     column_config={"value": st.column_config.TextColumn(width="large")})
        active = st.session_state.get("dataset_name")
        if card.dataset is None:
            st.caption("The log it was trained on is not among this workspace's datasets.")
        elif card.dataset == active:
            st.caption(f"Its dataset, {md_escape(card.dataset)}, is the active one.")
        st.button(f"Load its dataset ({md_escape(card.dataset or 'not in this workspace')})", key=key,
                  icon=":material/dataset:", on_click=load_dataset_of, args=(card.dataset,),
                  disabled=card.dataset is None or card.dataset == active,
                  help="Makes the log this model was trained on the active dataset on every page.")
