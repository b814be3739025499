"""Training: learns an obvious cross-category pattern, reproducible, checkpoints + resume, losses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.storage.registry import read_json
from crossrec_core.models.features import N_FEATURES
from crossrec_core.serving.recommender import Recommender
from crossrec_core.training.loop import train_model, training_windows
from crossrec_core.training.progress import TrainProgress

N_PAIRS = 30


def pattern_dataset(n_users: int = 240, seed: int = 0):
    """Users buy a_i (category A) then b_i (category B), for 2 to 4 pairs, then one random item.

    Leave-last-out: the valid target is the b of the last pair, right after its a: perfectly predictable.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n_pairs = int(rng.integers(2, 5))
        pairs = rng.choice(N_PAIRS, n_pairs + 1, replace=False)
        seq = [x for p in pairs[:-1] for x in (f"a{p}", f"b{p}")] + [f"a{pairs[-1]}"]
        for t, item in enumerate(seq):
            rows.append((f"u{u}", item, t, "purchase" if item[0] == "b" else "view"))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    items = pd.DataFrame(
        {
            "item_id": [f"a{i}" for i in range(N_PAIRS)] + [f"b{i}" for i in range(N_PAIRS)],
            "category": ["A"] * N_PAIRS + ["B"] * N_PAIRS,
            "title": [f"tent model {i}" for i in range(N_PAIRS)] + [f"boots model {i}" for i in range(N_PAIRS)],
        }
    )
    return from_frames(inter, items, name="pattern")


def small_config(**train) -> ModelConfig:
    base = dict(epochs=12, patience=12, batch_size=64, lr=5e-3, seed=3, device="cpu", fusion_epochs=1)
    base.update(train)
    return ModelConfig(
        item=ItemEncoderConfig(dim=32, use_text=False, id_dropout=0.0),
        user=UserEncoderConfig(dim=32, max_len=8, dropout=0.1),
        train=TrainConfig(**base),
    )


@pytest.fixture(scope="module")
def trained():
    ds = pattern_dataset()
    events = []
    model = train_model(ds, small_config(), on_progress=events.append)
    return ds, model, events


def test_learns_cross_category_pattern(trained):
    ds, model, _ = trained
    assert model.metrics["valid"]["hr10"] >= 0.8  # random ranking: about 0.18
    assert model.metrics["valid"]["ndcg10"] >= 0.5
    # a history ending in tent a7 puts boots b7 first
    from crossrec_core.serving.scoring import one_user_sequences

    seqs = one_user_sequences(model.item_index(["a7"]))
    scores = model.score_histories(seqs, np.array([0]), np.array([1]))
    assert model.item_ids[scores[0].argmax()] == "b7"


def test_metrics_and_progress(trained):
    _, model, events = trained
    m = model.metrics
    assert set(m) >= {"valid", "history", "best_epoch", "train_seconds", "trained_at"}
    assert m["trained_at"].endswith(" UTC") and m["trained_at"][:2] == "20"
    assert 1 <= m["best_epoch"] <= len(m["history"]) <= 12
    best = max(h["ndcg10"] for h in m["history"])
    assert m["valid"]["ndcg10"] == best
    phases = {e.phase for e in events}
    assert {"train", "valid", "fusion candidates", "fusion", "done"} <= phases
    mining = [e for e in events if e.phase == "fusion candidates"]  # a long step on big catalogues: it reports progress
    assert all(0 <= e.step < e.n_steps for e in mining) and [e.step for e in mining] == sorted(e.step for e in mining)
    assert all(isinstance(e, TrainProgress) for e in events)
    assert events[-1].phase == "done"
    # the yardstick: the most popular products on the same validation shoppers, in every epoch's report
    ref = m["valid"]["popularity_ndcg10"]
    assert 0.0 <= ref < m["valid"]["ndcg10"]  # the model learned the pattern; popularity cannot
    assert all(e.reference_ndcg10 == ref for e in events if e.phase == "valid")


def test_the_popularity_yardstick_ranks_the_most_popular_unseen_products_first():
    from crossrec_core.data.dataset import Sequences
    from crossrec_core.training.tuning import popularity_reference

    # items 0, 1, 2 bought 5, 3 and 3 times; shopper 0 had item 0 and takes item 1 next (rank 0: NDCG 1);
    # shopper 1 had item 1 and takes item 2 (after item 0; ties in catalogue order: rank 1, NDCG 1 / log2(3))
    seqs = Sequences(np.array([0, 2, 4]), np.array([0, 1, 1, 2], np.int32), np.arange(4), np.zeros(4, np.int16))
    ref = popularity_reference(np.array([5.0, 3.0, 3.0]), seqs, np.array([0, 1]), np.array([1, 3]), np.array([1, 2]))
    assert ref == pytest.approx((1.0 + 1.0 / np.log2(3)) / 2)
    assert popularity_reference(np.ones(3), seqs, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0.0


def test_trained_model_interface_types(trained):
    ds, model, _ = trained
    assert model.item_ids.dtype == object and model.item_category.dtype == np.int32
    assert model.popularity.dtype == np.float32 and model.popularity.shape == (ds.n_items,)
    assert model.category_transitions.shape == (2, 2)
    iv = model.item_vectors()
    assert model.base_item_vectors().shape == (ds.n_items, 32)
    # the learned 32 columns, plus the log-prior columns when validation turned the blend on
    n_prior = (model.prior_weights[0] != 0) + (model.prior.n_buckets if model.prior_weights[1] != 0 else 0)
    assert iv.shape == (ds.n_items, 32 + n_prior) and iv.dtype == np.float32
    users = np.arange(5)
    ends = ds.seqs.offsets[1:6] - 1
    uv = model.user_vectors(ds.seqs, users, ends)
    expected = uv @ iv.T
    if model.has_neighbour_term:  # retrieval = dot product + the validated item-kNN term
        expected = expected + np.float32(model.knn_weight) * model.knn.score_histories(ds.seqs, users, ends)
    np.testing.assert_allclose(model.score_histories(ds.seqs, users, ends), expected, rtol=1e-5, atol=1e-5)
    sc = Recommender(model).candidates(ds.seqs, users, ends, 4)
    assert sc.cand.shape == (5, 4) and sc.features.shape == (5, 4, N_FEATURES)
    p = sc.probability
    assert p.shape == (5, 4) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    # empty history does not crash
    assert np.isfinite(model.score_histories(ds.seqs, np.array([0]), ds.seqs.offsets[:1])).all()
    assert model.item_index(["b3", "nope"]).tolist() == [ds.item_index(["b3"])[0], -1]
    assert model.event_index(["purchase", "teleport"]).tolist()[0] == list(model.event_names).index("purchase")


def test_seeded_training_is_reproducible():
    ds = pattern_dataset(n_users=60)
    cfg = small_config(epochs=2, patience=2)
    a = train_model(ds, cfg)
    b = train_model(ds, cfg)
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert np.array_equal(va.numpy(), vb.numpy()), k
    assert [h["ndcg10"] for h in a.metrics["history"]] == [h["ndcg10"] for h in b.metrics["history"]]


def test_checkpoint_and_resume_continue_from_last_epoch(tmp_path):
    ds = pattern_dataset(n_users=60)
    full = train_model(ds, small_config(epochs=3, patience=3), checkpoint_dir=tmp_path / "full")
    part = train_model(ds, small_config(epochs=2, patience=3), checkpoint_dir=tmp_path / "ck")
    state = read_json(tmp_path / "ck" / "current" / "state.json")
    assert state["epoch"] == 2 and not list((tmp_path / "ck").rglob("*.pt"))
    # resuming may raise the epoch cap: only the cap differs between the runs
    resumed = train_model(ds, small_config(epochs=3, patience=3), checkpoint_dir=tmp_path / "ck", resume=True)
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2, 3]
    assert [h["ndcg10"] for h in resumed.metrics["history"]] == [h["ndcg10"] for h in full.metrics["history"]]
    for (k, va), (_, vb) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert part.metrics["history"][-1]["epoch"] == 2


@pytest.mark.parametrize("loss", ["sampled", "bce"])
def test_other_losses_train(loss):
    ds = pattern_dataset(n_users=120)
    model = train_model(ds, small_config(loss=loss, n_negatives=16, epochs=10, patience=10, fusion_epochs=0))
    assert model.metrics["loss"] == loss
    assert model.metrics["valid"]["hr10"] > 0.22  # random ranking gives about 10/57 = 0.175


def test_sampled_loss_gives_the_item_id_table_a_sparse_gradient_and_a_lazy_adam():
    import torch

    from crossrec_core.models.fusion import build_net
    from crossrec_core.training.optim import make_fit_optimizer

    ds = pattern_dataset(n_users=20)
    net = build_net(small_config(), n_items=ds.n_items, n_categories=2, n_event_types=2, attr_vocab_size=0, use_text=False, n_vector_columns=0)
    tc = small_config(loss="sampled", sparse_id_min_items=ds.n_items).train
    opt = make_fit_optimizer(net, tc, mode="sampled", distributed=False)
    assert opt.is_sparse and net.item_encoder.id_emb.sparse
    assert any(isinstance(o, torch.optim.SparseAdam) for o in opt.optimizers)
    before = net.item_encoder.id_emb.weight.detach().clone()
    net.item_encoder(torch.tensor([1, 2, 2])).sum().backward()
    assert net.item_encoder.id_emb.weight.grad.is_sparse
    opt.step()
    moved = (net.item_encoder.id_emb.weight.detach() != before).any(dim=1)
    assert moved.nonzero().flatten().tolist() == [1, 2]  # only the rows the batch touched
    # dense where the sparse path does not apply: the full softmax, weight decay, DDP
    net.item_encoder.id_emb.sparse = False
    for mode, wd, dist in (("ce", 0.0, False), ("sampled", 1e-4, False), ("sampled", 0.0, True), ("bce", 0.0, True)):
        o = make_fit_optimizer(net, dataclasses.replace(tc, weight_decay=wd), mode=mode, distributed=dist)
        assert not o.is_sparse and not net.item_encoder.id_emb.sparse, (mode, wd, dist)
    # below the size threshold (the default: 200k items) lazy Adam's accuracy cost is not worth it
    assert not make_fit_optimizer(net, dataclasses.replace(tc, sparse_id_min_items=ds.n_items + 1), mode="sampled", distributed=False).is_sparse
    assert not make_fit_optimizer(net, small_config(loss="sampled").train, mode="sampled", distributed=False).is_sparse


def test_sampled_training_resumes_exactly_and_leaves_a_dense_model(tmp_path):
    ds = pattern_dataset(n_users=60)
    cfg = lambda epochs: small_config(loss="sampled", n_negatives=16, epochs=epochs, patience=3, fusion_epochs=0, sparse_id_min_items=2)  # noqa: E731
    full = train_model(ds, cfg(3), checkpoint_dir=tmp_path / "full")
    assert len(read_json(tmp_path / "full" / "current" / "state.json")["optimizer"]["optimizers"]) == 2  # Adam + SparseAdam
    assert not full.net.item_encoder.id_emb.sparse  # the saved model trains on (fine-tuning) with dense gradients
    train_model(ds, cfg(2), checkpoint_dir=tmp_path / "ck")
    resumed = train_model(ds, cfg(3), checkpoint_dir=tmp_path / "ck", resume=True)
    assert [h["ndcg10"] for h in resumed.metrics["history"]] == [h["ndcg10"] for h in full.metrics["history"]]
    for (k, va), (_, vb) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_weight_average_ships_the_averaged_weights_and_resumes_exactly(tmp_path):
    """With ema_half_life the best epoch keeps the moving average of the weights, not the last step's, and a
    resumed run (average restored from the checkpoint) ends exactly where an uninterrupted one does."""
    ds = pattern_dataset(n_users=60)
    cfg = lambda epochs, h=0.5: small_config(epochs=epochs, patience=3, fusion_epochs=0, ema_half_life=h)  # noqa: E731
    full = train_model(ds, cfg(3), checkpoint_dir=tmp_path / "full")
    assert (tmp_path / "full" / "current" / "average.safetensors").is_file()
    plain = train_model(ds, cfg(3, 0.0))
    # the steps are the same: only what validation judges differs
    assert [h["loss"] for h in full.metrics["history"]] == pytest.approx([h["loss"] for h in plain.metrics["history"]], rel=1e-5)
    assert [h["ndcg10"] for h in full.metrics["history"]] != [h["ndcg10"] for h in plain.metrics["history"]]
    train_model(ds, cfg(2), checkpoint_dir=tmp_path / "ck")
    resumed = train_model(ds, cfg(3), checkpoint_dir=tmp_path / "ck", resume=True)
    assert [h["ndcg10"] for h in resumed.metrics["history"]] == [h["ndcg10"] for h in full.metrics["history"]]
    for (k, va), (_, vb) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_weight_average_moves_by_its_half_life_and_puts_the_training_weights_back():
    import torch

    from crossrec_core.training.epochs import WeightAverage

    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    avg = WeightAverage(net, half_life_steps=2.0)
    avg.update()  # the first call copies the weights
    with torch.no_grad():
        net.weight.fill_(1.0)
    avg.update()
    avg.update()  # two steps at weights 1: the average has moved half the way
    assert torch.allclose(avg.average["weight"], torch.full((1, 2), 0.5))
    with avg.swapped_in():
        assert torch.allclose(net.weight, torch.full((1, 2), 0.5))
    assert torch.allclose(net.weight, torch.ones(1, 2))


def test_weight_average_of_a_sparse_table_is_the_every_step_average():
    """A table with a sparse gradient has its rows' averages brought up to date lazily (only the rows a step
    changes); once synced they equal the average lerped over every row at every step."""
    import torch

    from crossrec_core.training.epochs import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(30, 4, sparse=True), torch.nn.Linear(4, 1))
    opt = [torch.optim.SparseAdam(list(net[0].parameters()), lr=0.05), torch.optim.Adam(list(net[1].parameters()), lr=0.05)]
    avg = WeightAverage(net, half_life_steps=3.0)
    assert avg.sparse == {"0.weight"}
    reference = None
    for step in range(25):
        rows = torch.randint(0, 8 if step < 12 else 30, (5,))  # most rows untouched for many steps
        loss = net(rows).square().sum()
        for o in opt:
            o.zero_grad()
        loss.backward()
        avg.before_step()
        for o in opt:
            o.step()
        avg.update()
        params = {n: p.detach().clone() for n, p in net.named_parameters()}
        reference = params if reference is None else {n: reference[n].lerp(params[n], 1.0 - avg.decay) for n in params}
    lazy = {n: a.clone() for n, a in avg.average.items()}
    assert not torch.allclose(lazy["0.weight"], reference["0.weight"], atol=1e-6)  # not synced yet: untouched rows lag
    synced = avg.synced()
    for n in reference:
        torch.testing.assert_close(synced[n], reference[n], rtol=1e-5, atol=1e-6)
    with avg.swapped_in():
        torch.testing.assert_close(net[0].weight, reference["0.weight"], rtol=1e-5, atol=1e-6)


def test_gru_encoder_trains():
    ds = pattern_dataset(n_users=120)
    cfg = dataclasses.replace(small_config(epochs=6, patience=6, fusion_epochs=0), user=UserEncoderConfig(kind="gru", dim=32, max_len=8, dropout=0.0))
    assert train_model(ds, cfg).metrics["valid"]["hr10"] > 0.22


def test_stable_top_n_returns_each_rows_largest_scores_ties_by_smaller_index():
    from crossrec_core.serving.selection import TIE_RESOLUTION, stable_top_n

    scores = np.random.default_rng(0).normal(size=(7, 500)).astype(np.float32)
    scores[:, 3] = -np.inf  # masked (seen) items never make the top
    top = stable_top_n(scores, 20)
    assert top.shape == (7, 20) and top.dtype == np.int64
    for row, cols in zip(scores, top):
        assert set(cols) == set(np.argsort(-row, kind="stable")[:20]) and 3 not in cols
        assert (np.diff(row[cols]) <= TIE_RESOLUTION).all()  # best first
    # float noise far below the tie resolution does not reorder tied items: the smaller index wins
    tied = np.array([[1.0, 2.0, 2.0 + 1e-6, 2.0 - 1e-6, 0.5]], dtype=np.float64)
    assert stable_top_n(tied, 4).tolist() == [[1, 2, 3, 0]]
    assert stable_top_n(tied[:, ::-1].copy(), 3).tolist() == [[1, 2, 3]]

def test_training_windows_and_seen_flags_exact():
    inter = pd.DataFrame({"user_id": ["u"] * 6 + ["v"] * 2, "item_id": list("abacde") + list("xy"), "timestamp": list(range(6)) + [0, 1]})
    ds = from_frames(inter)
    users, ends = training_windows(ds.seqs, np.array([6, 8]), max_len=2)
    # u: 6 events -> 5 targets -> windows ending at 6, 4, 2; v: 2 events -> one window
    assert users.tolist() == [0, 0, 0, 1] and ends.tolist() == [6, 4, 2, 8]
    assert ds.seqs.seen_before().tolist() == [False, False, True, False, False, False, False, False]
    tr = ds.seqs.truncate(np.array([6, 8])).category_transitions(ds.item_category, ds.n_categories)
    assert tr.shape == (1, 1) and tr[0, 0] == 5 + 1


def test_prior_blend_adds_log_popularity_and_category_lift_to_the_dot_product(trained):
    ds, model, _ = trained
    users = np.arange(6)
    ends = ds.seqs.offsets[1:7] - 1
    saved = model.prior_weights
    try:
        model.set_prior_weights(0.0, 0.0)
        base = model.score_histories(ds.seqs, users, ends)
        assert model.item_vectors().shape[1] == 32
        model.set_prior_weights(0.5, 2.0)
        blended = model.score_histories(ds.seqs, users, ends)
        lift = model.category_lift(ds.seqs, users, ends)[:, model.prior.bucket]
        expected = base + 0.5 * model.prior.log_pop[None, :] + 2.0 * lift
        np.testing.assert_allclose(blended, expected, rtol=1e-4, atol=1e-3)
        assert model.user_vectors(ds.seqs, users, ends).shape[1] == model.item_vectors().shape[1]
    finally:
        model.set_prior_weights(*saved)


def test_category_lift_follows_the_last_category_transitions():
    from crossrec_core.data.dataset import Sequences
    from crossrec_core.models.prior import build_item_prior, category_lift

    # 4 items, categories [0, 0, 1, 1]; training always goes 0 -> 1, never 0 -> 0
    item_category = np.array([0, 0, 1, 1], dtype=np.int32)
    prior = build_item_prior(np.array([3, 1, 2, 2], np.float32), item_category, np.array([[0, 10], [0, 0]], np.float32))
    seqs = Sequences(np.array([0, 1, 1], np.int64), np.array([0], np.int32), np.zeros(1, np.int64), np.zeros(1, np.int16))
    lift = category_lift(prior, item_category, seqs, np.array([0, 1]), np.array([1, 1]))
    # after a category-0 item, P(next = 1) = 10.01 / 10.02, while both categories hold half the events
    p1 = 10.01 / 10.02
    np.testing.assert_allclose(lift[0], [np.log((1 - p1) / 0.5), np.log(p1 / 0.5)], rtol=1e-5)
    np.testing.assert_array_equal(lift[1], [0.0, 0.0])  # empty history: no lift
    # log popularity share with +0.1 smoothing
    np.testing.assert_allclose(prior.log_pop, np.log(np.array([3.1, 1.1, 2.1, 2.1]) / 8.4), rtol=1e-5)


def test_item_knn_term_is_selected_when_it_helps_and_survives_save_load(tmp_path):
    """An (almost) untrained model on a co-occurrence pattern: validation picks a positive kNN weight,
    the blended score ranks the valid targets better than the model alone, and save/load keeps it."""
    from crossrec_core.evaluation.baselines import ItemKNNRanker
    from crossrec_core.storage.registry import load_model, save_model
    from crossrec_core.evaluation.metrics import ndcg_hr
    from crossrec_core.training.tuning import rank_targets, select_knn_weight

    ds = pattern_dataset(n_users=120)
    model = train_model(ds, small_config(epochs=1, patience=1, lr=1e-5, knn_blend=False, prior_blend=False))
    split = ds.leave_last_out()
    users, ends = split.valid_users, split.valid_pos
    targets = ds.seqs.items[ends].astype(np.int64)
    knn = ItemKNNRanker().fit(ds, ds.seqs.truncate(split.train_end))
    weight, chosen = select_knn_weight(model, knn, ds.seqs, users, ends, targets)
    alone = ndcg_hr(rank_targets(model.score_histories(ds.seqs, users, ends), ds.seqs, users, ends, targets))
    assert weight > 0 and chosen["ndcg10"] > alone["ndcg10"]

    model.knn, model.knn_weight = knn, weight
    blended = ndcg_hr(rank_targets(model.score_histories(ds.seqs, users, ends), ds.seqs, users, ends, targets))
    assert blended["ndcg10"] == pytest.approx(chosen["ndcg10"])
    back = load_model(save_model(model, tmp_path / "m"))
    assert back.knn_weight == weight
    np.testing.assert_allclose(back.score_histories(ds.seqs, users, ends), model.score_histories(ds.seqs, users, ends), rtol=1e-5, atol=1e-5)
    got, want = Recommender(back).candidates(ds.seqs, users, ends, 5), Recommender(model).candidates(ds.seqs, users, ends, 5)
    np.testing.assert_array_equal(got.cand, want.cand)
    np.testing.assert_allclose(got.probability, want.probability, rtol=1e-5, atol=1e-6)


def _kit_dataset(n_kits: int = 12, seed: int = 0):
    """Kits bought piece by piece: tent_i -> stove_i -> its gas (half the time; else a mug). Every shopper
    buys two kits; for a quarter of them the second starts at the stove (after a mug, no tent). What follows
    a stove is its gas; what precedes it (its tent, bought with it twice as often as the gas) is the wrong
    answer that co-occurrence ranks first for those shoppers' validation target (the second gas)."""
    rng = np.random.default_rng(seed)
    rows, cats = [], {}
    for i in range(n_kits):
        cats.update({f"tent{i}": "Camping", f"stove{i}": "Cooking", f"gas{i}": "Fuel", f"mug{i}": "Kitchen"})

    def mug() -> str:
        return f"mug{rng.integers(n_kits)}"

    for u in range(20 * n_kits):
        i, j, kind = u % n_kits, int(rng.integers(n_kits)), u // n_kits  # every kit sees every kind of shopper
        first = [f"tent{i}", f"stove{i}", f"gas{i}" if kind % 2 else mug(), mug()]
        second = [mug() if kind % 4 == 0 else f"tent{j}", f"stove{j}", f"gas{j}", mug()]
        rows += [(f"u{u}", item, t) for t, item in enumerate(first + second)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": list(cats), "category": list(cats.values())})
    return from_frames(inter, items, name="kits")


def test_training_chooses_next_item_rules_where_the_order_of_purchases_carries_the_signal(tmp_path):
    from crossrec_core.storage.registry import load_model, save_model

    ds = _kit_dataset()
    cfg = small_config(epochs=1, patience=1, lr=1e-5, prior_blend=False, fusion_epochs=0)  # an untrained encoder
    model = train_model(ds, cfg)
    v = model.metrics["valid"]
    assert v["knn_next_items"] and v["ndcg10_knn_next_items"] > v["ndcg10_knn_cooccurrence"] + 0.05, v
    assert model.knn.directed and model.knn_weight > 0
    back = load_model(save_model(model, tmp_path / "m"))
    assert back.knn.params == model.knn.params
    assert back.rules is back.knn  # the rules are the term of retrieval: saved once, read back as both
    users = np.arange(ds.n_users, dtype=np.int64)
    ends = ds.seqs.offsets[1:].astype(np.int64) - 1
    np.testing.assert_allclose(back.score_histories(ds.seqs, users, ends), model.score_histories(ds.seqs, users, ends), rtol=1e-5, atol=1e-5)
    off = train_model(ds, small_config(epochs=1, patience=1, lr=1e-5, prior_blend=False, fusion_epochs=0, knn_choice=False))
    assert not off.knn.directed and "knn_next_items" not in off.metrics["valid"]


def test_recommender_with_a_knn_term_scores_fusion_like_the_candidates_path():
    """recommend_batch computes the item-kNN term once and hands it to the fusion scorer: the
    probabilities it reports must equal those of the unfiltered candidates path (what the fusion fit
    learns from and the threshold curve sweeps) for the same items."""
    from crossrec_core.evaluation.baselines import ItemKNNRanker
    from crossrec_core.serving.recommender import Recommender

    ds = pattern_dataset(n_users=60)
    model = train_model(ds, small_config(epochs=1, patience=1, knn_blend=False, prior_blend=False))
    split = ds.leave_last_out()
    model.knn, model.knn_weight = ItemKNNRanker().fit(ds, ds.seqs.truncate(split.train_end)), 4.0
    users = np.arange(ds.n_users, dtype=np.int64)
    ends = ds.seqs.offsets[1:].astype(np.int64)
    rec = Recommender(model, ds, cold_max_events=0).recommend_batch(ds.seqs, users, ends, 3)
    assert len(rec) == 3 * ds.n_users
    cand = rec["item_idx"].to_numpy().reshape(ds.n_users, 3)
    sc = Recommender(model, ds, cold_max_events=0).candidates(ds.seqs, users, ends)
    pos = (sc.cand[:, None, :] == cand[:, :, None]).argmax(axis=2)  # where each shown item sits among the candidates
    expected = np.take_along_axis(sc.probability, pos, axis=1).reshape(-1)
    np.testing.assert_allclose(rec["probability"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    # and the retrieval score includes the weighted kNN term
    full = model.score_histories(ds.seqs, users, ends)
    np.testing.assert_allclose(rec["score"].to_numpy(), np.take_along_axis(full, cand, axis=1).reshape(-1), rtol=1e-4, atol=1e-4)


def test_a_filter_or_a_wider_pool_never_changes_an_items_probability():
    """The probability reads each candidate's log-softmax over the pool it was fitted on
    (models/calibration.py): hiding items (category filters) or widening the pool (k, n_candidates,
    a threshold) must leave every remaining item's probability as the unfiltered pool gives it."""
    from crossrec_core.serving.recommender import Recommender

    ds = pattern_dataset(n_users=80)
    model = train_model(ds, small_config(epochs=2, patience=2))
    assert model.calibration.basis == "log_softmax"
    users = np.arange(ds.n_users, dtype=np.int64)
    ends = ds.seqs.offsets[:-1].astype(np.int64) + 1  # each history: its first tent (category A) only
    rec = Recommender(model, ds, cold_max_events=0)
    pool = rec.candidates(ds.seqs, users, ends)
    want = {(u, int(i)): float(p) for u in range(ds.n_users) for i, p, ok in zip(pool.cand[u], pool.probability[u], pool.valid[u]) if ok}
    variants = [
        dict(k=3, cross_category_only=True),
        dict(k=5, n_candidates=6),
        dict(k=rec.default_candidates + 5),
        dict(k=4, exclude_categories=["B"]),
        dict(k=4, threshold=float(np.median(pool.probability[pool.valid]))),
    ]
    for opts in variants:
        got = rec.recommend_batch(ds.seqs, users, ends, **opts)
        checked = 0
        for u, i, p in zip(got["user_idx"], got["item_idx"], got["probability"]):
            if (int(u), int(i)) in want:
                assert p == pytest.approx(want[(int(u), int(i))], rel=1e-4, abs=1e-6), opts
                checked += 1
        assert checked >= ds.n_users, opts  # the comparison covered real rows
    narrow = rec.candidates(ds.seqs, users, ends, 4)  # a smaller pool (its novel slots differ): same items, same probability
    both = [(u, int(i), p) for u in range(ds.n_users) for i, p in zip(narrow.cand[u], narrow.probability[u]) if (u, int(i)) in want]
    assert len(both) >= 2 * ds.n_users
    assert [p for *_, p in both] == pytest.approx([want[(u, i)] for u, i, _ in both], rel=1e-4, abs=1e-6)


def category_cycle_dataset(n_users: int = 150, seed: int = 0):
    """Each shopper walks the categories A -> B -> C -> A ... buying a random item of each: the next
    item is a guess among 20, its category is certain."""
    rng = np.random.default_rng(seed)
    cats = ["A", "B", "C"]
    rows = []
    for u in range(n_users):
        start = int(rng.integers(3))
        for t in range(int(rng.integers(6, 10))):
            c = cats[(start + t) % 3]
            rows.append((f"u{u}", f"{c}{int(rng.integers(20))}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"{c}{i}" for c in cats for i in range(20)], "category": [c for c in cats for _ in range(20)]})
    return from_frames(inter, items, name="cycle")


def test_next_category_head_learns_the_category_walk_and_survives_save_and_load(tmp_path):
    from crossrec_core.serving.scoring import one_user_sequences
    from crossrec_core.storage.registry import load_model, save_model

    ds = category_cycle_dataset()
    plain = train_model(ds, small_config(epochs=6, patience=6))
    assert plain.net.category_head is None
    model = train_model(ds, small_config(epochs=6, patience=6, category_loss_weight=1.0))
    assert model.net.category_head is not None
    seqs = one_user_sequences(model.item_index(["A3", "B7"]))
    lift = model.category_lift(seqs, np.array([0]), np.array([2]))  # history ends in B: next is C
    order = [str(model.category_names[b]) for b in np.argsort(-lift[0])]
    assert order[0] == "C" and lift[0].max() > 0.5
    # the head is part of the saved weights: a loaded model gives the same lift and the same lists
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.net.category_head is not None
    np.testing.assert_allclose(loaded.category_lift(seqs, np.array([0]), np.array([2])), lift, atol=1e-5)
    assert Recommender(loaded).recommend(["A3", "B7"], k=5).item_ids == Recommender(model).recommend(["A3", "B7"], k=5).item_ids


def test_category_on_the_input_side_only_leaves_the_scored_vectors_without_it():
    ds = category_cycle_dataset(n_users=60)
    cfg = small_config(epochs=2, patience=2)
    cfg = dataclasses.replace(cfg, item=dataclasses.replace(cfg.item, category_side="input", use_id=True))
    model = train_model(ds, cfg)
    enc = model.net.item_encoder
    import torch

    idx = torch.arange(ds.n_items)
    with torch.no_grad():
        scored = enc(idx)
        history = enc.input_vectors(idx)
        cat = enc.cat_emb(enc.item_category[idx])
    # scored vectors carry no category part; history vectors are exactly those plus it
    torch.testing.assert_close(history, scored + cat)
    np.testing.assert_allclose(model.base_item_vectors(), scored.numpy(), atol=1e-6)
    with pytest.raises(Exception, match="category_side"):
        ItemEncoderConfig(category_side="output")


def test_mixed_precision_plan_scales_float16_gradients_and_the_step_unscales_them():
    """Issue 16.4: bfloat16 where the GPU has it, else float16 with a GradScaler; float32 on CPU. The
    optimiser step through an enabled scaler applies the true (unscaled) gradient, and skips a step
    whose gradients overflowed."""
    from crossrec_core.training.optim import FitOptimizer, amp_plan

    assert amp_plan("cpu", False) == (False, torch.float32, False)
    assert amp_plan("cuda", True) == (True, torch.bfloat16, False)
    assert amp_plan("cuda", False) == (True, torch.float16, True)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = FitOptimizer([torch.optim.SGD([w], lr=0.1)])
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale((w * torch.tensor([3.0, 5.0])).sum()).backward()
    assert w.grad.tolist() == [3072.0, 5120.0]  # scaled
    opt.step(scaler)
    assert w.detach().tolist() == pytest.approx([1.0 - 0.3, -2.0 - 0.5])  # the unscaled gradient was applied
    before, scale = w.detach().clone(), scaler.get_scale()
    opt.zero_grad()
    scaler.scale((w * torch.tensor([float("inf"), 1.0])).sum()).backward()
    opt.step(scaler)
    assert torch.equal(w.detach(), before) and scaler.get_scale() == scale / 2  # overflow: skipped, scale halved


def test_the_item_vector_is_the_sum_of_its_parts_and_a_cold_item_has_no_id_share(trained):
    import torch

    _, model, _ = trained
    enc = model.net.item_encoder
    idx = torch.arange(model.n_items)
    with torch.no_grad():
        parts = enc.parts(idx)
        torch.testing.assert_close(sum(parts.values()), enc(idx))
        enc.id_mask[0] = 0.0  # item 0 made cold: text and category carry it, its ID row is masked
        model.invalidate_cache()  # the shares are cached with the item vectors
        names, shares = model.part_shares()
        assert model.part_shares()[1] is shares  # computed once
        enc.id_mask[0] = 1.0
        model.invalidate_cache()
    assert names == list(parts) and names[0] == "ID"
    assert shares[0, 0] == 0.0 and shares[1, 0] > 0.0
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-5)


def test_id_shrinkage_weights_each_items_id_part_by_its_training_count():
    """An item seen n times in training keeps n / (n + k) of its ID row (k = id_shrinkage); unseen items 0;
    k = 0 (models saved before) and the private path (shrink=False) keep the full row for every seen item."""
    from crossrec_core.models.fusion import build_net
    from crossrec_core.training.loop import _fill_buffers

    ds = pattern_dataset(n_users=20)
    pop = np.zeros(ds.n_items, dtype=np.float32)
    pop[:4] = [0.0, 1.0, 2.0, 6.0]
    feats = {"attr_tokens": None, "text": None, "vectors": None}

    def mask(k: float, shrink: bool = True) -> np.ndarray:
        cfg = small_config()
        cfg = dataclasses.replace(cfg, item=dataclasses.replace(cfg.item, id_shrinkage=k))
        net = build_net(cfg, n_items=ds.n_items, n_categories=ds.n_categories, n_event_types=len(ds.event_names),
                        attr_vocab_size=2, use_text=False, n_vector_columns=0)
        _fill_buffers(net, ds, feats, pop, shrink=shrink)
        enc = net.item_encoder
        idx = torch.arange(4)
        with torch.no_grad():  # scoring: the ID share of the item vector carries the weight
            enc.eval()
            torch.testing.assert_close(enc.parts(idx)["ID"], enc.id_emb(idx) * enc.id_mask[idx].unsqueeze(-1))
            enc.train()  # training: the whole row or nothing, the whole row with that probability
            torch.manual_seed(0)
            rows = enc.id_emb(idx)
            used = []
            for _ in range(2000):
                share = enc.parts(idx)["ID"]
                whole = (share == rows).all(dim=1)
                assert bool((whole | (share == 0).all(dim=1)).all())
                used.append(whole.float())
            np.testing.assert_allclose(torch.stack(used).mean(0).numpy(), enc.id_mask[:4].numpy(), atol=0.04)
        return enc.id_mask[:4].numpy()

    np.testing.assert_allclose(mask(2.0), [0.0, 1 / 3, 0.5, 0.75], rtol=1e-6)
    np.testing.assert_allclose(mask(0.0), [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(mask(2.0, shrink=False), [0.0, 1.0, 1.0, 1.0])
    with pytest.raises(Exception, match="id_shrinkage"):
        ItemEncoderConfig(id_shrinkage=-1.0)


def test_epoch_batches_group_similar_lengths_or_draw_at_random():
    from crossrec_core.training.epochs import epoch_batches

    length = np.tile(np.arange(1, 51), 40)  # 2,000 windows, lengths 1..50
    bucketed = epoch_batches(length, 20, np.random.default_rng(0), True)
    drawn = epoch_batches(length, 20, np.random.default_rng(0), False)
    for batches in (bucketed, drawn):  # every window once per epoch
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(length)))
    # buckets: a batch spans 2-3 lengths of the 50 (100 windows each, 40 per length); random: nearly all of them
    assert max(np.ptp(length[b]) for b in bucketed) <= 3
    assert min(np.ptp(length[b]) for b in drawn) >= 40
    # the batch order is random either way: not sorted by length
    firsts = [length[b].min() for b in bucketed]
    assert firsts != sorted(firsts)


def test_window_weights_make_every_window_weigh_one():
    from crossrec_core.training.loop import build_windows

    ds = pattern_dataset(60)
    split = ds.leave_last_out()
    plain = build_windows(ds, split, small_config()).tensors["weights"].numpy()
    per_window = build_windows(ds, split, small_config(window_weights=True)).tensors["weights"].numpy()
    assert len(np.unique(plain.sum(axis=1))) > 1  # the pattern log's windows hold 2-6 targets
    np.testing.assert_allclose(per_window.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(per_window * plain.sum(axis=1, keepdims=True), plain, rtol=1e-6)  # same targets, scaled


def test_window_weight_power_goes_from_every_window_to_every_target():
    from crossrec_core.training.loop import build_windows

    ds = pattern_dataset(60)
    split = ds.leave_last_out()
    plain = build_windows(ds, split, small_config()).tensors["weights"].numpy()
    n = plain.sum(axis=1)
    for power in (0.0, 0.5):
        w = build_windows(ds, split, small_config(window_weights=True, window_weight_power=power)).tensors["weights"].numpy()
        np.testing.assert_allclose(w.sum(axis=1), n ** (1.0 - power), rtol=1e-6)  # a window of n targets weighs n^(1-a)
        np.testing.assert_allclose(w * n[:, None] ** power, plain, rtol=1e-6)  # same targets, scaled


def test_shopper_cap_makes_a_shopper_count_as_at_most_the_quantile_of_the_shoppers_targets():
    from crossrec_core.training.loop import build_windows, training_windows

    ds = pattern_dataset(60)
    split = ds.leave_last_out()
    short = lambda cfg: dataclasses.replace(cfg, user=dataclasses.replace(cfg.user, max_len=2))  # noqa: E731
    plain = build_windows(ds, split, short(small_config())).tensors["weights"].numpy()
    capped = build_windows(ds, split, short(small_config(shopper_cap_quantile=0.5))).tensors["weights"].numpy()
    users, _ = training_windows(ds.seqs, split.train_end, 2)
    n = np.bincount(users, weights=plain.sum(axis=1))
    cap = np.quantile(n[n > 0], 0.5)
    assert (n > cap).any() and (n[n > 0] < cap).any()  # shoppers on both sides of the cap
    np.testing.assert_allclose(np.bincount(users, weights=capped.sum(axis=1)), np.minimum(n, cap), rtol=1e-6)
    kept = n[users] <= cap  # shoppers up to the cap keep every target at its weight
    np.testing.assert_array_equal(capped[kept], plain[kept])
    scale = (np.minimum(n, cap) / np.maximum(n, 1e-12))[users][:, None]
    np.testing.assert_allclose(capped, plain * scale, rtol=1e-6)  # a shopper's targets scaled alike


def test_step_mean_target_weighs_every_target_the_same_whatever_its_batch():
    from crossrec_core.models.fusion import build_net
    from crossrec_core.training.loss import RetrievalLoss

    torch.manual_seed(0)
    cfg = small_config(step_mean="target")
    net = build_net(cfg, n_items=12, n_categories=2, n_event_types=1, attr_vocab_size=2, use_text=False, n_vector_columns=0)
    net.item_encoder.item_category.copy_(torch.arange(12) % 2)
    loss_mod = RetrievalLoss(net, "ce", 4).eval()
    items = torch.randint(0, 12, (3, 5))
    args = (items, torch.ones_like(items), torch.zeros_like(items), torch.ones(3, 5, dtype=torch.bool), torch.randint(0, 12, (3, 5)))
    one, few = torch.ones(3, 5), torch.zeros(3, 5)
    few[0, -1] = 1.0  # a batch with a single target
    negs = torch.zeros(1, dtype=torch.long)
    mean_all, mean_one = loss_mod(*args, one, negs), loss_mod(*args, few, negs)
    loss_mod.norm = 7.5  # the mean weight of a batch
    torch.testing.assert_close(loss_mod(*args, one, negs), mean_all * 15 / 7.5)
    torch.testing.assert_close(loss_mod(*args, few, negs), mean_one / 7.5)  # a lone target no longer weighs as a whole batch


def test_shopper_weights_give_every_shopper_the_same_total_over_all_their_windows():
    from crossrec_core.training.loop import build_windows, training_windows

    ds = pattern_dataset(60)
    split = ds.leave_last_out()
    short = lambda cfg: dataclasses.replace(cfg, user=dataclasses.replace(cfg.user, max_len=2))  # noqa: E731
    cfg = short(small_config(window_weights=True, weight_unit="shopper"))
    w = build_windows(ds, split, cfg).tensors["weights"].numpy()
    users, _ = training_windows(ds.seqs, split.train_end, cfg.user.max_len)
    assert len(users) > len(np.unique(users))  # shoppers with several windows (2 targets each)
    per_shopper = np.bincount(users, weights=w.sum(axis=1))
    np.testing.assert_allclose(per_shopper[np.unique(users)], 1.0, rtol=1e-6)
    plain = build_windows(ds, split, short(small_config())).tensors["weights"].numpy()
    for u in np.unique(users):  # within a shopper every target keeps its relative weight
        rows = users == u
        np.testing.assert_allclose(w[rows] * plain[rows].sum(), plain[rows], rtol=1e-6)


def test_batch_choice_keeps_the_run_with_the_better_validation_figure():
    from crossrec_core.training.loop import train_model

    ds = pattern_dataset(60)
    both = train_model(ds, small_config(epochs=3, patience=3))
    choice = both.metrics["valid"]["batch_choice"]
    assert set(choice) == {"length buckets", "random batches"} and both.metrics["epochs_run"] == 6
    kept_random = both.metrics["valid"]["random_batches"]
    assert kept_random == (not both.config.train.length_buckets)
    assert not kept_random or choice["random batches"] > choice["length buckets"]  # a tie keeps the configured buckets
    best = next(h for h in both.metrics["history"] if h["epoch"] == both.metrics["best_epoch"])  # the kept run's history
    assert best["ndcg10_stop"] == pytest.approx(choice["random batches" if kept_random else "length buckets"], abs=1e-9)
    # each run alone gives the same figure: the second run starts from the same weights, not the first's
    for buckets in (True, False):
        alone = train_model(ds, small_config(epochs=3, patience=3, batch_choice=False, length_buckets=buckets))
        assert "batch_choice" not in alone.metrics["valid"] and alone.metrics["epochs_run"] == 3
        assert alone.config.train.length_buckets == buckets
        assert choice["length buckets" if buckets else "random batches"] == pytest.approx(
            max(h["ndcg10_stop"] for h in alone.metrics["history"]), abs=1e-9)


def test_a_second_configuration_must_beat_the_first_by_more_than_validation_noise():
    from crossrec_core.training.stopping import clearly_better, paired_z, per_user_ndcg

    np.testing.assert_allclose(per_user_ndcg(np.array([0, 1, 9, 10])), [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0])
    first = np.zeros(1000)
    first[:100] = 1.0  # 100 of 1,000 shoppers rank their target first
    noise = first.copy()
    noise[100:103], noise[:2] = 1.0, 0.0  # 3 shoppers gained, 2 lost: +0.001, under half a standard error
    gain = first.copy()
    gain[100:130] = 1.0  # 30 more shoppers: +0.03, several standard errors
    assert 0 < paired_z(noise, first) < 1 and paired_z(gain, first) > 5 and paired_z(first, first) == 0.0
    assert not clearly_better(noise, first) and not clearly_better(first, first)
    assert clearly_better(gain, first) and not clearly_better(first, gain)


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_a_cpu_training_hands_the_softmax_bfloat16_products_only_when_configured(monkeypatch, cpu_bf16):
    from crossrec_core.training import loss as loss_module
    from crossrec_core.training import optim

    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)  # whatever CPU runs the suite
    seen, real = [], loss_module.softmax_cross_entropy

    def spy(h, table, targets, low=None):
        seen.append(low)
        return real(h, table, targets, low)

    monkeypatch.setattr(loss_module, "softmax_cross_entropy", spy)
    train_model(pattern_dataset(n_users=40), small_config(epochs=1, patience=1, fusion_epochs=0, batch_choice=False, cpu_bf16=cpu_bf16))
    assert seen and set(seen) == {torch.bfloat16 if cpu_bf16 else None}
