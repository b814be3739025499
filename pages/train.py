"""Train: start a background training job, follow it live, manage saved models."""

import dataclasses

import pandas as pd
import streamlit as st

from crossrec_core import jobs
from crossrec_core.config import ModelConfig
from crossrec_core.errors import CrossrecError
from pages import charts
from pages.common import md_escape, model_infos, require_dataset, show_error

st.title("Train")
ds_name, ds = require_dataset()
defaults = ModelConfig()

with st.form("train_form"):
    st.caption(f"Trains on **{md_escape(ds_name)}** ({ds.n_users:,} shoppers, {ds.n_items:,} items). "
               "Training runs in the background: you can use other pages or close the tab.")
    name = st.text_input("Model name", value=f"{ds_name}-model"[:80], key="train_name")
    c1, c2, c3 = st.columns(3)
    kind = c1.radio("Sequence encoder", ["Transformer", "GRU"], key="train_kind", horizontal=True,
                    index=0 if defaults.user.kind == "transformer" else 1,
                    help="Transformer: best on long histories. GRU: a little faster on a laptop.")
    use_text = c2.toggle("Read product titles", value=defaults.item.use_text, key="train_text",
                         help="Uses a small pretrained language model so new or rare products get sensible vectors.")
    epochs = c3.number_input("At most this many epochs", 1, 200, min(defaults.train.epochs, 30), key="train_epochs",
                             help="Training stops earlier by itself when validation quality stops improving.")
    submitted = st.form_submit_button("Train", icon=":material/play_arrow:", type="primary")
if submitted:
    config = dataclasses.replace(
        defaults,
        item=dataclasses.replace(defaults.item, use_text=bool(use_text)),
        user=dataclasses.replace(defaults.user, kind=kind.lower()),
        train=dataclasses.replace(defaults.train, epochs=int(epochs)),
    )
    try:
        st.session_state.job_id = jobs.start_training_job(ds_name, name.strip(), config)
    except CrossrecError as err:
        show_error(err)

running = [j for j in jobs.list_jobs() if not j.finished]
if st.session_state.job_id is None and running:  # follow a job started in another tab or session
    st.session_state.job_id = running[0].job_id
live = any(j.job_id == st.session_state.job_id for j in running)


@st.fragment(run_every=1.0 if live else None)  # poll only while the followed job runs
def job_panel() -> None:
    """Poll the followed job's progress file and redraw the bar and curves."""
    job_id = st.session_state.job_id
    if not job_id:
        return
    try:
        job = jobs.read_job(job_id)
    except CrossrecError as err:
        st.session_state.job_id = None
        st.error(str(err))
        return
    st.subheader(f"Training {md_escape(job.model_name)} on {md_escape(job.dataset)}")
    loss = "" if job.loss is None else f", loss {job.loss:.3f}"
    st.progress(job.fraction, text=f"{job.status}: {job.phase or 'starting'}, epoch {job.epoch}/{job.n_epochs}"
                f"{loss}, {job.elapsed_s:.0f} s")
    if job.loss_curve or job.valid_curve:
        st.plotly_chart(charts.training_curves(job.loss_curve, job.valid_curve), key="train_curves")
    if job.status == jobs.STATUS_DONE:
        st.success(f"{job.message} Best epoch {job.metrics.get('best_epoch', '?')}.", icon=":material/check_circle:")
    elif job.status in (jobs.STATUS_FAILED, jobs.STATUS_CANCELLED):
        st.error(job.message, icon=":material/error:")
    elif st.button("Cancel training", icon=":material/stop:", key="train_cancel"):
        jobs.cancel_job(job_id)
    if job.finished and st.session_state.get("_job_seen_done") != job_id:
        st.session_state._job_seen_done = job_id
        if job.status == jobs.STATUS_DONE:
            st.session_state.model_name = job.model_name
        st.rerun(scope="app")  # refresh the sidebar's model list and stop polling


job_panel()

st.subheader("Saved models")
models = model_infos()
if models:
    st.dataframe(pd.DataFrame([{"model": m.name, "encoder": m.encoder, "items": m.n_items, "best epoch": m.best_epoch,
                                "valid NDCG@10": m.valid_ndcg10, "MB": round(m.size_bytes / 1e6, 1)} for m in models]),
                 hide_index=True, key="train_models",
                 column_config={"valid NDCG@10": st.column_config.NumberColumn(format="%.3f")})
    c1, c2 = st.columns([3, 1])
    doomed = c1.selectbox("Model to delete", [m.name for m in models], key="train_delete_name")
    if c2.button("Delete", icon=":material/delete:", key="train_delete"):
        from crossrec_core.registry import delete_model

        delete_model(doomed)
        st.rerun()
else:
    st.caption("No saved models yet.")
with st.expander("Import a model folder (zip)", icon=":material/upload:"):
    zip_file = st.file_uploader("Zipped model folder", type=["zip"], key="train_zip")
    zip_name = st.text_input("Save it as", value="imported-model", key="train_zip_name")
    if zip_file is not None and st.button("Import", key="train_import"):
        from crossrec_core.registry import import_model_zip

        try:
            import_model_zip(zip_file.getvalue(), zip_name.strip())
        except CrossrecError as err:
            show_error(err)
        st.session_state.model_name = zip_name.strip()
        st.success(f"Imported as '{zip_name.strip()}'.", icon=":material/check_circle:")
