"""Tests of crossrec_core.training.bootstrap: the demo is built once and never rebuilt or retrained."""

import time

import pandas as pd

from crossrec_core.training import bootstrap
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig


def test_demo_dataset_is_built_once_with_its_journeys(workspace):
    from crossrec_core.storage.datasets import list_datasets, load_extra

    assert not bootstrap.demo_dataset_exists()
    assert bootstrap.ensure_demo_dataset() == "demo-store"
    manifest = workspace / "datasets" / "demo-store" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert bootstrap.ensure_demo_dataset() == "demo-store"
    assert manifest.stat().st_mtime_ns == stamp  # not rebuilt
    assert [d.name for d in list_datasets()] == ["demo-store"]
    journeys = load_extra("demo-store", "journeys")
    assert isinstance(journeys, pd.DataFrame) and len(journeys) > 0


def test_ensure_demo_keeps_an_existing_model_and_starts_no_job(workspace):
    from crossrec_core.training import jobs
    from crossrec_core.data.dataset import from_frames
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    bootstrap.ensure_demo_dataset()
    inter = pd.DataFrame({"user_id": [f"u{u}" for u in range(20) for _ in range(5)],
                          "item_id": [f"i{(u + j) % 6}" for u in range(20) for j in range(5)],
                          "timestamp": [j for _ in range(20) for j in range(5)]})
    cfg = ModelConfig(item=ItemEncoderConfig(dim=8, use_text=False), user=UserEncoderConfig(kind="gru", dim=8),
                      train=TrainConfig(epochs=1, fusion_epochs=1, device="cpu"))
    save_model(train_model(from_frames(inter), cfg, name="demo-model"), workspace / "models" / "demo-model")
    t0 = time.perf_counter()
    assert bootstrap.ensure_demo() == ("demo-store", "demo-model")
    assert time.perf_counter() - t0 < 5  # found, not retrained
    assert bootstrap.start_demo_training() is None
    assert jobs.list_jobs() == []
    assert bootstrap.main([]) == 0  # the terminal entry point: same answer, nothing trained




def test_demo_config_caps_epochs():
    cfg = bootstrap.demo_config()
    assert cfg.train.epochs <= 8 and cfg.train.epochs <= ModelConfig().train.epochs


def test_a_demo_model_of_an_older_format_is_trained_again(tmp_path):
    """A workspace from before model format 2 (no calibration): the demo model counts as missing."""
    import json

    from crossrec_core.training.bootstrap import DEMO_MODEL, demo_model_exists
    from crossrec_core.storage.catalog import MODEL_FORMAT_VERSION

    folder = tmp_path / "models" / DEMO_MODEL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format_version": MODEL_FORMAT_VERSION - 1}))
    assert not demo_model_exists(tmp_path)
    (folder / "config.json").write_text(json.dumps({"format_version": MODEL_FORMAT_VERSION}))
    assert demo_model_exists(tmp_path)
    (folder / "config.json").write_text("{not json")
    assert not demo_model_exists(tmp_path)
