"""Cached computations of the Evaluation page: the evaluation and threshold curve keyed on what changes
scores, the lead sentence, which saved models can be compared on a dataset, the two-model comparison,
saving a threshold with the model.

Why a separate key: common.py keys a model on its folder's mtime, and saving a threshold (an atomic write
of threshold.json: a new directory entry) changes that mtime, so the model reloads and ``model.threshold``
is seen at once. The evaluation does not depend on the threshold, so it is keyed here on the model's
*scoring* files only (``scoring_stamp``): saving a threshold does not re-run a minute-long evaluation.
"""

from __future__ import annotations

import os

import numpy as np
import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.storage.workspace import models_dir
from pages import common
from pages.common import dataset_key, get_dataset, get_model, md_escape, model_infos, root_key
from pages.evaluation_view import VERDICT_NOISE, VERDICT_REAL, comparison_frame

THRESHOLD_FILE = "threshold.json"


def scoring_stamp(model_name: str) -> int:
    """Return the newest mtime (ns) of the model's files that change its scores (threshold.json excluded)."""
    folder = models_dir() / model_name
    try:
        return max((e.stat().st_mtime_ns for e in os.scandir(folder)
                    if e.is_file() and e.name != THRESHOLD_FILE and not e.name.startswith(".")), default=0)
    except OSError:
        return 0


def scores_key(model_name: str, ds_name: str) -> tuple:
    """Return (root, model, scoring stamp, dataset, dataset stamp): the cache key of everything measured."""
    return root_key(), model_name, scoring_stamp(model_name), *dataset_key(ds_name)[1:]


def get_evaluation(model_name: str, ds_name: str, k: int = 10, max_users: int = 3000):
    """Return common.get_evaluation's EvaluationResult, cached until the model's scoring files change."""
    return common._evaluation(*scores_key(model_name, ds_name), k, max_users)


def get_threshold_curve(model_name: str, ds_name: str):
    """Return common.get_threshold_curve's ThresholdCurve, cached until the model's scoring files change."""
    return common._threshold_curve(*scores_key(model_name, ds_name))


@st.cache_data(show_spinner=False, max_entries=32)
def lead_sentence(scores: tuple, subset: str, _result) -> str:
    """Return one sentence: the model's NDCG@10 lead over the best other method, with its 95% interval.

    Cached per (model, dataset, subset) with stamped keys, so a retrained model never shows a stale
    sentence; the bootstrap would otherwise rerun on every slider move."""
    result = _result
    metric = f"NDCG@{result.k}"
    mine = result.methods[0]
    others = [m for m in result.methods[1:] if m in result.per_user]
    if not others or mine not in result.per_user:
        return ""
    best = max(others, key=lambda m: result.value(m, subset, metric))
    d = result.difference(mine, best, subset, metric)
    verdict = (VERDICT_REAL if d.significant else
               f"{VERDICT_NOISE}: these shoppers cannot tell the two apart, more are needed")
    return (f"{md_escape(mine)} vs the best other method ({md_escape(best)}): {metric} {d.mean:+.3f}, 95% interval "
            f"{d.low:+.3f} to {d.high:+.3f} (paired bootstrap over shoppers): {verdict}.")


@st.cache_data(show_spinner=False, max_entries=64)
def _knows_items(root: str, model_name: str, stamp: int, ds_name: str, ds_stamp: int) -> bool:
    import pandas as pd

    from crossrec_core.models.trained import MIN_KNOWN_EVENT_SHARE

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
    from crossrec_core.evaluation.evaluator import evaluate_rankers

    result = evaluate_rankers(get_dataset(ds_name), {a: get_model(a), b: get_model(b)}, k=k, max_users=max_users)
    return comparison_frame(result, a, b), {m: result.calibration.get(m, {}) for m in (a, b)}, result.subset_sizes


def get_comparison(a: str, b: str, ds_name: str, k: int = 10, max_users: int = 3000):
    """Return (table, {model: calibration report}, subset sizes) of two models on one dataset, both evaluated
    in one call on the same shoppers. Raises ModelError (the leak guard) when a model was trained on the
    dataset's held-out targets."""
    return _comparison(root_key(), a, scoring_stamp(a), b, scoring_stamp(b), *dataset_key(ds_name)[1:], k, max_users)


def save_threshold_callback(model_name: str) -> None:
    """on_click: save the session threshold with the model; the outcome is shown on the next run."""
    from crossrec_core.storage.registry import save_threshold

    t = float(st.session_state.get("threshold", 0.0))
    try:
        save_threshold(models_dir() / model_name, t)
        st.session_state["_eval_saved"] = ("ok", f"Saved threshold {t:.3g} with {md_escape(model_name)}: Recommendations and "
                                                  "`crossrec recommend --threshold model` start from it.")
    except CrossrecError as err:
        st.session_state["_eval_saved"] = ("error", str(err))


def use_threshold_callback(value: float) -> None:
    """on_click: set the shared session threshold (Recommendations and Evaluation) to ``value``."""
    st.session_state["threshold"] = float(value)  # exact: not snapped to the slider grid
