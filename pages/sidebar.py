"""The studio's sidebar: the active dataset and model, with pickers to switch them.

The router never lists this file as a page. Each model says which dataset it was trained on; switching the
dataset also switches to the newest model trained on it; a new pair forgets the what-if edits. A training job
shows its progress here on every page, and its end is announced once wherever the merchandiser is.
"""

from __future__ import annotations

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.training import jobs
from pages.caches import dataset_names, model_datasets, model_for_dataset, model_names
from pages.state import forget_whatif, init_state, md_escape, show_error


def _pick(key: str, names: list[str]) -> None:
    """Keep session_state[key] valid: the current value if it still exists, else the first name."""
    if st.session_state.get(key) not in names:
        st.session_state[key] = names[0] if names else None


def model_label(name: str, lineage: dict[str, tuple[str, ...]]) -> str:
    """Return 'model · dataset it was trained on' for pickers (plain text)."""
    on = lineage.get(name, ())
    return f"{name} · {on[0] if on else 'another log'}"


def sidebar() -> None:
    """Show the active dataset and model in the sidebar, with selectboxes to switch them; each model says
    which dataset it was trained on."""
    init_state()
    try:
        datasets = dataset_names()
        models = model_names()
        lineage = model_datasets() if models else {}
    except CrossrecError as err:
        show_error(err)
    _pick("dataset_name", datasets)
    if st.session_state.get("model_name") not in models:  # first visit or a deleted model: match the dataset
        st.session_state.model_name = model_for_dataset(st.session_state.dataset_name, lineage) or (models or [None])[0]
    with st.sidebar:
        st.caption("Active workspace")
        if datasets:
            st.session_state["_sb_dataset"] = st.session_state.dataset_name  # mirror before the widget exists
            st.selectbox(
                "Dataset", datasets, key="_sb_dataset", on_change=_switch_dataset, args=(lineage,),
                help="The log every page works on. Switching it also switches to the newest model trained on it.",
            )
        else:
            st.caption("No dataset yet.")
        if models:
            st.session_state["_sb_model"] = st.session_state.model_name
            st.selectbox(
                "Model", models, key="_sb_model", on_change=_copy, args=("_sb_model", "model_name"),
                format_func=lambda m: model_label(m, lineage),
                help="The trained model used for maps, recommendations and evaluation, with the dataset it "
                     "was trained on.",
            )
            if datasets and st.session_state.dataset_name not in lineage.get(st.session_state.model_name, ()):
                st.caption(":material/warning: This model was not trained on the active dataset.")
        else:
            st.caption("No model yet.")
        # one read of the job folders per run: the fragment polls only once it has seen a job running
        st.fragment(_training_status, run_every=2.0 if st.session_state.get("_sb_jobs") else None)()


def _training_status() -> None:
    """A running job's progress in one line, and a toast (once per job and session) when one this session saw
    running has ended: a training started on Train finishes while the merchandiser is on another page."""
    seen = dict(st.session_state.get("_sb_jobs") or {})  # job id -> model name, for jobs seen running
    running = [j for j in jobs.list_jobs() if not j.finished]
    for job in running:
        seen[job.job_id] = job.model_name
        st.caption(f":material/model_training: Training {md_escape(job.model_name)}: {md_escape(job.describe())}")
    for job_id in [k for k in seen if k not in {j.job_id for j in running}]:
        del seen[job_id]
        try:
            job = jobs.read_job(job_id)
        except CrossrecError:
            continue
        icon = ":material/check_circle:" if job.status == jobs.STATUS_DONE else ":material/error:"
        st.toast(f"Training {job.model_name}: {job.describe()}", icon=icon)
    st.session_state["_sb_jobs"] = seen


def _switch_dataset(lineage: dict[str, tuple[str, ...]]) -> None:
    _copy("_sb_dataset", "dataset_name")
    name = st.session_state.dataset_name
    if name not in lineage.get(st.session_state.get("model_name"), ()):
        st.session_state.model_name = model_for_dataset(name, lineage) or st.session_state.get("model_name")


def _copy(src: str, dst: str) -> None:
    st.session_state[dst] = st.session_state[src]
    if dst in ("dataset_name", "model_name"):  # a new user space: forget the what-if edits
        forget_whatif()
        st.session_state.map_selection = []
        st.session_state.rec_user = None
