"""Private training (`crossrec train --dp-epsilon E`, training/private.py): one shopper = one clipped, noised
gradient per step; the reported epsilon stays within the requested one; non-private parts are off."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossrec_core.cli import main
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.errors import ConfigError
from crossrec_core.models.fusion import build_net
from crossrec_core.storage import registry
from crossrec_core.training import private as P
from crossrec_core.training.loop import _fill_buffers, compute_item_features, train_model
from crossrec_core.training.pipeline import train_and_save
from test_cli_model import _write_log
from test_train import pattern_dataset


def dp_config(kind: str = "transformer", **train) -> ModelConfig:
    base = dict(batch_size=64, lr=5e-3, seed=3, device="cpu", dp_epsilon=4.0, dp_epochs=2, n_negatives=16)
    base.update(train)
    return ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False),
        user=UserEncoderConfig(kind=kind, dim=16, max_len=6, n_layers=1, dropout=0.0),
        train=TrainConfig(**base),
    )


def core_and_windows(cfg: ModelConfig, n_users: int = 60):
    ds = pattern_dataset(n_users=n_users)
    feats = compute_item_features(ds, cfg, torch.device("cpu"), None)
    net = build_net(cfg, n_items=ds.n_items, n_categories=ds.n_categories, n_event_types=len(ds.event_names),
                    attr_vocab_size=len(feats["attr_vocab"]), use_text=False, n_vector_columns=0)
    _fill_buffers(net, ds, feats, np.ones(ds.n_items, dtype=np.float32))
    net.eval()
    return ds, P.PerUserLoss(net), P.one_window_per_user(ds, ds.leave_last_out(), cfg)


@pytest.fixture(scope="module")
def private_model():
    return P.train_private(pattern_dataset(n_users=120), dp_config())


def test_cli_trains_saves_and_reports_epsilon_within_budget(tmp_path, workspace, capsys):
    _write_log(tmp_path)
    out = tmp_path / "models" / "private"
    rc = main(["train", "--interactions", str(tmp_path / "log.csv"), "--items", str(tmp_path / "items.csv"), "--out", str(out),
               "--epochs", "2", "--device", "cpu", "--dp-epsilon", "3"])
    assert rc == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "differential privacy: epsilon" in printed and "(asked 3)" in printed
    assert "warning: This log has 30 shoppers: private training needs tens of thousands" in captured.err
    model = registry.load_model(out)
    privacy = json.loads((out / "metrics.json").read_text())["privacy"]
    assert 0 < privacy["epsilon"] <= 3.0 and privacy["delta"] == pytest.approx(1 / 30)
    assert model.config.train.dp_epsilon == 3.0 and len(model.metrics["history"]) == 2  # --epochs = private passes


def test_the_few_shoppers_warning_stops_at_the_measured_bound():
    assert "This log has 2,954 shoppers" in P.few_shoppers_warning(2_954)
    assert P.few_shoppers_warning(P.FEW_SHOPPERS - 1) is not None
    assert P.few_shoppers_warning(P.FEW_SHOPPERS) is None


@pytest.mark.parametrize("eps", [0.5, 8.0])
def test_reported_epsilon_is_at_most_the_requested_one(eps):
    model = P.train_private(pattern_dataset(n_users=80), dp_config(dp_epsilon=eps, dp_epochs=1))
    p = model.metrics["privacy"]
    assert p["epsilon"] <= eps and p["epsilon"] > 0.5 * eps  # spends the budget, not far less
    assert p["steps"] == math.ceil(1 / p["sample_rate"]) and p["noise_multiplier"] > 0


def test_smaller_epsilon_means_more_noise():
    plans = [P.plan_privacy(500, 600, dp_config(dp_epsilon=e)) for e in (1.0, 4.0, 8.0)]
    sigmas = [p.noise_multiplier for p in plans]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0
    assert plans[0].delta == pytest.approx(1 / 600) and plans[0].sample_rate == pytest.approx(64 / 500)


def test_one_window_per_shopper():
    cfg = dp_config()
    ds, _, windows = core_and_windows(cfg)
    train_end = ds.leave_last_out().train_end
    with_window = int(((train_end - ds.seqs.offsets[:-1]) >= 2).sum())
    assert windows.n == with_window  # every shopper with 2+ training events, once
    assert windows.tensors["items"].shape[1] == cfg.user.max_len


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_per_shopper_gradients_match_one_backward_per_shopper(kind):
    ds, core, w = core_and_windows(dp_config(kind))
    batch = {k: v[:5] for k, v in w.tensors.items()}
    negs = torch.arange(16)
    grads = P.per_user_gradients(core, batch, negs)
    params = [p for p in core.parameters()]
    names = [n for n, _ in core.named_parameters()]
    for i in range(5):
        loss = core(*(batch[k][i : i + 1] for k in ("items", "events", "gaps", "valid", "targets", "weights")), negs).sum()
        for n, g in zip(names, torch.autograd.grad(loss, params, allow_unused=True)):
            want = torch.zeros_like(grads[n][i]) if g is None else g
            assert torch.allclose(grads[n][i], want, atol=1e-5), (kind, n, i)


def test_a_huge_gradient_shopper_is_clipped_to_the_bound():
    ds, core, w = core_and_windows(dp_config())
    whale = {k: v[:1] for k, v in w.tensors.items()}
    negs = torch.arange(16)
    with torch.no_grad():  # the whale's items get enormous ID vectors: its loss gradient explodes
        core.item_encoder.id_emb.weight[whale["items"][0].clamp(min=0)] *= 1000.0
    raw = P.per_user_gradients(core, whale, negs)
    _, norms = P.clip_and_sum(raw, 1.0)
    assert float(norms[0]) > 100.0
    plan = P.PrivacyPlan(epsilon=1.0, delta=1e-3, sample_rate=0.5, steps=1, noise_multiplier=0.0, max_grad_norm=1.0, n_users=2)
    step = P.noisy_gradient(core, whale, negs, plan, expected_batch=1.0, gen=torch.Generator().manual_seed(0))
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in step.values()))
    assert total == pytest.approx(1.0, rel=1e-3)  # exactly the bound: scaled down, direction kept
    # a whole batch: every shopper's part is clipped, so the sum is at most batch size x bound
    batch = {k: v[:20] for k, v in w.tensors.items()}
    summed, norms = P.clip_and_sum(P.per_user_gradients(core, batch, negs), 0.01)
    assert float(norms.max()) > 0.01
    assert math.sqrt(sum(float(g.pow(2).sum()) for g in summed.values())) <= 20 * 0.01 + 1e-6


def test_noise_has_the_planned_scale():
    ds, core, w = core_and_windows(dp_config())
    empty = {k: v[:0] for k, v in w.tensors.items()}
    plan = P.PrivacyPlan(epsilon=1.0, delta=1e-3, sample_rate=0.5, steps=1, noise_multiplier=2.0, max_grad_norm=0.5, n_users=2)
    step = P.noisy_gradient(core, empty, torch.arange(16), plan, expected_batch=1.0, gen=torch.Generator().manual_seed(0))
    noise = torch.cat([g.flatten() for g in step.values()])
    assert noise.std().item() == pytest.approx(1.0, rel=0.1)  # noise_multiplier x clip, on every parameter


def test_non_private_parts_are_off(private_model):
    m = private_model
    assert m.knn is None and m.knn_weight == 0.0 and not m.fusion_rerank
    assert len(m.train_event_hashes) == 0 and not m.popularity.any() and not m.category_transitions.any()
    assert m.data_fingerprint == ""  # an exact hash of the log would identify it among candidates
    assert bool(m.net.item_encoder.id_mask.eq(1).all())  # which items anyone bought is not revealed
    assert m.metrics["best_epoch"] == m.config.train.dp_epochs  # last epoch: no choice on validation


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf"])
def test_invalid_epsilon_is_a_plain_error(tmp_path, workspace, capsys, bad):
    _write_log(tmp_path)
    rc = main(["train", "--interactions", str(tmp_path / "log.csv"), "--out", str(tmp_path / "m"), "--dp-epsilon", bad])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--dp-epsilon must be a number above 0" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="epsilon must be a number above 0"):
        TrainConfig(dp_epsilon=-2.0)


def test_private_config_cannot_train_without_noise(tmp_path):
    with pytest.raises(ConfigError, match="Private training"):
        train_model(pattern_dataset(n_users=20), dp_config())
    with pytest.raises(ConfigError, match="--ddp, --checkpoint-dir and --resume"):
        train_and_save(pattern_dataset(n_users=20), dp_config(), tmp_path / "m", checkpoint_dir=tmp_path / "ckpt")
    assert not (tmp_path / "m").exists()


def test_noise_cannot_be_regenerated_from_the_saved_seed(private_model):
    # the seed is saved with the model; noise drawn from it could be subtracted again, so it must not be
    again = P.train_private(pattern_dataset(n_users=120), dp_config())
    assert again.config.train.seed == private_model.config.train.seed
    a, b = private_model.net.user_encoder.out_norm.weight, again.net.user_encoder.out_norm.weight
    assert not torch.allclose(a, b)


def test_a_private_warm_start_is_refused_rather_than_trained_without_privacy(tmp_path, workspace, capsys):
    # a warm start takes the saved model's settings, which would silently drop --dp-epsilon
    _write_log(tmp_path)
    rc = main(["train", "--interactions", str(tmp_path / "log.csv"), "--out", str(tmp_path / "m"),
               "--dp-epsilon", "4", "--warm-start", str(tmp_path / "some-model")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "drop --warm-start" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
