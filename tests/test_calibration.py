"""Probabilities that mean what they say (issue 14): calibration metric, the Platt mapping, the fusion
fit on held-out positions, the leak guard and the threshold saved with a model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crossrec_core.storage import registry
from crossrec_core.cli import main
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from journeys import journey_frames
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.evaluation.evaluator import evaluate_rankers
from crossrec_core.evaluation.metrics import calibration_report
from crossrec_core.models.calibration import Calibration, log_normaliser
from crossrec_core.models.features import FEATURES
from crossrec_core.training.fusion_fit import FusionData, fit_fusion
from crossrec_core.models.fusion import FusionScorer
from crossrec_core.training.loop import train_model
from crossrec_core.serving.recommender import Recommender


def test_calibration_report_by_hand():
    p = np.array([0.05, 0.05, 0.05, 0.05, 0.95, 0.95])
    y = np.array([1, 0, 0, 0, 1, 1], dtype=bool)
    r = calibration_report(p, y, n_bins=10)
    # bin [0, .1): mean .05 vs rate .25 (4 rows); bin [.9, 1]: mean .95 vs rate 1 (2 rows)
    assert r["ece"] == pytest.approx(4 / 6 * 0.20 + 2 / 6 * 0.05)
    assert r["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert [b["n"] for b in r["bins"]] == [4, 2] and r["bins"][0]["rate"] == pytest.approx(0.25)
    assert r["mean_proba"] == pytest.approx(p.mean()) and r["positive_rate"] == pytest.approx(0.5)
    assert calibration_report(np.array([np.nan]), np.array([True]))["n"] == 0


def test_platt_fit_recovers_a_known_mapping_and_is_increasing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200_000)
    cold = rng.random(200_000) < 0.3
    true = Calibration(a=1.5, b=-3.0, c=0.5, e=-0.5)
    y = rng.random(200_000) < true.apply(x[:, None], cold)[:, 0]
    got = Calibration.fit(x, y, cold)
    assert (got.a, got.b, got.c, got.e) == pytest.approx((1.5, -3.0, 0.5, -0.5), abs=0.08)
    # a logit that carries no signal (or the wrong sign) still gives an increasing mapping
    flipped = Calibration.fit(x, rng.random(200_000) < 1 / (1 + np.exp(2 * x + 3)), cold)
    assert flipped.a > 0 and flipped.a + flipped.e > 0
    p = flipped.apply(np.sort(x)[None, :], np.zeros(1, bool))[0]
    assert (np.diff(p) >= 0).all()
    assert Calibration.from_dict(got.to_dict()) == got


def test_the_log_softmax_basis_is_blind_to_a_per_user_shift_of_the_logits():
    """A listwise-trained scorer fixes each user's logits only up to a shift of their own (measured:
    2-4x under-confident tops on every log). Plant it: each user's target is drawn from the softmax of
    true scores (present 60 % of the time), the logits seen are those scores plus a per-user offset.
    One curve through raw logits flattens and under-states the top row; through the log-softmax it
    matches the observed rate at the top and over the list, and the old saved form still loads."""
    rng = np.random.default_rng(3)
    U, N = 20_000, 30
    s = rng.normal(size=(U, N)) * 1.5
    soft = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    present = rng.random(U) < 0.6
    target = (soft.cumsum(axis=1) < rng.random(U)[:, None]).sum(axis=1).clip(max=N - 1)
    labels = np.zeros((U, N), bool)
    labels[np.flatnonzero(present), target[present]] = True
    logits = s + rng.normal(size=(U, 1)) * 3.0
    cold = np.zeros(U, bool)
    valid = np.ones((U, N), bool)
    norm = log_normaliser(logits, valid)
    np.testing.assert_allclose(norm, np.log(np.exp(logits).sum(axis=1)), rtol=1e-9)
    order = np.argsort(-logits, axis=1)
    top1 = order[:, 0]
    rows = np.arange(U)
    raw = Calibration.fit(logits.ravel(), labels.ravel(), np.zeros(U * N, bool))
    lsm = Calibration.fit((logits - norm[:, None]).ravel(), labels.ravel(), np.zeros(U * N, bool), basis="log_softmax")
    rate1 = labels[rows, top1].mean()
    p_raw = raw.apply(logits, cold)[rows, top1].mean()
    p_lsm = lsm.apply(logits, cold, norm)[rows, top1].mean()
    assert p_raw < 0.75 * rate1  # the pooled raw-logit curve under-states the top row
    assert p_lsm == pytest.approx(rate1, rel=0.08)
    top10 = np.take_along_axis(lsm.apply(logits, cold, norm), order[:, :10], axis=1).mean()
    assert top10 == pytest.approx(np.take_along_axis(labels, order[:, :10], axis=1).mean(), rel=0.05)
    with pytest.raises(ValueError, match="normaliser"):
        lsm.apply(logits, cold)
    assert Calibration.from_dict(lsm.to_dict()) == lsm
    old = {"a": 1.0, "b": -2.0, "c": 0.0, "e": 0.0}  # calibration.json of a model saved before the basis
    assert Calibration.from_dict(old).basis == "logit" and not Calibration.from_dict(old).needs_normaliser


def test_fusion_fit_learns_a_planted_cross_category_signal_and_stays_on():
    """Candidates where the target is the item of a NEW category: retrieval ranks it anywhere, the
    'cat_new' feature gives it away. Held-out users must show the re-rank winning, so it stays on."""
    rng = np.random.default_rng(1)
    U, N = 1200, 20
    f = rng.normal(size=(U, N, len(FEATURES))).astype(np.float32)
    new = FEATURES.index("cat_new")
    f[..., new] = 0.0
    target = rng.integers(0, N, U)
    f[np.arange(U), target, new] = 1.0
    labels = np.zeros((U, N), bool)
    labels[np.arange(U), target] = True
    data = FusionData(f, labels, np.zeros(U, bool), np.ones((U, N), bool))
    import torch

    fit = fit_fusion(FusionScorer(), data, epochs=20, seed=0, device=torch.device("cpu"))
    assert fit["rerank"] and fit["ndcg10_fusion"] > 0.9 > fit["ndcg10_retrieval"]
    assert fit["oof_mean_proba"] == pytest.approx(fit["oof_positive_rate"], abs=0.01)


def test_fusion_fit_does_not_depend_on_the_scale_of_the_retrieval_score():
    """The validated blends can stretch retrieval a hundredfold (an item-kNN weight of 1000): the residual
    scorer divides its base by retrieval's spread, so the same candidates scaled 5x or 500x give the same
    re-rank, the same held-out NDCG and the same probabilities."""
    import torch

    rng = np.random.default_rng(2)
    U, N = 800, 20
    f = rng.normal(size=(U, N, len(FEATURES))).astype(np.float32)
    target = rng.integers(0, N, U)
    labels = np.zeros((U, N), bool)
    labels[np.arange(U), target] = True
    ret, gap, new = (FEATURES.index(n) for n in ("retrieval", "retrieval_gap", "cat_new"))
    f[..., new] = (rng.random((U, N)) < 0.2).astype(np.float32)
    f[np.arange(U), target, ret] += 1.5  # retrieval knows something, cat_new a little more
    f[np.arange(U), target, new] = 1.0
    fits = []
    for scale in (5.0, 500.0):
        g = f.copy()
        g[..., ret] *= scale
        g[..., gap] = g[..., ret] - g[..., ret].max(axis=1, keepdims=True)
        fits.append(fit_fusion(FusionScorer(), FusionData(g, labels, np.zeros(U, bool), np.ones((U, N), bool)),
                               epochs=8, seed=0, device=torch.device("cpu")))
    a, b = fits
    assert b["ndcg10_fusion"] == pytest.approx(a["ndcg10_fusion"], abs=1e-3)
    assert b["oof_mean_proba"] == pytest.approx(a["oof_mean_proba"], rel=1e-2)
    assert a["rerank"] == b["rerank"] and a["epochs"] == b["epochs"]
    assert b.get("retrieval_scale") == pytest.approx(100 * a.get("retrieval_scale", 0), rel=1e-4)
    assert a["ndcg10_fusion"] > a["ndcg10_retrieval"]


# -- on a trained model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    inter, items = journey_frames()
    inter.to_csv(root / "log.csv", index=False)
    items.to_csv(root / "items.csv", index=False)
    ds = from_frames(inter, items, name="tiny")
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=8, use_text=False),
        user=UserEncoderConfig(dim=8, n_layers=1, max_len=8),
        train=TrainConfig(epochs=2, device="cpu", fusion_epochs=2, seed=0),
    )
    model = train_model(ds, cfg, name="tiny")
    return root, registry.save_model(model, root / "model"), model, ds, inter, items


def test_model_records_its_training_events_and_the_guard_refuses_a_leak(tiny, tmp_path, capsys):
    root, folder, model, ds, inter, items = tiny
    # trained on events before each user's last two: 2 events x 60 users
    assert len(model.train_event_hashes) == 120
    res = evaluate_rankers(ds, {"tiny": model}, k=3)  # its own log: targets were held out -> fine
    assert res.warnings == [] and res.calibration["tiny"]["n"] == 180
    # a shorter export of the same log: its last events are ones the model was trained on
    short = inter[inter["timestamp"] <= 2]
    with pytest.raises(ModelError, match="trained on 60 of the 60 events held out"):
        evaluate_rankers(from_frames(short, items, name="older"), {"tiny": model}, k=3)
    res = evaluate_rankers(from_frames(short, items, name="older"), {"tiny": model}, k=3, allow_seen=True)
    assert res.warnings and "WARNING" in res.to_text() and res.to_dict()["warnings"] == res.warnings
    short.to_csv(tmp_path / "older.csv", index=False)
    args = ["evaluate", "--model", str(folder), "--interactions", str(tmp_path / "older.csv"), "--items", str(root / "items.csv"), "--k", "3"]
    assert main(args) == 2 and "--allow-seen" in capsys.readouterr().err
    assert main([*args, "--allow-seen", "--json", str(tmp_path / "e.json")]) == 0
    assert "WARNING" in capsys.readouterr().err and json.loads((tmp_path / "e.json").read_text())["warnings"]


def test_evaluator_scores_exactly_what_recommend_writes(tiny, tmp_path, monkeypatch):
    """Issue 14.1: the evaluator's top-K per user equals `crossrec recommend`'s rows for the same history."""
    root, folder, model, ds, inter, items = tiny
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    # the test history of every user = every event but the last: that log through the CLI
    history = inter[inter["timestamp"] < 4]
    history.to_csv(tmp_path / "hist.csv", index=False)
    assert main(["recommend", "--model", str(folder), "--interactions", str(tmp_path / "hist.csv"), "--k", "3", "--out", str(tmp_path / "r.csv")]) == 0
    cli = pd.read_csv(tmp_path / "r.csv", dtype={"user_id": str, "item_id": str})
    from crossrec_core.evaluation.evaluator import rank_shipped, ranker_space, split_targets

    t = split_targets(ds, "test")
    top, prob = rank_shipped(model, ranker_space(model, ds, t.users, t.ends, t.targets), t.users, 3)
    for row, u in enumerate(t.users):
        rows = cli[cli["user_id"] == ds.user_ids[u]].sort_values("rank")
        assert rows["item_id"].tolist() == list(model.item_ids[top[row]])
        np.testing.assert_allclose(rows["score"].to_numpy(), prob[row], rtol=1e-4, atol=1e-6)


def test_threshold_saved_with_the_model_is_used_by_recommend(tiny, tmp_path, monkeypatch):
    root, folder, model, ds, inter, items = tiny
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    out = tmp_path / "r.csv"
    base = ["recommend", "--model", str(folder), "--interactions", str(root / "log.csv"), "--k", "4", "--out", str(out)]
    assert main([*base, "--threshold", "model"]) == 0  # none saved yet: no threshold
    full = pd.read_csv(out)
    assert len(full) == 4 * 60
    t = float(full["score"].median())
    registry.save_threshold(folder, t)
    assert registry.load_model(folder).threshold == pytest.approx(t)
    assert main([*base, "--threshold", "model"]) == 0
    cut = pd.read_csv(out)
    assert len(cut) < len(full) and (cut["score"] >= t - 1e-6).all()
    registry.save_threshold(folder, None)
    assert registry.load_model(folder).threshold is None
    with pytest.raises(ConfigError):
        registry.save_threshold(folder, 1.5)
    assert main([*base, "--threshold", "most"]) == 2


def test_a_model_saved_before_the_residual_scorer_keeps_its_old_logit(tiny, tmp_path):
    """Models saved before the fusion scorer became a residual on retrieval have no ``fusion.base_weight``:
    they load with 0 (logit = linear + MLP, as they were fitted), today's with 1."""
    import shutil

    import torch

    _root, folder, model, *_ = tiny
    assert float(registry.load_model(folder).net.fusion.base_weight) == 1.0
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    weights = registry.read_safetensors(old / "model.safetensors")
    del weights["fusion.base_weight"]
    registry.write_safetensors(old / "model.safetensors", weights)
    loaded = registry.load_model(old)
    assert float(loaded.net.fusion.base_weight) == 0.0
    x = torch.randn(2, 3, len(FEATURES))
    f = loaded.net.fusion
    torch.testing.assert_close(f(x), (f.linear((x - f.mean) / f.std) + f.mlp((x - f.mean) / f.std)).squeeze(-1))


def test_a_model_saved_before_the_next_item_rules_feature_reads_its_own_columns(tiny, tmp_path):
    """A scorer saved with the features before "next_rules" (the last one, appended in session 11) and no
    rules table: it loads with its own width, reads the first columns of today's features, and recommends."""
    import shutil

    import torch

    _root, folder, model, ds, *_ = tiny
    assert FEATURES[-1] == "next_rules" and model.rules is not None
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    w = registry.read_safetensors(old / "model.safetensors")
    n = len(FEATURES) - 1
    for key in ("fusion.linear.weight", "fusion.mlp.0.weight"):
        w[key] = w[key][:, :n].contiguous()
    for key in ("fusion.mean", "fusion.std"):
        w[key] = w[key][:n].contiguous()
    registry.write_safetensors(old / "model.safetensors", w)
    aux = registry.read_safetensors(old / "aux.safetensors")
    registry.write_safetensors(old / "aux.safetensors", {k: v for k, v in aux.items() if not k.startswith("rules_")})
    loaded = registry.load_model(old)
    f = loaded.net.fusion
    assert f.n_features == n and loaded.rules is None
    x = torch.randn(2, 3, len(FEATURES))
    torch.testing.assert_close(f(x), f(torch.cat([x[..., :n], torch.zeros(2, 3, 1)], dim=-1)))  # the new column is not read
    users = np.arange(ds.n_users, dtype=np.int64)
    rec = Recommender(loaded, ds).recommend_batch(ds.seqs, users, ds.seqs.offsets[1:].astype(np.int64), 3)
    assert len(rec) == 3 * ds.n_users and rec["probability"].between(0, 1).all()


def test_probabilities_of_the_rows_a_list_shows_match_their_observed_rate(monkeypatch):
    """Candidates at the bottom of the pool (novel-category slots) sit far below the rest on the logit
    scale and hold some targets. Fitted through every row, one logistic curve flattens at the top and
    the shown rows come out under-confident; fitted on each user's best rows, they match."""
    import torch

    from crossrec_core.training import fusion_fit

    rng = np.random.default_rng(0)
    U, N, slots = 3000, 50, 10
    f = np.zeros((U, N, len(FEATURES)), dtype=np.float32)
    r = np.sort(rng.normal(size=(U, N - slots)) * 2.0, axis=1)[:, ::-1]
    f[:, : N - slots, FEATURES.index("retrieval")] = r
    f[:, N - slots :, FEATURES.index("retrieval")] = -40.0 + rng.normal(size=(U, slots))
    labels = np.zeros((U, N), bool)
    p_top = 1.0 / (1.0 + np.exp(-(1.5 * r - 6.0)))  # the planted truth for the retrieval rows
    hit = rng.random((U, N - slots)) < p_top
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    labels[np.arange(U)[first >= 0], first[first >= 0]] = True
    novel = (first < 0) & (rng.random(U) < 0.3)  # a third of the rest: the target is in a bottom slot
    labels[np.flatnonzero(novel), N - slots + rng.integers(0, slots, int(novel.sum()))] = True
    data = FusionData(f, labels, np.zeros(U, bool), np.ones((U, N), bool))

    def top10_gap() -> float:
        scorer = FusionScorer()
        fit = fit_fusion(scorer, data, epochs=0, seed=0, device=torch.device("cpu"))
        # what orders the list and is calibrated: the scorer's logit (retrieval over its spread, at epoch 0)
        rel = fusion_fit.fusion_logits(scorer, f, torch.device("cpu")) if fit["rerank"] else f[..., FEATURES.index("retrieval")]
        p = fit["calibration"].apply(rel, data.cold, log_normaliser(rel, data.valid))
        shown = np.zeros((U, N), bool)
        shown[:, :10] = True  # retrieval rows are sorted: the first ten are each user's list
        return abs(float(p[shown].mean()) - float(labels[shown].mean())) / float(labels[shown].mean())

    assert top10_gap() < 0.1
    monkeypatch.setattr(fusion_fit, "CALIBRATION_TOP", N)  # the old fit, through every row
    assert top10_gap() > 0.2


def test_the_rerank_switch_weighs_novel_targets_as_the_scorer_was_fitted():
    """A scorer that loses a little on everyone but gains much on novel targets stays on (the old
    either-or rule switched it off); one that loses on the weighted sum goes off."""
    from crossrec_core.training.fusion_fit import keep_rerank

    rng = np.random.default_rng(0)
    U = 4000
    novel = rng.random(U) < 0.15
    base = rng.random(U) * 0.3
    trade = base + np.where(novel, 0.10, -0.01)  # all users: -0.0085 on average, significant alone
    assert keep_rerank(trade, base, novel, 2.0, seed=0)
    worse = base + np.where(novel, 0.01, -0.02)
    assert not keep_rerank(worse, base, novel, 2.0, seed=0)
    assert keep_rerank(base, base, novel, 2.0, seed=0)  # a tie keeps the re-rank (the design)
