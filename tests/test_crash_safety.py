"""Crash safety with real child processes killed by SIGKILL in the middle of a save or a training.

Each test saves a dataset and a model first, starts `python child.py` that overwrites them (or trains with
checkpoints), waits until the child is visibly mid-way (its staging folder or a checkpoint exists), kills it
with SIGKILL, and then checks that every previously saved entry loads with byte-identical files, that no
half-written entry is listed, and that a resumed training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ondisk import content_hash, folder_digest

from crossrec_core.data.dataset import from_frames
from crossrec_core.storage.datasets import list_datasets, load_dataset, save_dataset
from crossrec_core.storage.registry import list_models, load_model, save_model
from crossrec_core.storage.workspace import clean_stale_staging

REPO = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 90


def tiny_frames(n_users: int = 60, n_items: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(x)}", t, "view") for u in range(n_users) for t, x in enumerate(rng.integers(0, n_items, 6))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]).drop_duplicates(["user_id", "item_id"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "category": [f"C{i % 4}" for i in range(n_items)],
                          "title": [f"thing {i}" for i in range(n_items)]})
    return inter, items


def tiny_config_dict(epochs: int = 1) -> dict:
    from crossrec_core.config import (
        ItemEncoderConfig,
        ModelConfig,
        TrainConfig,
        UserEncoderConfig,
    )

    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                      train=TrainConfig(epochs=epochs, patience=epochs, batch_size=16, device="cpu", fusion_epochs=1, seed=5))
    return cfg.to_dict()


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """A workspace holding dataset 'keep' and model 'keep-model'; returns (root, digests, dataset hash)."""
    from crossrec_core.config import ModelConfig
    from crossrec_core.training.loop import train_model

    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    inter, items = tiny_frames()
    ds = from_frames(inter, items, name="keep")
    save_dataset(ds, "keep")
    model = train_model(ds, ModelConfig.from_dict(tiny_config_dict()), name="keep-model")
    save_model(model, root / "models" / "keep-model")
    digests = {"keep": folder_digest(root / "datasets" / "keep"), "keep-model": folder_digest(root / "models" / "keep-model")}
    return root, digests, content_hash(load_dataset("keep"))


def start_child(tmp_path: Path, root: Path, body: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, CROSSREC_HOME=str(root), PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(script)], env=env, cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = CHILD_TIMEOUT_S) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if the child ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the child ended (status {proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the child never reached the point where it should be killed")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def assert_previous_entries_intact(root: Path, digests: dict, ds_hash: str) -> None:
    assert folder_digest(root / "datasets" / "keep") == digests["keep"]
    assert folder_digest(root / "models" / "keep-model") == digests["keep-model"]
    assert content_hash(load_dataset("keep")) == ds_hash
    assert load_model(root / "models" / "keep-model").n_items == 20


def test_sigkill_during_a_dataset_save_loses_nothing(saved, tmp_path):
    root, digests, ds_hash = saved
    # the child builds a 2-million-event log and saves it over 'keep' (then as 'big'): killed mid-write
    proc = start_child(tmp_path, root, """
        import numpy as np, pandas as pd
        from crossrec_core.data.dataset import from_frames
        from crossrec_core.storage.datasets import save_dataset
        n = 2_000_000
        rng = np.random.default_rng(0)
        inter = pd.DataFrame({"user_id": (rng.integers(0, 50_000, n)).astype(str), "item_id": rng.integers(0, 90_000, n).astype(str),
                              "timestamp": np.arange(n), "event": "view"})
        ds = from_frames(inter, None, name="big")
        save_dataset(ds, "keep")
        save_dataset(ds, "big")
    """)
    staging = root / "tmp"
    kill_when(proc, lambda: any(p.name.startswith(".staging-keep") and (p / "events.parquet").exists()
                                for p in staging.iterdir()))
    assert [d.name for d in list_datasets()] == ["keep"]
    assert_previous_entries_intact(root, digests, ds_hash)
    assert clean_stale_staging() >= 1  # the killed save's staging folder is found and removed
    assert not list(staging.iterdir()) or all(p.name.startswith(".") and p.is_file() for p in staging.iterdir())
    assert [d.name for d in list_datasets()] == ["keep"]


def test_sigkill_during_a_model_save_loses_nothing(saved, tmp_path):
    root, digests, ds_hash = saved
    # the child trains its own tiny model, then saves it over 'keep-model' again and again until killed
    proc = start_child(tmp_path, root, f"""
        import pandas as pd
        from crossrec_core.config import ModelConfig
        from crossrec_core.storage.datasets import load_dataset
        from crossrec_core.storage.registry import save_model
        from crossrec_core.training.loop import train_model
        from crossrec_core.storage.workspace import models_dir
        model = train_model(load_dataset("keep"), ModelConfig.from_dict({tiny_config_dict()!r}), name="other")
        model.metrics = {{"padding": "x" * 5_000_000}}  # a slower write: more time inside the staging folder
        for _ in range(500):
            save_model(model, models_dir() / "keep-model")
    """)
    models = root / "models"
    kill_when(proc, lambda: any(p.name.startswith(".staging-keep-model") and (p / "model.safetensors").exists()
                                for p in models.iterdir()))
    # the model folder is either the old one or a complete new one written by the child, never a mix
    names = [m.name for m in list_models()]
    assert names == ["keep-model"]
    current = folder_digest(models / "keep-model")
    if current != digests["keep-model"]:
        meta = json.loads((models / "keep-model" / "metrics.json").read_text())
        assert len(meta["padding"]) == 5_000_000  # a complete save by the child
        assert load_model(models / "keep-model").name == "other"
    else:
        assert load_model(models / "keep-model").name == "keep-model"
    assert folder_digest(root / "datasets" / "keep") == digests["keep"]


def test_sigkill_during_training_then_resume_continues_from_the_checkpoint(saved, tmp_path):
    from crossrec_core.config import ModelConfig
    from crossrec_core.training.loop import train_model

    root, digests, ds_hash = saved
    ckpt = tmp_path / "ckpt"
    n_epochs = 6
    proc = start_child(tmp_path, root, f"""
        from crossrec_core.config import ModelConfig
        from crossrec_core.storage.datasets import load_dataset
        from crossrec_core.training.loop import train_model
        train_model(load_dataset("keep"), ModelConfig.from_dict({tiny_config_dict(n_epochs)!r}),
                    checkpoint_dir={str(ckpt)!r}, name="resumable")
    """)

    def two_epochs_done() -> bool:
        try:
            return json.loads((ckpt / "current" / "state.json").read_text())["epoch"] >= 2
        except (OSError, ValueError, KeyError):
            return False

    kill_when(proc, two_epochs_done)
    state = json.loads((ckpt / "current" / "state.json").read_text())
    done = int(state["epoch"])
    assert 2 <= done < n_epochs, "the child finished before it was killed"
    assert {"last.safetensors", "best.safetensors", "optimizer.safetensors"} <= {p.name for p in (ckpt / "current").iterdir()}

    second_state = ckpt / "random-batches" / "current" / "state.json"
    done_second = json.loads(second_state.read_text())["epoch"] if second_state.exists() else 0
    seen = []
    model = train_model(load_dataset("keep"), ModelConfig.from_dict(tiny_config_dict(n_epochs)), checkpoint_dir=ckpt,
                        resume=True, name="resumable", on_progress=lambda p: seen.append((p.phase, p.run, p.epoch)))
    # each run (they take turns, an epoch each) continues from its own checkpoint, not from 0
    first = json.loads((ckpt / "current" / "state.json").read_text())
    second = json.loads(second_state.read_text())
    for run, before, after in (("length buckets", done, first["epoch"]), ("random batches", done_second, second["epoch"])):
        assert sorted({e for phase, r, e in seen if phase == "train" and r == run}) == list(range(before + 1, after + 1)), run
    assert first["history"][:done] == state["history"][:done]  # the epochs before the crash are kept, not redone
    assert model.metrics["epochs_run"] == first["epoch"] + second["epoch"]
    kept = second if model.metrics["valid"]["random_batches"] else first
    assert [h["ndcg10"] for h in model.metrics["history"]] == [h["ndcg10"] for h in kept["history"]]
    # the resumed race is the uninterrupted one: the same rounds, drops and shipped run
    whole = train_model(load_dataset("keep"), ModelConfig.from_dict(tiny_config_dict(n_epochs)), name="whole")
    assert [r["epoch"] for r in whole.metrics["batch_rounds"]] == [r["epoch"] for r in model.metrics["batch_rounds"]]
    assert [r["z"] for r in whole.metrics["batch_rounds"]] == pytest.approx([r["z"] for r in model.metrics["batch_rounds"]])
    assert whole.metrics["valid"]["batch_dropped"] == model.metrics["valid"]["batch_dropped"]
    assert [h["ndcg10"] for h in whole.metrics["history"]] == pytest.approx([h["ndcg10"] for h in model.metrics["history"]])
    assert_previous_entries_intact(root, digests, ds_hash)


def test_sigkill_between_the_two_renames_of_an_overwrite_loses_nothing(saved, tmp_path):
    """Where the atomic folder exchange (Linux renameat2) is unavailable, an overwrite moves the old
    folder aside and then moves the new one in. A SIGKILL between the two renames must not lose the
    dataset: clean_stale_staging() puts the aside copy back. The child forces that fallback path and
    is killed exactly between the renames."""
    root, digests, ds_hash = saved
    proc = start_child(tmp_path, root, """
        import os, signal
        import crossrec_core.storage.workspace as ws
        from crossrec_core.storage.datasets import load_dataset, save_dataset
        ds = load_dataset("keep")
        ws._rename_exchange = lambda a, b: False  # the non-Linux path
        real_replace = os.replace
        def replace(src, dst):
            real_replace(src, dst)
            if os.path.basename(str(dst)).startswith(".old~datasets~keep~"):
                os.kill(os.getpid(), signal.SIGKILL)  # the power cut lands right after the first rename
        os.replace = replace
        save_dataset(ds, "keep")
    """)
    proc.wait(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    clean_stale_staging()
    assert [d.name for d in list_datasets()] == ["keep"], "the dataset vanished after a crash during its overwrite"
    assert_previous_entries_intact(root, digests, ds_hash)


def test_overwrite_uses_one_atomic_exchange_on_linux(saved, tmp_path):
    """On Linux the overwrite is a single renameat2(RENAME_EXCHANGE): the name is never missing."""
    from crossrec_core.storage import workspace as ws

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("new")
    (b / "f").write_text("old")
    if not ws._rename_exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this platform")
    assert (b / "f").read_text() == "new" and (a / "f").read_text() == "old"
