"""P(next category | history): the recent flow mixed with the last two categories and the shopper's habit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.evaluation.evaluator import split_targets
from crossrec_core.models.category_history import RECENT_ONLY, category_parts, fit_category_history, fit_mix
from crossrec_core.models.prior import build_item_prior, category_lift, recent_flow
from crossrec_core.storage import registry
from crossrec_core.training.loop import train_model

C = 4
ITEMS_PER_CATEGORY = 6


def second_order_log(n_users: int = 300, length: int = 12, seed: int = 0):
    """Return (interactions, items): the next category is (previous + last) mod 4, so the last category
    alone says little and the last two say everything."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        cats = list(rng.integers(0, C, 2))
        while len(cats) < length:
            cats.append((cats[-2] + cats[-1]) % C)
        for t, c in enumerate(cats):
            rows.append((f"u{u}", f"c{c}-{rng.integers(ITEMS_PER_CATEGORY)}", t, "view"))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    items = pd.DataFrame({"item_id": [f"c{c}-{i}" for c in range(C) for i in range(ITEMS_PER_CATEGORY)]})
    items["category"] = items["item_id"].str.split("-").str[0]
    items["title"] = items["item_id"]
    return inter, items


def _tables(ds):
    split = ds.leave_last_out()
    train = ds.seqs.truncate(split.train_end)
    prior = build_item_prior(np.bincount(train.items, minlength=ds.n_items), ds.item_category,
                             train.category_transitions(ds.item_category, ds.n_categories))
    return split, prior, fit_category_history(train, ds.item_category, prior.transition_proba.shape[0], prior.category_prior)


def _top_category_hits(ds, prior, history) -> float:
    t = split_targets(ds, "test")
    lift = category_lift(prior, ds.item_category, ds.seqs, t.users, t.ends, history=history)
    return float(np.mean(prior.category_bucket[np.argmax(lift, axis=1)] == prior.category_bucket[t.target_category]))


def test_em_recovers_the_weights_of_a_known_mixture():
    rng = np.random.default_rng(1)
    parts = rng.dirichlet(np.full(6, 0.3), size=(3, 4000))  # (3, B, 6): three different estimates per row
    truth = np.array([0.2, 0.5, 0.3])
    which = rng.choice(3, size=4000, p=truth)
    nxt = np.array([rng.choice(6, p=parts[k, b]) for b, k in enumerate(which)])
    mix = fit_mix(parts, nxt)
    assert mix.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(mix - truth).max() < 0.06


def test_a_second_order_log_puts_the_weight_on_the_last_two_and_finds_the_next_category():
    ds = from_frames(*second_order_log(), name="second-order")
    split, prior, history = _tables(ds)
    users, ends = split.valid_users.astype(np.int64), split.valid_pos
    recent, _ = recent_flow(prior, ds.item_category, ds.seqs, users, ends)
    parts = category_parts(history, recent, prior.transition_proba.astype(np.float64), ds.item_category, ds.seqs, users, ends)
    mix = fit_mix(parts, ds.item_category[ds.seqs.items[ends]])
    assert mix[1] > 0.8, mix  # the last two carry the signal on this log
    mixed = _top_category_hits(ds, prior, history.with_mix(mix))
    recent_only = _top_category_hits(ds, prior, history)
    assert mixed > 0.95
    assert recent_only < 0.6  # the last category alone cannot tell


def test_weights_one_zero_zero_give_exactly_the_recent_flow():
    ds = from_frames(*second_order_log(n_users=60), name="second-order")
    _, prior, history = _tables(ds)
    t = split_targets(ds, "test")
    assert history.recent_only and np.array_equal(history.mix, RECENT_ONLY)
    np.testing.assert_array_equal(
        category_lift(prior, ds.item_category, ds.seqs, t.users, t.ends, history=history),
        category_lift(prior, ds.item_category, ds.seqs, t.users, t.ends),
    )


def test_training_fits_the_mixture_and_a_saved_model_keeps_it(tmp_path):
    ds = from_frames(*second_order_log(n_users=120), name="second-order")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                      train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1, seed=3))
    model = train_model(ds, cfg, name="second-order")
    mix = np.asarray(model.metrics["valid"]["category_mix"])
    assert mix.sum() == pytest.approx(1.0, abs=1e-3) and mix[1] > 0.5
    assert model.metrics["valid"]["category_mix_on"] and not model.category_history.recent_only
    loaded = registry.load_model(registry.save_model(model, tmp_path / "m"))
    np.testing.assert_allclose(loaded.category_history.mix, model.category_history.mix)
    np.testing.assert_array_equal(loaded.category_history.pair_keys, model.category_history.pair_keys)
    t = split_targets(ds, "test")
    seqs = loaded.align(ds)
    np.testing.assert_allclose(loaded.category_lift(seqs, t.users, t.ends), model.category_lift(model.align(ds), t.users, t.ends), rtol=1e-6)


def test_training_without_the_mixture_keeps_the_recent_flow(tmp_path):
    ds = from_frames(*second_order_log(n_users=60), name="second-order")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                      train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1, seed=3, category_mix=False))
    model = train_model(ds, cfg, name="flow-only")
    assert model.category_history.recent_only and "category_mix" not in model.metrics["valid"]


def test_a_mixture_that_does_not_beat_the_flow_on_validation_is_not_kept():
    inter, items = second_order_log(n_users=60)
    items["category"] = "Everything"  # one category: the category term cannot change a ranking, so it ties
    ds = from_frames(inter, items, name="one-category")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                      train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1, seed=3))
    model = train_model(ds, cfg, name="one-category")
    assert model.metrics["valid"]["category_mix_on"] is False
    assert model.category_history.recent_only
