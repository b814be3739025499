"""Cached loaders of the studio (workspace listings, datasets, models, recommenders); not a page.

Caching is split by kind (STYLE.md): loaded datasets, models and recommenders are resources (shared, never
mutated); frames, maps and metric tables are data (caches_data.py, evaluation_cache.py). Every key holds the
workspace path and the entry's on-disk stamp: a re-saved entry reloads, two workspaces never share entries.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from crossrec_core.serving.recommender import Recommender
from crossrec_core.storage.catalog import list_models
from crossrec_core.storage.datasets import list_datasets, load_dataset
from crossrec_core.storage.lineage import trained_on
from crossrec_core.storage.registry import load_model
from crossrec_core.storage.workspace import datasets_dir, models_dir, workspace_root


def stamp(path: Path) -> int:
    """Return the mtime (ns) of ``path``, 0 when it is gone."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def root_key() -> str:
    """Return the active workspace path (part of every cache key)."""
    return str(workspace_root())


def dataset_names() -> list[str]:
    """Return the names of the workspace's datasets, sorted."""
    return sorted(info.name for info in list_datasets())


def model_infos() -> list:
    """Return the workspace's ModelInfo entries, sorted by name."""
    return sorted(list_models(), key=lambda m: m.name)


def model_names() -> list[str]:
    return [m.name for m in model_infos()]


def model_datasets() -> dict[str, tuple[str, ...]]:
    """Return {model name: the workspace datasets it was trained on} (JSON reads only, no torch)."""
    return trained_on([m.name for m in model_infos()])


def model_for_dataset(ds_name: str | None, lineage: dict[str, tuple[str, ...]]) -> str | None:
    """Return the newest saved model trained on ``ds_name``, or None when there is none."""
    return next((m.name for m in list_models() if ds_name in lineage.get(m.name, ())), None)  # newest first


@st.cache_resource(show_spinner="Loading dataset...", max_entries=8)
def load_dataset_cached(root: str, name: str, stamp: int):
    return load_dataset(name, root=root)


@st.cache_resource(show_spinner="Loading model...", max_entries=8)
def load_model_cached(root: str, name: str, stamp: int):
    return load_model(Path(root) / "models" / name)


@st.cache_resource(show_spinner=False, max_entries=8)
def _recommender(root: str, model_name: str, model_stamp: int, ds_name: str | None, ds_stamp: int):
    model = load_model_cached(root, model_name, model_stamp)
    ds = load_dataset_cached(root, ds_name, ds_stamp) if ds_name else None
    return Recommender(model, ds)


def dataset_key(name: str) -> tuple[str, str, int]:
    """Return the cache key (root, name, stamp) of a workspace dataset."""
    return root_key(), name, stamp(datasets_dir() / name)


def model_key(name: str) -> tuple[str, str, int]:
    """Return the cache key (root, name, stamp) of a workspace model."""
    return root_key(), name, stamp(models_dir() / name)


def get_dataset(name: str):
    """Return the workspace dataset ``name`` (cached until it is saved again)."""
    return load_dataset_cached(*dataset_key(name))


def get_model(name: str):
    """Return the workspace model ``name`` (cached until it is saved again)."""
    return load_model_cached(*model_key(name))


def get_recommender(model_name: str, ds_name: str | None):
    """Return a Recommender for the model, able to look up the dataset's users by id."""
    ds_stamp = dataset_key(ds_name)[2] if ds_name else 0
    return _recommender(root_key(), model_name, model_key(model_name)[2], ds_name, ds_stamp)
