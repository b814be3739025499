"""Concurrency: two processes saving the same name, and two studio sessions while a training job runs.

Two child processes wait on a start file, then save their own version of the same dataset (or model) name
several times, interleaved. Afterwards the entry loads and equals one of the two versions exactly; nothing
half-written is left. In the studio, one AppTest session starts training on the Train page (a real
background job process) while a second session renders the map and the recommendations pages.
"""

from __future__ import annotations

import os
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

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
ROUNDS = 4


def frames(seed: int, n_users: int = 50, n_items: int = 16):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(x)}", t, "view") for u in range(n_users) for t, x in enumerate(rng.integers(0, n_items, 6))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]).drop_duplicates(["user_id", "item_id"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "category": [f"C{i % 4}" for i in range(n_items)],
                          "title": [f"thing {i}" for i in range(n_items)]})
    return inter, items


def tiny_config(epochs: int = 1, seed: int = 0):
    from crossrec_core.config import (
        ItemEncoderConfig,
        ModelConfig,
        TrainConfig,
        UserEncoderConfig,
    )

    return ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                       train=TrainConfig(epochs=epochs, patience=epochs, batch_size=16, device="cpu", fusion_epochs=1, seed=seed))


def run_children(tmp_path: Path, root: Path, bodies: list[str], timeout: float = 240) -> None:
    """Start one child per body; they all begin their saves when the start file appears."""
    go = tmp_path / "go"
    procs = []
    for k, body in enumerate(bodies):
        script = tmp_path / f"child{k}.py"
        script.write_text(textwrap.dedent(body))
        env = dict(os.environ, CROSSREC_HOME=str(root), PYTHONPATH=str(REPO), GO_FILE=str(go), READY_FILE=str(tmp_path / f"ready{k}"))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL))
    deadline = time.monotonic() + timeout
    while not all((tmp_path / f"ready{k}").exists() for k in range(len(bodies))):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail("a child failed before the start: " + " | ".join(p.stderr.read().decode()[-1500:] for p in procs))
        time.sleep(0.01)
    go.touch()
    for p in procs:
        p.wait(timeout=timeout)
        assert p.returncode == 0, p.stderr.read().decode()[-3000:]


_WAIT = """
import os, time
from pathlib import Path
Path(os.environ["READY_FILE"]).touch()
while not os.path.exists(os.environ["GO_FILE"]):
    time.sleep(0.001)
"""


def test_two_processes_saving_one_dataset_name(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    versions = {}
    bodies = []
    for seed in (1, 2):
        inter, items = frames(seed)
        inter.to_csv(tmp_path / f"inter{seed}.csv", index=False)
        items.to_csv(tmp_path / f"items{seed}.csv", index=False)
        versions[seed] = content_hash(from_frames(inter, items, name="shared"))
        bodies.append(f"""
import pandas as pd
from crossrec_core.data.dataset import from_frames
from crossrec_core.storage.datasets import save_dataset
ds = from_frames(pd.read_csv({str(tmp_path / f'inter{seed}.csv')!r}, dtype={{"user_id": str, "item_id": str}}),
                 pd.read_csv({str(tmp_path / f'items{seed}.csv')!r}, dtype=str), name="shared")
{_WAIT}
for _ in range({ROUNDS}):
    save_dataset(ds, "shared")
""")
    assert versions[1] != versions[2]
    run_children(tmp_path, root, bodies)
    assert [d.name for d in list_datasets()] == ["shared"]
    assert content_hash(load_dataset("shared")) in set(versions.values())
    assert not [p for p in (root / "tmp").iterdir() if p.is_dir()]  # no staging or old folders left
    assert not [p for p in (root / "datasets").iterdir() if p.is_dir() and p.name != "shared"]


def test_two_processes_saving_one_model_name(tmp_path, monkeypatch):

    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    inter, items = frames(1)
    save_dataset(from_frames(inter, items, name="d"), "d")
    own = {}
    bodies = []
    for seed in (1, 2):
        own[seed] = root / f"own{seed}"
        bodies.append(f"""
from crossrec_core.config import ModelConfig
from crossrec_core.storage.datasets import load_dataset
from crossrec_core.storage.registry import save_model
from crossrec_core.training.loop import train_model
from crossrec_core.storage.workspace import models_dir
model = train_model(load_dataset("d"), ModelConfig.from_dict({tiny_config(seed=seed).to_dict()!r}), name="shared")
save_model(model, {str(own[seed])!r})
{_WAIT}
for _ in range({ROUNDS}):
    save_model(model, models_dir() / "shared")
""")
    run_children(tmp_path, root, bodies)
    versions = [folder_digest(own[1]), folder_digest(own[2])]
    assert versions[0] != versions[1]
    final = folder_digest(root / "models" / "shared")
    assert final in versions, "the saved model mixes the files of two saves"
    assert [m.name for m in list_models()] == ["shared"]
    assert load_model(root / "models" / "shared").n_items == 16
    assert not [p for p in (root / "models").iterdir() if p.name.startswith((".staging", ".old"))]


@pytest.fixture
def studio(tmp_path, monkeypatch):
    """A workspace with a dataset and a trained model, so the map and recommendations pages have work."""
    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    inter, items = frames(3, n_users=3000, n_items=300)  # big enough that the job outlives the page renders
    ds = from_frames(inter, items, name="shop")
    save_dataset(ds, "shop")
    from crossrec_core.training.loop import train_model

    save_model(train_model(ds, tiny_config(), name="shop-model"), root / "models" / "shop-model")
    return root


def _open(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page)
    at.run()
    return at


def test_second_session_stays_responsive_while_the_first_trains(studio):
    from crossrec_core.training import jobs

    # session 2's page times with nothing running (also warms the caches of this process)
    baseline = {}
    for page in ("pages/embedding_map.py", "pages/recommendations.py"):
        t0 = time.perf_counter()
        at = _open(page)
        baseline[page] = time.perf_counter() - t0
        assert not at.exception, at.exception

    # session 1: the Train page starts a real background job (many epochs: it outlives the test)
    trainer = _open("pages/train.py")
    trainer.toggle(key="train_text").set_value(False)
    trainer.radio(key="train_kind").set_value("GRU")
    trainer.number_input(key="train_epochs").set_value(200)
    next(b for b in trainer.button if b.label == "Train").click().run()
    assert not trainer.exception, trainer.exception
    job_id = trainer.session_state["job_id"]
    assert job_id
    try:
        deadline = time.monotonic() + 120
        while jobs.read_job(job_id).phase not in ("train", "valid") and time.monotonic() < deadline:
            assert not jobs.read_job(job_id).finished, jobs.read_job(job_id).message
            time.sleep(0.2)
        assert jobs.read_job(job_id).status == jobs.STATUS_RUNNING

        # session 2 while the job trains: every page renders, without exception, within a few seconds
        timings = {}
        for page in ("pages/embedding_map.py", "pages/recommendations.py", "pages/data.py"):
            t0 = time.perf_counter()
            at = _open(page)
            timings[page] = time.perf_counter() - t0
            assert not at.exception, (page, at.exception)
            assert not at.error, (page, [e.value for e in at.error])
        # the pages above rendered while the job was training (not after it ended)
        assert jobs.read_job(job_id).status == jobs.STATUS_RUNNING, "the job ended before the other session's pages rendered"
        rec = _open("pages/recommendations.py")
        assert "Top 10 for shopper" in rec.subheader[-1].value and len(rec.dataframe[-1].value) == 10
        # the trainer session follows the same job and sees it running
        trainer.run()
        assert not trainer.exception and trainer.get("progress")
        print("page render seconds, idle:", baseline, "while training:", timings)
        assert max(timings.values()) < 30, timings  # 2 loaded cores shared with the training process
    finally:
        jobs.cancel_job(job_id)
    assert jobs.read_job(job_id).status == jobs.STATUS_CANCELLED
