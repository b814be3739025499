"""The Train page's compact copy of a saved model (`crossrec compress`), apart from pages/manage.py so that the
Data page, which shares manage.py, does not import torch for it. The router never lists this file as a page."""

from __future__ import annotations

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.compress import compress_model
from crossrec_core.storage.int8 import COMPRESSION_FILE
from crossrec_core.storage.workspace import models_dir, safe_name
from pages.manage import notify
from pages.state import show_error


def weights_kind(name: str) -> str:
    """Return "int8" for a saved model written by `crossrec compress`, else "float32"."""
    return "int8" if (models_dir() / name / COMPRESSION_FILE).is_file() else "float32"


def _suggest_name() -> None:
    """The copy's name follows the chosen model (a keyed text input would keep the first model's name)."""
    st.session_state["train_compact_name"] = f"{st.session_state['train_compact_src']}-int8"


def compact_copy(names: list[str]) -> None:
    """A compressed copy of a saved model (`crossrec compress`: int8 item tables and layers) under a new name."""
    originals = [n for n in names if weights_kind(n) == "float32"]
    if not originals:
        return
    with st.expander("Make a compact copy for CPU serving", icon=":material/compress:"):
        st.caption("Stores the item tables and the layers' weights as int8: folders 54-70 % smaller on the shared "
                   "logs, NDCG@10 within 0.0005, the same recommending speed (bench/RESULTS.md). The original is kept.")
        src = st.selectbox("Model", originals, key="train_compact_src", on_change=_suggest_name)
        if "train_compact_name" not in st.session_state:
            st.session_state["train_compact_name"] = f"{src}-int8"
        new = st.text_input("Save the copy as", key="train_compact_name")
        if st.button("Make the copy", key="train_compact", icon=":material/compress:"):
            try:
                name = safe_name(new.strip())
                report = compress_model(models_dir() / src, models_dir() / name)
            except CrossrecError as err:
                show_error(err)
                return
            mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
            notify(f"Saved '{name}': {mb(report['source_bytes'])} → {mb(report['compressed_bytes'])}.")
            st.rerun()
