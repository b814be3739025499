"""Cached computations of the Evaluation page: the evaluation against the baselines, the threshold curve,
category affinities and the planted journeys.

Why the evaluation and the threshold curve have their own key: pages/caches.py keys a model on its folder's
mtime, and saving a threshold (an atomic write of threshold.json: a new directory entry) changes that mtime,
so the model reloads and ``model.threshold`` is seen at once. Neither depends on the threshold, so they are
keyed here on the model's *scoring* files only (``scoring_stamp``): saving a threshold does not re-run a
minute-long evaluation. The router never lists this file as a page.
"""

from __future__ import annotations

import os

import streamlit as st

from crossrec_core.evaluation.affinity import journey_recall, learned_affinity, observed_affinity
from crossrec_core.evaluation.baselines import default_baselines
from crossrec_core.evaluation.evaluator import evaluate_rankers
from crossrec_core.evaluation.thresholds import threshold_curve
from crossrec_core.storage.datasets import load_extra
from crossrec_core.evaluation.report import record_evaluation
from crossrec_core.storage.model_card import TEST_FILE
from crossrec_core.storage.workspace import models_dir
from pages.caches import dataset_key, load_dataset_cached, load_model_cached, model_key, root_key

THRESHOLD_FILE = "threshold.json"
# Shoppers measured: the evaluation table and the threshold curve take the same seeded sample, so the page
# never states two different shopper counts for one test split.
EVAL_MAX_USERS = 3000


def scoring_stamp(model_name: str) -> int:
    """Return the newest mtime (ns) of the model's files that change its scores (the threshold and the
    recorded test figures excluded: recording them must not re-run the evaluation they come from)."""
    folder = models_dir() / model_name
    try:
        return max((e.stat().st_mtime_ns for e in os.scandir(folder)
                    if e.is_file() and e.name not in (THRESHOLD_FILE, TEST_FILE) and not e.name.startswith(".")), default=0)
    except OSError:
        return 0


def scores_key(model_name: str, ds_name: str) -> tuple:
    """Return (root, model, scoring stamp, dataset, dataset stamp): the cache key of everything measured."""
    return root_key(), model_name, scoring_stamp(model_name), *dataset_key(ds_name)[1:]


@st.cache_data(show_spinner="Evaluating against the baselines...", max_entries=8)
def _evaluation(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, k: int, max_users: int):
    rankers = {"crossrec": load_model_cached(root, model_name, model_stamp), **default_baselines()}
    return evaluate_rankers(load_dataset_cached(root, ds_name, ds_stamp), rankers, k=k, max_users=max_users)


def get_evaluation(model_name: str, ds_name: str, k: int = 10):
    """Return the EvaluationResult of the model against the baselines on the dataset, cached until the
    model's scoring files change; its test figures become the model card's (record_test_figures)."""
    result = _evaluation(*scores_key(model_name, ds_name), k, EVAL_MAX_USERS)
    record_evaluation(model_name, ds_name, result)  # the card reads the folder: Home and Train show them at once
    return result


@st.cache_data(show_spinner="Sweeping thresholds...", max_entries=8)
def _threshold_curve(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, max_users: int):
    model, ds = load_model_cached(root, model_name, model_stamp), load_dataset_cached(root, ds_name, ds_stamp)
    return threshold_curve(model, ds, max_users=max_users)


def get_threshold_curve(model_name: str, ds_name: str):
    """Return the model's ThresholdCurve on the dataset (the evaluation's shoppers), cached until the model's
    scoring files change."""
    return _threshold_curve(*scores_key(model_name, ds_name), EVAL_MAX_USERS)


@st.cache_data(show_spinner="Comparing category affinities...", max_entries=8)
def _affinities(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int, top: int):
    ds = load_dataset_cached(root, ds_name, ds_stamp)
    return observed_affinity(ds, top=top), learned_affinity(load_model_cached(root, model_name, model_stamp), ds)


def get_affinities(model_name: str, ds_name: str, top: int = 20):
    """Return (observed, learned) category-affinity frames (cached)."""
    return _affinities(*model_key(model_name), *dataset_key(ds_name)[1:], top)


@st.cache_data(show_spinner="Checking the planted journeys...", max_entries=8)
def _journeys(root: str, model_name: str, model_stamp: int, ds_name: str, ds_stamp: int):
    journeys = load_extra(ds_name, "journeys", root=root)
    if journeys is None:
        return None
    model, ds = load_model_cached(root, model_name, model_stamp), load_dataset_cached(root, ds_name, ds_stamp)
    return journey_recall(model, ds, journeys)


def get_journey_report(model_name: str, ds_name: str):
    """Return the planted-journey recovery report, or None when the dataset has no planted journeys."""
    return _journeys(*model_key(model_name), *dataset_key(ds_name)[1:])
