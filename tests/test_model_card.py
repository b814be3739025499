"""The model card: read from a model folder's JSON files (no weights), with the dataset it was trained on."""

from __future__ import annotations

import json

import pytest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.load import load_log
from crossrec_core.errors import ModelError
from crossrec_core.storage.datasets import save_dataset
from crossrec_core.storage.model_card import model_card, with_test

METRICS = {"best_epoch": 4, "train_seconds": 125.0, "history": [{"epoch": e} for e in range(1, 8)],
           "valid": {"ndcg10": 0.0312, "hr10": 0.061, "n": 295, "ndcg10_knn": 0.2065, "fusion_rerank": True,
                     "calibration": {"a": 1.0}}}


def write_model_folder(root, name: str, fingerprint: str, metrics: dict = METRICS) -> None:
    """Write the JSON files of a model folder by hand (the card reads nothing else)."""
    cfg = ModelConfig(item=ItemEncoderConfig(dim=32, use_text=False), user=UserEncoderConfig(kind="lstm", dim=32),
                      train=TrainConfig(epochs=40, patience=6))
    folder = root / "models" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format_version": 2, "name": name, "config": cfg.to_dict(),
                                                    "sizes": {"n_items": 5, "use_text": False}}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "fingerprint.json").write_text(json.dumps({"data_fingerprint": fingerprint}))


@pytest.fixture
def shop(workspace, tiny_frames):
    ds = load_log(*tiny_frames, name="shop")
    save_dataset(ds, "shop")
    return ds


def test_the_card_says_what_the_model_was_trained_on_how_and_how_well(workspace, shop):
    write_model_folder(workspace, "m", shop.fingerprint())
    card = model_card("m")
    assert card.datasets == ("shop",) and card.dataset == "shop"
    assert card.saved.endswith("UTC") and len(card.saved) == len("2024-01-01 12:00 UTC")
    settings = dict(card.settings)
    assert settings["Sequence encoder"] == "lstm"
    assert settings["Vector size"] == "32"
    assert settings["Reads product titles"] == "no"
    assert settings["At most this many epochs"] == "40"
    assert settings["Stops after epochs without progress"] == "6"
    assert dict(card.training) == {"Best epoch": "4 of 7 run", "Training time": "2.1 min"}
    # a model trained since session 7 records when it finished (an import rewrites its files' times)
    write_model_folder(workspace, "m2", shop.fingerprint(), {**METRICS, "trained_at": "2026-11-30 08:40 UTC"})
    assert dict(model_card("m2").training)["Trained"] == "2026-11-30 08:40 UTC"
    valid = dict(card.validation)
    assert valid["NDCG@10, sequence model alone (best epoch)"] == "0.0312"
    assert valid["NDCG@10 with item-to-item neighbours (bought together, or bought next)"] == "0.2065"
    assert valid["Validation shoppers"] == "295" and valid["Fusion re-rank kept"] == "yes"
    assert "Item neighbours" not in valid  # a model trained before the choice existed says nothing about it
    assert "Batches kept" not in valid
    batches = {**METRICS, "valid": {**METRICS["valid"], "batch_choice": {"length buckets": 0.2, "random batches": 0.25}, "random_batches": True}}
    write_model_folder(workspace, "m4", shop.fingerprint(), batches)
    assert dict(model_card("m4").validation)["Batches kept"] == "random batches (NDCG@10 length buckets 0.2000, random batches 0.2500)"
    raced = {**batches, "epochs_run": 12, "run_histories": {"length buckets": [{}], "random batches": [{}]},
             "valid": {**batches["valid"], "batch_dropped": {"length buckets": 5}}}
    write_model_folder(workspace, "m5", shop.fingerprint(), raced)
    card5 = model_card("m5")
    assert dict(card5.validation)["Batches kept"].endswith("; length buckets dropped after epoch 5, clearly behind)")
    assert dict(card5.training)["Epochs, both runs"] == "12"
    chose = {**METRICS, "valid": {**METRICS["valid"], "knn_next_items": True}}
    write_model_folder(workspace, "m3", shop.fingerprint(), chose)
    assert dict(model_card("m3").validation)["Item neighbours"] == "bought next (next-item rules)"
    rows = card.rows()
    assert rows[0] == {"section": "Model", "field": "Trained on", "value": "shop"}
    assert rows[-1]["section"] == "Test" and "not measured yet" in rows[-1]["value"]


def test_test_figures_come_from_an_evaluation_or_from_the_folder(workspace, shop):
    write_model_folder(workspace, "m", shop.fingerprint())
    card = with_test(model_card("m"), {"HR@10": 0.25, "NDCG@10": 0.125}, "shop, 3 shoppers")
    assert card.test == [("Measured on", "shop, 3 shoppers"), ("HR@10", "0.2500"), ("NDCG@10", "0.1250")]
    assert not any("not measured yet" in r["value"] for r in card.rows())
    write_model_folder(workspace, "m2", shop.fingerprint(), {**METRICS, "test": {"NDCG@10": 0.5}})
    assert model_card("m2").test == [("NDCG@10", "0.5000")]


def test_an_evaluation_recorded_in_the_folder_is_the_cards_test_figures_until_the_next_one(workspace, shop):
    from crossrec_core.storage.model_card import TEST_FILE, record_test_figures

    write_model_folder(workspace, "m", shop.fingerprint(), {**METRICS, "test": {"NDCG@10": 0.5}})
    assert record_test_figures("m", {"NDCG@10": 0.25, "HR@10": 0.5, "note": "x"}, "shop, 3 shoppers' last events")
    test = dict(model_card("m").test)
    assert test["Measured on"] == "shop, 3 shoppers' last events" and test["Measured"].endswith("UTC")
    assert (test["NDCG@10"], test["HR@10"]) == ("0.2500", "0.5000") and "note" not in test  # numbers only
    stamp = (workspace / "models" / "m" / TEST_FILE).stat().st_mtime_ns
    assert not record_test_figures("m", {"NDCG@10": 0.25, "HR@10": 0.5}, "shop, 3 shoppers' last events")  # unchanged: no write
    assert (workspace / "models" / "m" / TEST_FILE).stat().st_mtime_ns == stamp
    assert record_test_figures("m", {"NDCG@10": 0.3}, "other, 5 shoppers' last events")  # the newest evaluation wins
    assert dict(model_card("m").test)["NDCG@10"] == "0.3000"
    assert not record_test_figures("no-such-model", {"NDCG@10": 0.3}, "x")
    (workspace / "models" / "m" / TEST_FILE).write_text("{not json")  # a damaged record leaves the card readable
    assert model_card("m").test == [("NDCG@10", "0.5000")]


def test_a_model_trained_on_a_log_outside_the_workspace_has_no_dataset_to_load(workspace, shop):
    write_model_folder(workspace, "m", "another-fingerprint", {})
    card = model_card("m")
    assert card.datasets == () and card.dataset is None
    assert card.training == [] and card.validation == []
    assert card.rows()[0]["value"] == "a log that is not in this workspace"


def test_a_missing_model_is_a_model_error(workspace):
    (workspace / "models").mkdir()
    with pytest.raises(ModelError):
        model_card("nope")


def test_an_evaluation_in_a_workspace_that_cannot_be_written_is_still_shown(workspace, shop, monkeypatch):
    from crossrec_core.evaluation import report
    from crossrec_core.errors import StorageError

    class Result:  # what record_evaluation reads of an EvaluationResult
        methods, k, subset_sizes = ["crossrec"], 10, {"all": 3, "novel": 1}

        def value(self, method, subset, metric):
            return 0.5

    write_model_folder(workspace, "m", shop.fingerprint())
    monkeypatch.setattr(report, "model_test_figures", lambda result: {"NDCG@10": 0.25})
    assert report.record_evaluation("m", "shop", Result())
    assert dict(model_card("m").test)["NDCG@10, next product in a new category"] == "0.5000"

    def full(*a, **k):
        raise StorageError("The disk is full.")

    monkeypatch.setattr(report, "record_test_figures", full)
    assert report.record_evaluation("m", "shop", Result()) is False  # logged, not raised: the page still draws
