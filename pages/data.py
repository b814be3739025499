"""Data: upload a log, check the column mapping, read the validation report, profile it, save it."""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.datasets import delete_dataset, save_dataset
from crossrec_core.storage.workspace import slugify
from pages.active import active_dataset
from pages.caches import dataset_names, model_datasets, model_for_dataset
from pages.caches_data import get_profile, get_upload_columns, get_upload_dataset, get_upload_profile
from pages.data_widgets import VECTOR_HELP, VECTOR_TYPES, mapping_picker, show_profile, with_vectors
from pages.manage import delete_with_confirmation, forget_active, notify, show_notice
from pages.state import md_escape, show_error

MAX_MB = int(st.get_option("server.maxUploadSize"))
TYPES = ["csv", "tsv", "txt", "parquet", "jsonl", "ndjson", "json", "gz", "inter", "item"]

st.title("Data")
st.caption(f"CSV, TSV, Parquet or JSON Lines (also .gz), up to {MAX_MB} MB per file. "
           "Bigger logs: use `crossrec ingest` in a terminal. Nothing leaves this machine.")
log_file = st.file_uploader("Interaction log (one row per view, cart or purchase)", type=TYPES, key="data_log")
items_file = st.file_uploader("Items table (optional: item id, category, title)", type=TYPES, key="data_items")
vectors_file = st.file_uploader("Item vectors (optional: images or other modalities)", type=VECTOR_TYPES, key="data_vectors",
                                help=VECTOR_HELP)

if log_file is None:
    show_notice()
    name, ds = active_dataset()
    if ds is not None:
        st.subheader(f"Active dataset: {md_escape(name)}")
        try:
            show_profile(get_profile(name))
        except CrossrecError as err:
            show_error(err)
        if vectors_file is not None:  # vectors for the saved dataset: attach, then save it again under its name
            with_ds = with_vectors(ds, vectors_file)
            if st.button(f"Save '{name}' with these vectors", icon=":material/save:", key="data_save_vectors"):
                try:
                    save_dataset(with_ds, name)
                except CrossrecError as err:
                    show_error(err)
                notify(f"Saved '{name}' with the item vectors; train a model on it on the Train page.")
                st.rerun()
        with st.expander("Delete a dataset", icon=":material/delete:"):
            delete_with_confirmation("dataset", dataset_names(), "data_delete", delete_dataset, after=forget_active("dataset_name"))
    st.stop()

try:
    columns = get_upload_columns(log_file.getvalue(), log_file.name, log_file.file_id)
except CrossrecError as err:
    show_error(err)
mapping = mapping_picker(columns)
pseudonymize = st.toggle("Pseudonymise shopper ids", key="data_pseudonymize",
                         help="Store a salted hash instead of each raw customer id; the salt stays in this workspace.")
items_args = (items_file.getvalue(), items_file.name, items_file.file_id) if items_file else (None, None, None)
items_mapping = {}
if items_file is not None:
    try:
        items_mapping = mapping_picker(get_upload_columns(*items_args), table="items")
    except CrossrecError as err:
        show_error(err)
upload_key = (log_file.file_id, items_args[2], tuple(sorted(mapping.items())), pseudonymize, tuple(sorted(items_mapping.items())))
try:
    ds = get_upload_dataset(log_file.getvalue(), log_file.name, *items_args[:2], upload_key)
except CrossrecError as err:
    show_error(err)
ds = with_vectors(ds, vectors_file)

st.subheader("Validation report")
if ds.report.warnings:
    for w in ds.report.warnings:
        st.warning(md_escape(w), icon=":material/warning:")
else:
    st.success("No problems found.", icon=":material/check_circle:")
for note in ds.report.notes:
    st.caption(md_escape(note))
show_profile(get_upload_profile(ds, upload_key))

st.subheader("Save to the workspace")
name = st.text_input("Dataset name", value=slugify(log_file.name.rsplit(".", 1)[0]), key="data_name",
                     help="Letters, digits, '.', '_' or '-'. Saving under an existing name replaces it.")
show_notice()
if st.button("Save dataset", icon=":material/save:", key="data_save", type="primary"):
    try:
        save_dataset(ds, name)
    except CrossrecError as err:
        show_error(err)
    st.session_state.dataset_name = name
    st.session_state.model_name = model_for_dataset(name, model_datasets()) or st.session_state.model_name
    notify(f"Saved. '{name}' is now the active dataset; train a model on it on the Train page.")
    st.rerun()  # the sidebar is drawn before this page: redraw it with the new dataset
