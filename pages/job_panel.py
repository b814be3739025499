"""The Train page's live panel: follow a background training job (crossrec_core.training.jobs) until it ends.

A finished job makes its model the active one only when its dataset is the active dataset: a model is
never paired behind the user's back with a log it was not trained on. The router never lists this file.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.training import jobs
from pages import charts
from pages.caches import model_names
from pages.state import md_escape


def _use_pair(dataset: str, model: str) -> None:
    st.session_state.dataset_name, st.session_state.model_name = dataset, model


def _panel() -> None:
    """Poll the followed job's progress file and redraw the bar, the curves and the outcome."""
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
    st.progress(job.fraction, text=f"{job.describe()} · {job.elapsed_s:.0f} s")
    if job.loss_curve or job.valid_curve:
        st.plotly_chart(charts.training_curves(job.loss_curve, job.valid_curve, job.reference_ndcg10), key="train_curves")
    if job.valid_curve and job.reference_ndcg10:  # the yardstick in words: is this figure any good?
        best = max(pt[1] for pt in job.valid_curve)
        st.caption(f"Best validation NDCG@10 so far: {best:.3f}. The most popular products score {job.reference_ndcg10:.3f} "
                   f"on the same shoppers, so the model is at {best / job.reference_ndcg10:.1f}x popularity.")
    active = st.session_state.get("dataset_name")
    if job.status == jobs.STATUS_DONE and job.model_name not in model_names():
        st.caption(f"The model {md_escape(job.model_name)} from this training has since been deleted.")
    elif job.status == jobs.STATUS_DONE:
        st.success(f"{job.message} {job.describe()}.", icon=":material/check_circle:")
        if job.dataset != active:
            st.info(f"It was trained on {md_escape(job.dataset)}; the active dataset is {md_escape(active)}, "
                    "so the active model did not change.", icon=":material/info:")
            st.button(f"Use {md_escape(job.model_name)} with {md_escape(job.dataset)}", key="train_use_pair",
                      on_click=_use_pair, args=(job.dataset, job.model_name), icon=":material/swap_horiz:")
    elif job.status in (jobs.STATUS_FAILED, jobs.STATUS_CANCELLED):
        st.error(job.message, icon=":material/error:")
    elif st.button("Cancel training", icon=":material/stop:", key="train_cancel"):
        jobs.cancel_job(job_id)
    if job.finished and st.session_state.get("_job_seen_done") != job_id:
        st.session_state._job_seen_done = job_id
        if job.status == jobs.STATUS_DONE and job.dataset == active:
            st.session_state.model_name = job.model_name
        st.rerun(scope="app")  # refresh the sidebar's model list and stop polling


def follow_training() -> None:
    """Draw the panel of the job this session follows (or of a job started in another tab), polling while it runs."""
    running = [j for j in jobs.list_jobs() if not j.finished]
    if st.session_state.job_id is None and running:
        st.session_state.job_id = running[0].job_id
    live = any(j.job_id == st.session_state.job_id for j in running)
    st.fragment(_panel, run_every=1.0 if live else None)()  # poll only while the followed job runs
