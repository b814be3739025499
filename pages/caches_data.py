"""Cached computations of the Data, Map and Recommendations pages: uploads, profiles, maps, what-if labels.

The router never lists this file as a page. Uploads are keyed by Streamlit's file_id (a new upload is a new
id; raw bytes are not hashed); everything else by the stamped keys of pages/caches.py.
"""

from __future__ import annotations

from types import MappingProxyType

import streamlit as st

from crossrec_core.data.load import load_log
from crossrec_core.data.profile import profile_dataset
from crossrec_core.data.readers import read_table
from crossrec_core.serving.projection import ProjectionConfig, cached_umap_exists, project_items
from crossrec_core.serving.shoppers import MAP_USERS, catalogue_labels, sample_user_vectors, whatif_candidates
from pages.caches import dataset_key, get_model, load_dataset_cached, load_model_cached, model_key


@st.cache_data(show_spinner="Reading the file...", max_entries=4)
def _upload_columns(_raw: bytes, name: str, file_id: str) -> list[str]:
    return [str(c) for c in read_table(_raw, name).columns]


def get_upload_columns(raw: bytes, name: str, file_id: str) -> list[str]:
    """Return the column names of an uploaded table (read once per upload)."""
    return _upload_columns(raw, name, file_id)


@st.cache_resource(show_spinner="Validating the log...", max_entries=2)
def _upload_dataset(_raw: bytes, name: str, _items_raw: bytes | None, items_name: str | None, key: tuple):
    return load_log(
        _raw, _items_raw, mapping=dict(key[2]), items_mapping=dict(key[4]) if len(key) > 4 else None, name=name.split(".", 1)[0],
        max_bytes=int(st.get_option("server.maxUploadSize")) * 1024 * 1024,
        interactions_name=name, items_name=items_name, pseudonymize=bool(key[3]) if len(key) > 3 else False,
    )


def get_upload_dataset(raw: bytes, name: str, items_raw: bytes | None, items_name: str | None, key: tuple):
    """Return the validated dataset of an upload; ``key`` = (log id, items id, mapping, pseudonymise, items mapping)."""
    return _upload_dataset(raw, name, items_raw, items_name, key)


@st.cache_data(show_spinner="Profiling the log...", max_entries=4)
def _upload_profile(_ds, key: tuple):
    return profile_dataset(_ds)


def get_upload_profile(ds, key: tuple):
    """Return the DatasetProfile of an uploaded (not yet saved) dataset, cached by the upload key."""
    return _upload_profile(ds, key)


@st.cache_data(show_spinner="Profiling the log...", max_entries=16)
def _profile(root: str, name: str, stamp: int):
    return profile_dataset(load_dataset_cached(root, name, stamp))


def get_profile(name: str):
    """Return the DatasetProfile of a workspace dataset (cached)."""
    return _profile(*dataset_key(name))


@st.cache_data(show_spinner="Drawing the map...", max_entries=16)
def _projection(root: str, name: str, stamp: int, method: str):
    model = load_model_cached(root, name, stamp)
    return project_items(model.item_vectors(), ProjectionConfig(method=method), root=root)


def get_projection(model_name: str, method: str = "pca"):
    """Return the model's item map (PCA at once; UMAP from the disk cache or computed once)."""
    return _projection(*model_key(model_name), method)


def umap_ready(model_name: str) -> bool:
    """Return True when the model's UMAP map is already cached on disk (no computation needed)."""
    return cached_umap_exists(get_model(model_name).item_vectors(), ProjectionConfig(method="umap"))


@st.cache_data(show_spinner="Placing users on the map...", max_entries=8)
def _user_vectors(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, max_users: int):
    return sample_user_vectors(load_model_cached(root, model_name, model_stamp),
                               load_dataset_cached(root, ds_name, ds_stamp), max_users)


def get_user_vectors(model_name: str, ds_name: str, max_users: int = MAP_USERS):
    """Return (user_idx (n,), user vectors (n, d)) for an evenly spread sample of the dataset's users."""
    return _user_vectors(*model_key(model_name), *dataset_key(ds_name)[1:], max_users)


@st.cache_resource(show_spinner=False, max_entries=32)
def _whatif_labels(root: str, name: str, stamp: int, added: tuple[str, ...]):
    model = load_model_cached(root, name, stamp)
    return MappingProxyType(catalogue_labels(model, whatif_candidates(model, added)))  # shared: read-only


def get_whatif_labels(model_name: str, added) -> MappingProxyType:
    """Return {item_id: label} of the products offered to add to a history (built once per model and additions)."""
    return _whatif_labels(*model_key(model_name), tuple(map(str, added)))
