"""Train: start a background training job, follow it live, manage saved models."""

import pages  # noqa: F401  first: a run Streamlit started without app.py reroutes before the heavy imports
import dataclasses

import pandas as pd
import streamlit as st

from crossrec_core.config import ModelConfig
from crossrec_core.errors import CrossrecError
from crossrec_core.storage.registry import delete_model, import_model_zip
from crossrec_core.training import jobs
from crossrec_core.training.private import few_shoppers_warning, private_config
from pages.active import dataset_or_call_to_action
from pages.caches import model_datasets, model_infos
from pages.compact import compact_copy, weights_kind
from pages.job_panel import follow_training
from pages.manage import delete_with_confirmation, forget_active, notify, show_notice
from pages.model_card import show_model_card
from pages.state import md_escape, show_error

st.title("Train")
# without a dataset the page still shows a running job and the saved models (a job keeps running whatever is active)
ds_name, ds = dataset_or_call_to_action()
defaults = ModelConfig()


def train_form(ds_name: str, ds) -> None:
    """The form that starts a training job on the active dataset."""
    with st.form("train_form"):
        st.caption(f"Trains on **{md_escape(ds_name)}** ({ds.n_users:,} shoppers, {ds.n_items:,} items). "
                   "Training runs in the background: you can use other pages or close the tab.")
        name = st.text_input("Model name", value=f"{ds_name}-model"[:80], key="train_name")
        c1, c2, c3 = st.columns(3)
        kinds = ["Transformer", "GRU", "LSTM"]  # kind.lower() is the config's encoder kind
        kind = c1.radio("Sequence encoder", kinds, key="train_kind", horizontal=True,
                        index=[k.lower() for k in kinds].index(defaults.user.kind),
                        help="Transformer: best on long histories. GRU: a little faster on a laptop. "
                             "LSTM: a recurrence with a separate memory cell, for comparison.")
        use_text = c2.toggle("Read product titles", value=defaults.item.use_text, key="train_text",
                             help="Uses a small pretrained language model so new or rare products get sensible vectors.")
        # the CLI's default cap: the studio trains the same measured configuration `crossrec train` does
        epochs = c3.number_input("At most this many epochs", 1, 200, defaults.train.epochs, key="train_epochs",
                                 help="Training stops earlier by itself, after "
                                      f"{defaults.train.patience} epochs without a better validation score.")
        p1, p2 = st.columns([1, 2])
        private = p1.toggle("Train privately", value=False, key="train_private",
                            help="Differentially private training: no single shopper's history can be told from the model "
                                 "(docs/SECURITY.md). It costs quality and time (bench/RESULTS.md \"Private training\"), "
                                 f"runs {defaults.train.dp_epochs} fixed passes, and leaves out the fitted popularity and re-rank.")
        epsilon = p2.select_slider("Privacy budget ε (smaller = more private)", [1, 2, 4, 8], value=8, key="train_epsilon")
        if few := few_shoppers_warning(ds.n_users):
            p2.caption(f":material/warning: {few}")
        submitted = st.form_submit_button("Train", icon=":material/play_arrow:", type="primary")
    if submitted:
        config = dataclasses.replace(
            defaults,
            item=dataclasses.replace(defaults.item, use_text=bool(use_text)),
            user=dataclasses.replace(defaults.user, kind=kind.lower()),
            train=dataclasses.replace(defaults.train, epochs=int(epochs)),
        )
        config = private_config(config, float(epsilon)) if private else config
        try:
            st.session_state.job_id = jobs.start_training_job(ds_name, name.strip(), config)
        except CrossrecError as err:
            show_error(err)


if ds is not None:
    train_form(ds_name, ds)
follow_training()

st.subheader("Saved models")
show_notice()
models = model_infos()
if models:
    lineage = model_datasets()
    st.dataframe(pd.DataFrame([{"model": m.name, "trained on": ", ".join(lineage.get(m.name, ())) or "another log",
                                "encoder": m.encoder, "items": m.n_items, "best epoch": m.best_epoch,
                                "valid NDCG@10": m.valid_ndcg10, "MB": round(m.size_bytes / 1e6, 1),
                                "weights": weights_kind(m.name)} for m in models]),
                 hide_index=True, key="train_models",
                 column_config={"valid NDCG@10": st.column_config.NumberColumn(format="%.3f")})
    show_model_card(st.session_state.get("model_name"), "train_card_load")
    delete_with_confirmation("model", [m.name for m in models], "train_delete", delete_model,
                             after=forget_active("model_name"))
    compact_copy([m.name for m in models])
else:
    st.caption("No saved models yet.")
with st.expander("Import a model folder (zip)", icon=":material/upload:"):
    zip_file = st.file_uploader("Zipped model folder", type=["zip"], key="train_zip")
    zip_name = st.text_input("Save it as", value="imported-model", key="train_zip_name")
    if zip_file is not None and st.button("Import", key="train_import"):
        try:
            import_model_zip(zip_file.getvalue(), zip_name.strip())
        except CrossrecError as err:
            show_error(err)
        st.session_state.model_name = zip_name.strip()
        notify(f"Imported as '{zip_name.strip()}'.")
        st.rerun()  # redraw the sidebar with the imported model
