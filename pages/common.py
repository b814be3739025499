"""Shared studio helpers: session-state defaults, the sidebar, and cached wrappers around crossrec_core.

The router never lists this file as a page. Caching is split by kind (STYLE.md): loaded datasets,
models and recommenders are resources (shared, never mutated); frames, maps and metric tables are data.
Every cache key includes the workspace path and the entry's on-disk stamp, so a re-saved dataset or
model is reloaded and two workspaces (tests) never share entries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.workspace import datasets_dir, models_dir, workspace_root

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# One place for every cross-page session key (STYLE.md: set up keys in one helper).
DEFAULTS: dict[str, object] = {
    "dataset_name": None,  # active dataset (workspace name)
    "model_name": None,  # active model (workspace name)
    "threshold": 0.0,  # probability threshold, shared by Recommendations and Evaluation
    "k": 10,
    "diversity": 0.0,
    "cross_only": False,
    "excluded_categories": [],
    "rec_user": None,  # user shown on Recommendations and on the map
    "whatif_add": [],  # item_ids added to the history (what-if)
    "whatif_remove": [],  # item_ids removed from the history (what-if)
    "map_method": "PCA",
    "map_selection": [],  # item_idx selected on the map (lasso / box); tests set it directly
    "job_id": None,  # the training job this session follows
}

PAGE_HOME = "pages/home.py"
PAGE_DATA = "pages/data.py"
PAGE_TRAIN = "pages/train.py"
PAGE_MAP = "pages/embedding_map.py"
PAGE_RECS = "pages/recommendations.py"
PAGE_EVAL = "pages/evaluation.py"

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def init_state() -> None:
    """Create every session key with its default (never overwrites a value already set)."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = list(value) if isinstance(value, list) else value


def md_escape(text: object) -> str:
    """Return ``text`` safe to embed in st.markdown: markdown and HTML characters are escaped."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def show_error(err: CrossrecError) -> None:
    """Show a core error as its plain message and stop the page (never a traceback)."""
    st.error(str(err), icon=":material/error:")
    st.stop()


# -- workspace listings -----------------------------------------------------------------------------


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def root_key() -> str:
    """Return the active workspace path (part of every cache key)."""
    return str(workspace_root())


def dataset_names() -> list[str]:
    """Return the names of the workspace's datasets, sorted."""
    from crossrec_core.storage.datasets import list_datasets

    return sorted(info.name for info in list_datasets())


def model_infos() -> list:
    """Return the workspace's ModelInfo entries, sorted by name."""
    from crossrec_core.storage.catalog import list_models

    return sorted(list_models(), key=lambda m: m.name)


def model_names() -> list[str]:
    return [m.name for m in model_infos()]


# -- cached loaders ---------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading dataset...", max_entries=8)
def _load_dataset(root: str, name: str, stamp: int):
    from crossrec_core.storage.datasets import load_dataset

    return load_dataset(name, root=root)


@st.cache_resource(show_spinner="Loading model...", max_entries=8)
def _load_model(root: str, name: str, stamp: int):
    from crossrec_core.storage.registry import load_model

    return load_model(Path(root) / "models" / name)


@st.cache_resource(show_spinner=False, max_entries=8)
def _recommender(root: str, model_name: str, model_stamp: int, ds_name: str | None, ds_stamp: int):
    from crossrec_core.serving.recommender import Recommender

    model = _load_model(root, model_name, model_stamp)
    ds = _load_dataset(root, ds_name, ds_stamp) if ds_name else None
    return Recommender(model, ds)


def dataset_key(name: str) -> tuple[str, str, int]:
    """Return the cache key (root, name, stamp) of a workspace dataset."""
    return root_key(), name, _stamp(datasets_dir() / name)


def model_key(name: str) -> tuple[str, str, int]:
    """Return the cache key (root, name, stamp) of a workspace model."""
    return root_key(), name, _stamp(models_dir() / name)


def get_dataset(name: str):
    """Return the workspace dataset ``name`` (cached until it is saved again)."""
    return _load_dataset(*dataset_key(name))


def get_model(name: str):
    """Return the workspace model ``name`` (cached until it is saved again)."""
    return _load_model(*model_key(name))


def get_recommender(model_name: str, ds_name: str | None):
    """Return a Recommender for the model, able to look up the dataset's users by id."""
    ds_stamp = dataset_key(ds_name)[2] if ds_name else 0
    return _recommender(root_key(), model_name, model_key(model_name)[2], ds_name, ds_stamp)


def active_dataset():
    """Return (name, dataset) of the active dataset, or (None, None) when the workspace has none."""
    name = st.session_state.get("dataset_name")
    if not name:
        return None, None
    try:
        return name, get_dataset(name)
    except CrossrecError as err:
        show_error(err)


def active_model():
    """Return (name, model) of the active model, or (None, None) when the workspace has none."""
    name = st.session_state.get("model_name")
    if not name:
        return None, None
    try:
        return name, get_model(name)
    except CrossrecError as err:
        show_error(err)


def require_dataset():
    """Return (name, dataset); without one, show a call to action and stop the page."""
    name, ds = active_dataset()
    if ds is None:
        st.info("No dataset yet. Load the demo store on Home or upload your own log on Data.", icon=":material/info:")
        st.page_link(PAGE_DATA, label="Upload a log", icon=":material/upload_file:")
        st.page_link(PAGE_HOME, label="Load the demo store", icon=":material/storefront:")
        st.stop()
    return name, ds


def require_model():
    """Return (name, model); without one, show a call to action and stop the page."""
    name, model = active_model()
    if model is None:
        st.info("No trained model yet. Train one first: it takes a minute or two on the demo store.", icon=":material/info:")
        st.page_link(PAGE_TRAIN, label="Train a model", icon=":material/model_training:")
        st.stop()
    return name, model


# -- uploads (keyed by Streamlit's file_id: a new upload is a new id; raw bytes are not hashed) --------


@st.cache_data(show_spinner="Reading the file...", max_entries=4)
def _upload_columns(_raw: bytes, name: str, file_id: str) -> list[str]:
    from crossrec_core.data.readers import read_table

    return [str(c) for c in read_table(_raw, name).columns]


def get_upload_columns(raw: bytes, name: str, file_id: str) -> list[str]:
    """Return the column names of an uploaded table (read once per upload)."""
    return _upload_columns(raw, name, file_id)


@st.cache_resource(show_spinner="Validating the log...", max_entries=2)
def _upload_dataset(_raw: bytes, name: str, _items_raw: bytes | None, items_name: str | None, key: tuple):
    from crossrec_core.data.load import load_log

    mapping = dict(key[2])
    return load_log(
        _raw, _items_raw, mapping=mapping, name=name.split(".", 1)[0],
        max_bytes=int(st.get_option("server.maxUploadSize")) * 1024 * 1024,
        interactions_name=name, items_name=items_name, pseudonymize=bool(key[3]) if len(key) > 3 else False,
    )


def get_upload_dataset(raw: bytes, name: str, items_raw: bytes | None, items_name: str | None, key: tuple):
    """Return the validated dataset of an upload; ``key`` = (log file_id, items file_id, mapping items, pseudonymise)."""
    return _upload_dataset(raw, name, items_raw, items_name, key)


@st.cache_data(show_spinner="Profiling the log...", max_entries=4)
def _upload_profile(_ds, key: tuple):
    from crossrec_core.data.profile import profile_dataset

    return profile_dataset(_ds)


def get_upload_profile(ds, key: tuple):
    """Return the DatasetProfile of an uploaded (not yet saved) dataset, cached by the upload key."""
    return _upload_profile(ds, key)


def require_pair():
    """Return (ds_name, ds, model_name, model); stop with a call to action or a plain message when the
    active model was trained on another catalogue than the active dataset."""
    ds_name, ds = require_dataset()
    model_name, model = require_model()
    try:
        model.check_compatible(ds)
    except CrossrecError as err:
        st.warning(str(err), icon=":material/warning:")
        st.page_link(PAGE_TRAIN, label="Train a model on this dataset", icon=":material/model_training:")
        st.stop()
    return ds_name, ds, model_name, model


# -- cached computations ----------------------------------------------------------------------------


@st.cache_data(show_spinner="Profiling the log...", max_entries=16)
def _profile(root: str, name: str, stamp: int):
    from crossrec_core.data.profile import profile_dataset

    return profile_dataset(_load_dataset(root, name, stamp))


def get_profile(name: str):
    """Return the DatasetProfile of a workspace dataset (cached)."""
    return _profile(*dataset_key(name))


@st.cache_data(show_spinner="Drawing the map...", max_entries=16)
def _projection(root: str, name: str, stamp: int, method: str):
    from crossrec_core.serving.projection import ProjectionConfig, project_items

    model = _load_model(root, name, stamp)
    return project_items(model.item_vectors(), ProjectionConfig(method=method), root=root)


def get_projection(model_name: str, method: str = "pca"):
    """Return the model's item map (PCA at once; UMAP from the disk cache or computed once)."""
    return _projection(*model_key(model_name), method)


def umap_ready(model_name: str) -> bool:
    """Return True when the model's UMAP map is already cached on disk (no computation needed)."""
    from crossrec_core.serving.projection import ProjectionConfig, cached_umap_exists

    return cached_umap_exists(get_model(model_name).item_vectors(), ProjectionConfig(method="umap"))


@st.cache_data(show_spinner="Placing users on the map...", max_entries=8)
def _user_vectors(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, max_users: int):
    model = _load_model(root, model_name, model_stamp)
    ds = _load_dataset(root, ds_name, ds_stamp)
    seqs = model.align(ds)
    n = min(ds.n_users, max_users)
    users = np.linspace(0, ds.n_users - 1, n).astype(np.int64) if n < ds.n_users else np.arange(ds.n_users)
    ends = seqs.offsets[1:][users]
    return users, model.user_vectors(seqs, users, ends)


def get_user_vectors(model_name: str, ds_name: str, max_users: int = 3000):
    """Return (user_idx (n,), user vectors (n, d)) for an evenly spread sample of the dataset's users."""
    return _user_vectors(*model_key(model_name), *dataset_key(ds_name)[1:], max_users)


@st.cache_data(show_spinner="Evaluating against the baselines...", max_entries=8)
def _evaluation(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, k: int, max_users: int):
    from crossrec_core.evaluation.baselines import CategoryTransitionRanker, ItemKNNRanker, PopularityRanker
    from crossrec_core.evaluation.evaluator import evaluate_rankers

    model = _load_model(root, model_name, model_stamp)
    ds = _load_dataset(root, ds_name, ds_stamp)
    rankers = {"crossrec": model, "popularity": PopularityRanker(), "item-kNN": ItemKNNRanker(),
               "category-transition": CategoryTransitionRanker()}
    return evaluate_rankers(ds, rankers, k=k, max_users=max_users)


def get_evaluation(model_name: str, ds_name: str, k: int = 10, max_users: int = 3000):
    """Return the EvaluationResult of the model against the baselines on the dataset (cached)."""
    return _evaluation(*model_key(model_name), *dataset_key(ds_name)[1:], k, max_users)


@st.cache_data(show_spinner="Sweeping thresholds...", max_entries=8)
def _threshold_curve(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int):
    from crossrec_core.evaluation.thresholds import threshold_curve

    return threshold_curve(_load_model(root, model_name, model_stamp), _load_dataset(root, ds_name, ds_stamp))


def get_threshold_curve(model_name: str, ds_name: str):
    """Return the model's ThresholdCurve on the dataset (cached)."""
    return _threshold_curve(*model_key(model_name), *dataset_key(ds_name)[1:])


@st.cache_data(show_spinner="Comparing category affinities...", max_entries=8)
def _affinities(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, top: int):
    from crossrec_core.evaluation.affinity import learned_affinity, observed_affinity

    model = _load_model(root, model_name, model_stamp)
    ds = _load_dataset(root, ds_name, ds_stamp)
    return observed_affinity(ds, top=top), learned_affinity(model, ds)


def get_affinities(model_name: str, ds_name: str, top: int = 20):
    """Return (observed, learned) category-affinity frames (cached)."""
    return _affinities(*model_key(model_name), *dataset_key(ds_name)[1:], top)


@st.cache_data(show_spinner="Checking the planted journeys...", max_entries=8)
def _journeys(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int):
    from crossrec_core.evaluation.affinity import journey_recall
    from crossrec_core.storage.datasets import load_extra

    journeys = load_extra(ds_name, "journeys", root=root)
    if journeys is None:
        return None
    return journey_recall(_load_model(root, model_name, model_stamp), _load_dataset(root, ds_name, ds_stamp), journeys)


def get_journey_report(model_name: str, ds_name: str):
    """Return the planted-journey recovery report, or None when the dataset has no planted journeys."""
    return _journeys(*model_key(model_name), *dataset_key(ds_name)[1:])


# -- sidebar ----------------------------------------------------------------------------------------


def _pick(key: str, names: list[str]) -> None:
    """Keep session_state[key] valid: the current value if it still exists, else the first name."""
    if st.session_state.get(key) not in names:
        st.session_state[key] = names[0] if names else None


def model_datasets() -> dict[str, tuple[str, ...]]:
    """Return {model name: the workspace datasets it was trained on} (JSON reads only, no torch)."""
    from crossrec_core.storage.lineage import trained_on

    return trained_on([m.name for m in model_infos()])


def model_label(name: str, lineage: dict[str, tuple[str, ...]]) -> str:
    """Return 'model · dataset it was trained on' for pickers (plain text)."""
    on = lineage.get(name, ())
    return f"{name} · {on[0] if on else 'another log'}"


def model_for_dataset(ds_name: str | None, lineage: dict[str, tuple[str, ...]]) -> str | None:
    """Return the newest saved model trained on ``ds_name``, or None when there is none."""
    from crossrec_core.storage.catalog import list_models  # newest first

    return next((m.name for m in list_models() if ds_name in lineage.get(m.name, ())), None)


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


def _switch_dataset(lineage: dict[str, tuple[str, ...]]) -> None:
    _copy("_sb_dataset", "dataset_name")
    name = st.session_state.dataset_name
    if name not in lineage.get(st.session_state.get("model_name"), ()):
        st.session_state.model_name = model_for_dataset(name, lineage) or st.session_state.get("model_name")


def _copy(src: str, dst: str) -> None:
    st.session_state[dst] = st.session_state[src]
    if dst in ("dataset_name", "model_name"):  # a new user space: forget the what-if edits
        st.session_state.whatif_add = []
        st.session_state.whatif_remove = []
        st.session_state.map_selection = []
        st.session_state.rec_user = None


def persist(widget_key: str, state_key: str) -> None:
    """on_change callback: copy a widget's value to a session key that survives page switches."""
    st.session_state[state_key] = st.session_state[widget_key]


def item_labels(titles: np.ndarray, ids: np.ndarray, categories: np.ndarray) -> list[str]:
    """Return 'title (category) [id]' labels for selectboxes (plain text; widgets never render HTML)."""
    t = pd.Series(titles, dtype=object).fillna("").astype(str)
    t = t.where(t.str.strip() != "", pd.Series(ids, dtype=object).astype(str))
    return (t.str.slice(0, 80) + " (" + pd.Series(categories, dtype=object).astype(str) + ") [" +
            pd.Series(ids, dtype=object).astype(str) + "]").tolist()


def history_frame(ds, user_id: str | None, add=(), remove=()) -> pd.DataFrame:
    """Return the history to recommend from as a frame (item_id, event, timestamp in int seconds), oldest first.

    The shopper's own events keep their real times and event types, as in training and the CLI (the
    encoder reads the time gaps); ``remove`` drops item ids; ``add`` appends item ids one second apart
    just after the shopper's last event (at 1, 2, ... for a history built from nothing).
    """
    from crossrec_core.data.dataset import DEFAULT_EVENT

    items = np.zeros(0, np.int64)
    times, events, last = np.zeros(0, np.int64), np.zeros(0, object), 0
    if user_id is not None:
        u = int(ds.user_index([user_id])[0])
        if u >= 0:
            items, t, e = ds.history(u)
            times, events = np.asarray(t, np.int64), ds.event_names[e]
            last = int(times[-1]) if len(times) else 0
    own = pd.DataFrame({"item_id": ds.item_ids[items].astype(str), "event": events, "timestamp": times})
    own = own[~own["item_id"].isin([str(i) for i in remove])]
    added = pd.DataFrame({"item_id": [str(i) for i in add], "event": DEFAULT_EVENT,
                          "timestamp": last + np.arange(1, len(add) + 1, dtype=np.int64)})
    return pd.concat([own, added], ignore_index=True).astype({"timestamp": np.int64})


def current_history(ds, user_id: str | None) -> pd.DataFrame:
    """Return the history to recommend from: the shopper's events with the what-if edits (history_frame)."""
    return history_frame(ds, user_id, st.session_state.get("whatif_add", []), st.session_state.get("whatif_remove", []))


def history_sequences(model, history: pd.DataFrame):
    """Return a one-user Sequences of a history frame's known items, with its event types and times (the map
    places the shopper from the same input the recommender reads)."""
    from crossrec_core.serving.scoring import one_user_sequences

    idx = model.item_index(history["item_id"].to_numpy(dtype=object)) if len(history) else np.zeros(0, np.int64)
    known = idx >= 0
    events = model.event_index(history["event"].to_numpy(dtype=object)[known])
    return one_user_sequences(idx[known].astype(np.int32), np.asarray(events, np.int16),
                              history["timestamp"].to_numpy(np.int64)[known])


def recommend_options() -> dict:
    """Return the shared recommendation settings (Recommendations sliders) as recommend() keywords."""
    t = float(st.session_state.get("threshold", 0.0))
    return {
        "k": int(st.session_state.get("k", 10)),
        "cross_category_only": bool(st.session_state.get("cross_only", False)),
        "exclude_categories": tuple(st.session_state.get("excluded_categories", [])),
        "threshold": t if t > 0 else None,
        "diversity": float(st.session_state.get("diversity", 0.0)),
    }


def user_options(ds, search: str = "", limit: int = 500, include_current: bool = True) -> list[str]:
    """Return up to ``limit`` user ids containing ``search`` (case-insensitive); with ``include_current``,
    the shopper shown now (``rec_user``) is always among them, first when the search leaves it out."""
    ids = pd.Series(ds.user_ids, dtype=object).astype(str)
    if search:
        ids = ids[ids.str.contains(search, case=False, regex=False)]
    out = ids.head(limit).tolist()
    cur = st.session_state.get("rec_user")
    if include_current and cur is not None and cur not in out:
        out.insert(0, cur)
    return out
