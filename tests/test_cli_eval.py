"""`crossrec evaluate` end to end on a tiny trained model, plus the evaluation modules on a real TrainedModel."""

import json

import numpy as np
import pandas as pd
import pytest

from crossrec_core.cli import main

train_mod = pytest.importorskip("crossrec_core.training.loop")
registry = pytest.importorskip("crossrec_core.storage.registry")
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig  # noqa: E402
from crossrec_core.data.dataset import from_frames  # noqa: E402
from journeys import journey_frames  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Return (model folder, interactions csv, items csv, model, dataset) for a tiny model trained once."""
    root = tmp_path_factory.mktemp("evalcli")
    inter, items = journey_frames()
    inter_path, items_path = root / "interactions.csv", root / "items.csv"
    inter.to_csv(inter_path, index=False)
    items.to_csv(items_path, index=False)
    ds = from_frames(inter, items, name="tiny")
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=8, use_text=False),
        user=UserEncoderConfig(dim=8, n_layers=1, max_len=8),
        train=TrainConfig(epochs=2, device="cpu", fusion_epochs=1, seed=0),
    )
    model = train_mod.train_model(ds, cfg, name="tiny")
    folder = registry.save_model(model, root / "tiny-model")
    return folder, inter_path, items_path, model, ds


def test_cli_evaluate_prints_table_and_writes_json(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    folder, inter_path, items_path, _, _ = trained
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--model", str(folder), "--interactions", str(inter_path), "--items", str(items_path),
               "--k", "3", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "all users (n=60)" in captured.out and "novel users" in captured.out
    for name in ("popularity", "item-kNN", "next-item rules", "category-transition", "HR@3", "NDCG@3"):
        assert name in captured.out
    data = json.loads(out.read_text())
    assert {"dataset", "split", "k", "n_users", "metrics", "per_category", "model"} <= set(data)
    assert data["k"] == 3 and data["n_users"]["all"] == 60
    assert set(data["metrics"]) == {data["model"], "popularity", "item-kNN", "next-item rules", "category-transition"}
    for method in data["metrics"].values():
        assert set(method) == {"all", "switch", "novel"}
        assert 0.0 <= method["all"]["HR@3"] <= 1.0


def test_cli_evaluate_bad_input_exits_2_without_traceback(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    folder, inter_path, _, _, _ = trained
    rc = main(["evaluate", "--model", str(tmp_path / "nope"), "--interactions", str(inter_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("crossrec: error:") and "Traceback" not in err
    rc = main(["evaluate", "--model", str(folder), "--interactions", str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.csv" in err
    rc = main(["evaluate", "--model", str(folder), "--interactions", str(inter_path), "--k", "0"])
    assert rc == 2 and "--k" in capsys.readouterr().err


def test_real_model_through_evaluator_thresholds_and_affinity(trained):
    from crossrec_core.evaluation.affinity import journey_recall, learned_affinity
    from crossrec_core.evaluation.evaluator import evaluate_rankers
    from crossrec_core.evaluation.thresholds import threshold_curve

    _, _, _, model, ds = trained
    res = evaluate_rankers(ds, {"crossrec": model}, k=3)
    assert res.subset_sizes["all"] == 60 and res.subset_sizes["switch"] == 60  # every target is a new category
    assert 0.0 <= res.value("crossrec", "all", "HR@3") <= 1.0
    curve = threshold_curve(model, ds, k=3, n_candidates=5)
    top = curve.scope("top_k")
    assert (np.diff(top["recall"].to_numpy()) <= 1e-12).all()
    assert curve.split == "test" and curve.chosen_on == "valid"  # reported on test, chosen on validation
    on_valid = threshold_curve(model, ds, k=3, n_candidates=5, split="valid")
    assert curve.best_f1 == pytest.approx(on_valid.scope("top_k")["f1"].max())
    assert curve.best_threshold == pytest.approx(on_valid.best_threshold)
    # per-item precision, per-shopper precision, items shown per shopper and coverage at every threshold
    assert {"precision", "precision_per_user", "items_per_user", "coverage"} <= set(top.columns)
    assert top["items_per_user"].iloc[0] == pytest.approx(3.0) and (np.diff(top["items_per_user"]) <= 1e-12).all()
    aff = learned_affinity(model, ds, max_users=30)
    np.testing.assert_allclose(aff.sum(axis=1, min_count=1).dropna(), 1.0, rtol=1e-6)
    journeys = pd.DataFrame(
        [(0, "tent -> boots", 1, "Camping", "tent", ["t0", "t1", "t2"], 60),
         (0, "tent -> boots", 2, "Footwear", "boots", ["b0", "b1"], 60)],
        columns=["journey_id", "name", "step", "category", "product", "item_ids", "n_users"],
    )
    rep = journey_recall(model, ds, journeys, k=3)
    assert rep.total == 1 and rep.steps["n_probes"].iloc[0] == 3
