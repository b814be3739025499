"""Early stopping on retrieval with its item-neighbour term (training/stopping.py)."""

from __future__ import annotations

import numpy as np
import pytest

from crossrec_core.evaluation.metrics import ndcg_hr
import crossrec_core.training.stopping as stopping
from crossrec_core.training.stopping import STOP_GRID, better, neighbour_terms, stopping_figures
from crossrec_core.training.tuning import fit_neighbour_tables, rank_targets, valid_ranks
from tests.test_train import trained  # noqa: F401  (the module-scoped trained model on the pattern log)


@pytest.mark.parametrize("sample", [False, True])
def test_stopping_figures_match_a_dense_ranking_of_every_variant(trained, sample, monkeypatch):  # noqa: F811
    """The encoders' figure is the one early stopping used before (every validation shopper); the stopping figure
    is the best of the encoders alone and each table at each weight, ranked densely here, on a seeded sample of
    the shoppers when every variant for all of them would pass the cap."""
    ds, model, _ = trained
    if sample:  # room for about 150 of the 240 validation shoppers
        monkeypatch.setattr(stopping, "STOP_MAX_CELLS", 150 * ds.n_items * (1 + 2 * len(STOP_GRID)))
        monkeypatch.setattr(stopping, "STOP_MIN_USERS", 100)
    split = ds.leave_last_out()
    users, ends = split.valid_users.astype(np.int64), split.valid_pos
    targets = ds.seqs.items[ends].astype(np.int64)
    tables = list(fit_neighbour_tables(ds, ds.seqs.truncate(split.train_end)))
    terms = neighbour_terms(tables, ds.seqs, users, ends, ds.n_items)
    saved = model.knn
    model.knn = None  # as during training: no neighbour term of its own yet
    try:
        got = stopping_figures(model, ds.seqs, users, ends, targets, terms)
        base = model.user_vectors(ds.seqs, users, ends) @ model.item_vectors().T
        encoders = ndcg_hr(valid_ranks(model, ds.seqs, users, ends, targets))["ndcg10"]
        none = stopping_figures(model, ds.seqs, users, ends, targets, None)
    finally:
        model.knn = saved
    assert got["ndcg10"] == encoders
    r = terms.rows
    assert len(r) == (150 if sample else len(users))
    dense = [ndcg_hr(rank_targets(base[r], ds.seqs, users[r], ends[r], targets[r]))["ndcg10"]]
    for t in tables:
        nb = t.score_histories(ds.seqs, users[r], ends[r])
        dense += [ndcg_hr(rank_targets(base[r] + np.float32(w) * nb, ds.seqs, users[r], ends[r], targets[r]))["ndcg10"] for w in STOP_GRID]
    assert np.isclose(got["ndcg10_stop"], max(dense), atol=1e-9)
    assert got["stop_variant"] == int(np.argmax(np.array(dense) > max(dense) - 1e-9))
    # on this log (a_i is always followed by b_i) a neighbour table ranks every target first, the encoders do not
    assert got["ndcg10_stop"] == 1.0 and got["stop_variant"] > 0 and got["ndcg10"] < 1.0
    assert none["ndcg10_stop"] == none["ndcg10"] == got["ndcg10"] and none["stop_variant"] == 0


def test_an_epoch_is_better_on_the_stopping_figure_then_on_the_encoders_alone():
    best = {"ndcg10": 0.5, "encoders": 0.2}
    assert better({"ndcg10_stop": 0.51, "ndcg10": 0.1}, best)  # a higher stopping figure wins
    assert not better({"ndcg10_stop": 0.49, "ndcg10": 0.9}, best)  # a lower one loses, whatever the encoders
    assert better({"ndcg10_stop": 0.5, "ndcg10": 0.3}, best)  # a tie: the better encoders win
    assert not better({"ndcg10_stop": 0.5, "ndcg10": 0.2}, best)
    assert not better({"ndcg10_stop": 0.5, "ndcg10": 0.9}, {"ndcg10": 0.5})  # a checkpoint from before: ties keep it


def test_the_encoders_keep_learning_where_the_neighbour_term_alone_is_perfect(trained):  # noqa: F811
    """On the pattern log the stopping figure is 1.0 from the first epoch; the encoders still train on."""
    _, model, _ = trained
    hist = model.metrics["history"]
    assert all(h["ndcg10_stop"] == 1.0 for h in hist)
    assert model.metrics["best_epoch"] > 1 and model.metrics["valid"]["hr10"] >= 0.8
