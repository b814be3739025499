"""Cached comparisons of the Evaluation page: the model's lead over the best baseline in one sentence, which
saved models can be compared on a dataset, and two models evaluated together.

Keys carry each model's scoring stamp (pages/evaluation_cache.py), so a retrained model is never shown with
a stale comparison. The router never lists this file as a page.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from crossrec_core.evaluation import verdicts
from crossrec_core.evaluation.evaluator import evaluate_rankers
from crossrec_core.models.trained import MIN_KNOWN_EVENT_SHARE
from crossrec_core.storage.workspace import models_dir
from pages.caches import dataset_key, get_dataset, get_model, model_infos, root_key
from pages.evaluation_cache import scoring_stamp
from pages.evaluation_view import comparison_frame
from pages.state import md_escape


@st.cache_data(show_spinner=False, max_entries=32)
def lead_sentence(scores: tuple, subset: str, _result) -> str:
    """Return one sentence: the model's NDCG@10 lead over the best other method, with its 95% interval.

    Cached per (model, dataset, subset) with stamped keys, so a retrained model never shows a stale
    sentence; the bootstrap would otherwise rerun on every slider move."""
    return verdicts.lead_sentence(_result, subset, md_escape)


def reach_sentence(result, subset: str) -> str:
    """Return the sentence saying the model reaches clearly fewer new categories than another method, or ''."""
    return verdicts.reach_sentence(result, subset, md_escape)


@st.cache_data(show_spinner=False, max_entries=64)
def _knows_items(root: str, model_name: str, stamp: int, ds_name: str, ds_stamp: int) -> bool:
    try:
        known = pd.read_parquet(models_dir() / model_name / "items.parquet", columns=["item_id"])["item_id"]
    except (OSError, ValueError, KeyError):
        return False
    ds = get_dataset(ds_name)
    if ds.n_events == 0:
        return True
    mask = np.isin(np.asarray(ds.item_ids, dtype=object).astype(str), known.astype(str).to_numpy())
    return float(mask[ds.seqs.items].mean()) >= MIN_KNOWN_EVENT_SHARE  # the same rule as check_compatible


def comparable_models(ds_name: str) -> list[str]:
    """Return the saved models whose catalogue covers the dataset's events (read from items.parquet, no torch)."""
    return [m.name for m in model_infos()
            if _knows_items(root_key(), m.name, scoring_stamp(m.name), *dataset_key(ds_name)[1:])]


@st.cache_data(show_spinner="Evaluating both models...", max_entries=8)
def _comparison(root: str, a: str, a_stamp: int, b: str, b_stamp: int, ds_name: str, ds_stamp: int, k: int,
                max_users: int):
    result = evaluate_rankers(get_dataset(ds_name), {a: get_model(a), b: get_model(b)}, k=k, max_users=max_users)
    return comparison_frame(result, a, b), {m: result.calibration.get(m, {}) for m in (a, b)}, result.subset_sizes


def get_comparison(a: str, b: str, ds_name: str, k: int = 10, max_users: int = 3000):
    """Return (table, {model: calibration report}, subset sizes) of two models on one dataset, both evaluated
    in one call on the same shoppers. Raises ModelError (the leak guard) when a model was trained on the
    dataset's held-out targets."""
    return _comparison(root_key(), a, scoring_stamp(a), b, scoring_stamp(b), *dataset_key(ds_name)[1:], k, max_users)
