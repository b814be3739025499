"""Tests of crossrec_core.training.jobs: background training in a child process, progress file, failures, cancel."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from crossrec_core.training import jobs
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.storage.datasets import save_dataset
from crossrec_core.errors import ConfigError
from crossrec_core.training.progress import TrainProgress


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path))
    return tmp_path


def tiny_config(epochs: int = 2) -> ModelConfig:
    return ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False, use_attributes=False),
        user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
        train=TrainConfig(epochs=epochs, batch_size=32, fusion_epochs=1, progress_every=1, device="cpu", seed=0),
    )


def save_tiny_dataset(n_users: int = 80) -> str:
    """Every user views a Camping item then buys the matching Footwear item (i -> i + 10), twice over."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        for step, a in enumerate(rng.integers(0, 10, size=2)):
            rows += [(f"u{u}", f"c{a}", 4 * step, "view"), (f"u{u}", f"f{a}", 4 * step + 1, "purchase")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    items = pd.DataFrame({"item_id": [f"c{i}" for i in range(10)] + [f"f{i}" for i in range(10)],
                          "category": ["Camping"] * 10 + ["Footwear"] * 10,
                          "title": [f"Tent {i}" for i in range(10)] + [f"Boot {i}" for i in range(10)]})
    save_dataset(from_frames(inter, items, name="tiny"), "tiny")
    return "tiny"


def test_progress_writer_records_curves_and_throttles_writes(home):
    folder = home / "jobs" / "j1"
    folder.mkdir(parents=True)
    now = [0.0]
    w = jobs.ProgressWriter(folder, clock=lambda: now[0])
    w(TrainProgress(1, 3, 5, 10, 2.0, None, 0.1, "train"))  # new phase: written at once
    w(TrainProgress(1, 3, 10, 10, 1.5, None, 0.2, "train"))  # same phase, 0 s later: held back
    on_disk = json.loads((folder / "progress.json").read_text())
    assert on_disk["step"] == 5 and on_disk["loss_curve"] == [[0.5, 2.0, ""]]
    now[0] = 1.0
    w(TrainProgress(1, 3, 10, 10, 1.4, 0.25, 0.3, "valid", reference_ndcg10=0.05))  # a validation point, its yardstick
    on_disk = json.loads((folder / "progress.json").read_text())
    assert jobs._status_from_dict(on_disk).reference_ndcg10 == 0.05
    assert on_disk["loss_curve"] == [[0.5, 2.0, ""], [1.0, 1.5, ""]]
    assert on_disk["valid_curve"] == [[1, 0.25, ""]]
    assert on_disk["phase"] == "valid" and on_disk["epoch"] == 1 and on_disk["n_epochs"] == 3
    status = jobs._status_from_dict(on_disk)
    assert status.fraction == pytest.approx(1 / 3)


def test_two_fit_runs_taking_turns_keep_a_curve_each_and_say_whose_epoch_it_is(home):
    from pages import charts

    folder = home / "jobs" / "j2"
    folder.mkdir(parents=True)
    w = jobs.ProgressWriter(folder, clock=lambda: 0.0)
    for epoch in (1, 2):
        for run, figure in (("length buckets", 0.1 * epoch), ("random batches", 0.2 * epoch)):
            w(TrainProgress(epoch, 30, 10, 10, 1.0 / epoch, None, 1.0, "train", run=run))
            w(TrainProgress(epoch, 30, 10, 10, 1.0 / epoch, figure, 1.0, "valid", run=run))
    status = jobs._status_from_dict(json.loads((folder / "progress.json").read_text()))
    assert [pt[2] for pt in status.valid_curve] == ["length buckets", "random batches"] * 2
    assert [pt[1] for pt in status.valid_curve if pt[2] == "random batches"] == pytest.approx([0.2, 0.4])
    running = dataclasses.replace(status, status=jobs.STATUS_RUNNING)
    assert status.run == "random batches" and "(early stopping, random batches)" in running.describe()
    fig = charts.training_curves(status.loss_curve, status.valid_curve, 0.05)
    names = [t.name for t in fig.data]
    assert "validation NDCG@10 (length buckets)" in names and "validation NDCG@10 (random batches)" in names
    # a progress file written before the runs took turns (two-element points) still reads, as one run
    old = jobs._status_from_dict({"loss_curve": [[0.5, 2.0]], "valid_curve": [[1, 0.25]]})
    assert old.valid_curve == [(1, 0.25, "")] and [t.name for t in charts.training_curves(old.loss_curve, old.valid_curve).data] == [
        "training loss", "validation NDCG@10"]


def test_training_job_runs_in_a_child_process_and_saves_the_model(home):
    from crossrec_core.storage.registry import load_model

    ds_name = save_tiny_dataset()
    job_id = jobs.start_training_job(ds_name, "tiny-model", tiny_config(2))
    first = jobs.read_job(job_id)
    assert first.pid is not None and first.pid != os.getpid()
    assert first.status in (jobs.STATUS_QUEUED, jobs.STATUS_RUNNING)
    final = jobs.wait_for_job(job_id, timeout=120)
    assert final.status == jobs.STATUS_DONE, final.message
    assert final.loss_curve and final.valid_curve and final.epoch >= 1
    assert "best_epoch" in final.metrics
    model = load_model(home / "models" / "tiny-model")
    assert model.n_items == 20
    assert [j.job_id for j in jobs.list_jobs()] == [job_id]


def test_a_job_on_a_missing_dataset_fails_with_the_plain_message(home):
    job_id = jobs.start_training_job("no-such-data", "m", tiny_config(1))
    final = jobs.wait_for_job(job_id, timeout=60)
    assert final.status == jobs.STATUS_FAILED
    assert "no-such-data" in final.message and "Traceback" not in final.message
    assert not (home / "models" / "m").exists()


def test_a_dead_worker_reads_as_failed(home):
    folder = jobs.jobs_dir() / "dead-job"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (folder / "progress.json").write_text(json.dumps(
        jobs._progress_dict("dead-job", "d", "m", jobs.STATUS_RUNNING, pid=proc.pid)))
    status = jobs.read_job("dead-job")
    assert status.status == jobs.STATUS_FAILED and "stopped unexpectedly" in status.message


@pytest.mark.parametrize("last_written", [jobs.STATUS_RUNNING, jobs.STATUS_FAILED])
def test_a_cancelled_job_reads_as_cancelled_whatever_its_worker_wrote_last(home, last_written):
    """The worker handles SIGTERM between bytecodes, so its last progress write (its running state, or a failure
    while stopping) can land after the canceller's "cancelled" (a CI run on one loaded core read "failed")."""
    folder = jobs.jobs_dir() / "cancelled-job"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)  # a live worker
    (folder / "progress.json").write_text(json.dumps(jobs._progress_dict("cancelled-job", "d", "m", jobs.STATUS_RUNNING, pid=proc.pid)))
    assert jobs.cancel_job("cancelled-job").status == jobs.STATUS_CANCELLED
    proc.wait(timeout=30)
    # the worker's late write overwrites the canceller's status, then the worker is gone
    (folder / "progress.json").write_text(json.dumps(jobs._progress_dict("cancelled-job", "d", "m", last_written, pid=proc.pid)))
    status = jobs.read_job("cancelled-job")
    assert status.status == jobs.STATUS_CANCELLED and "Cancelled" in status.message
    assert jobs.read_job("cancelled-job").status == jobs.STATUS_CANCELLED


def test_cancel_stops_the_worker_and_a_second_job_for_a_running_name_is_refused(home):
    ds_name = save_tiny_dataset(400)
    cfg = tiny_config(200)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, patience=100))
    job_id = jobs.start_training_job(ds_name, "long", cfg)
    with pytest.raises(ConfigError, match="already running"):
        jobs.start_training_job(ds_name, "long", cfg)
    deadline = time.monotonic() + 60
    while jobs.read_job(job_id).status != jobs.STATUS_RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = jobs.read_job(job_id).pid
    status = jobs.cancel_job(job_id)
    assert status.status == jobs.STATUS_CANCELLED
    deadline = time.monotonic() + 20
    while jobs._pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not jobs._pid_alive(pid)
    assert not (home / "models" / "long").exists()
    assert jobs.read_job(job_id).status == jobs.STATUS_CANCELLED


def _feed(writer, *reports) -> "jobs.JobStatus":
    for r in reports:
        writer(r)
    writer.update(force=True)
    return jobs._status_from_dict(json.loads((writer.folder / "progress.json").read_text()))


def test_job_status_reads_as_plain_sentences_through_every_phase(home):
    folder = home / "jobs" / "j2"
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(json.dumps(jobs._progress_dict("j2", "d", "m", jobs.STATUS_QUEUED)))
    assert jobs._status_from_dict(json.loads((folder / "progress.json").read_text())).describe() == "Waiting to start…"
    w = jobs.ProgressWriter(folder)
    w.update(status=jobs.STATUS_RUNNING, phase="load")
    assert _feed(w).describe() == "Loading the dataset…"

    # the text phase never shows an epoch (it used to read "epoch 0/30")
    text = _feed(w, TrainProgress(0, 30, 500, 2000, None, None, 5.0, "text"))
    assert text.describe() == "Encoding item titles… 500 of 2,000 items"
    assert "epoch" not in text.describe().lower() and text.fraction == 0.0

    train = _feed(w, TrainProgress(3, 30, 5, 10, 1.25, None, 20.0, "train"))
    assert train.describe() == "Epoch 3 of at most 30 (early stopping), loss 1.250"
    assert train.fraction == pytest.approx((2 + 0.5) / 30)

    # 8 epochs run, best was 5; the re-ranker phases report their own counters (epoch 0 of 20)
    reports = [TrainProgress(e, 30, 10, 10, 1.0, 0.1, 30.0 + e, "valid") for e in range(4, 9)]
    after = _feed(w, *reports, TrainProgress(5, 30, 0, 0, None, None, 40.0, "prior"))
    assert after.describe() == "Trained for 8 epochs; tuning the blend with similar items…"
    fusion = _feed(w, TrainProgress(0, 20, 64, 128, None, None, 41.0, "fusion candidates"))
    assert fusion.describe() == "Preparing the re-ranker: 64 of 128 shoppers…"
    assert fusion.fraction >= after.fraction >= 8 / 30  # the bar never moves back
    done = _feed(w, TrainProgress(5, 30, 0, 0, None, 0.2, 42.0, "done"))
    w.update(status=jobs.STATUS_DONE, phase="done", metrics={"best_epoch": 5}, force=True)
    final = jobs._status_from_dict(json.loads((folder / "progress.json").read_text()))
    assert final.describe() == "Finished: best epoch 5 of 8 run"
    assert final.epochs_run == 8 and final.best_epoch == 5 and final.n_epochs == 30 and done.n_epochs == 30


def test_the_worker_imports_the_same_crossrec_core_as_the_studio(home, monkeypatch):
    """A git worktree run with a venv whose editable install points at another checkout: the worker must train
    with this checkout's code (it fell through to the installed copy and wrote settings this code rejects)."""
    from pathlib import Path

    import crossrec_core

    started = {}

    class FakeProc:
        pid = 4242

    def fake_popen(args, env, cwd, **kw):
        started.update(args=args, env=env, cwd=cwd)
        return FakeProc()

    real_popen = subprocess.Popen
    monkeypatch.setattr(jobs.subprocess, "Popen", fake_popen)
    jobs.start_training_job(save_tiny_dataset(), "m", tiny_config())
    monkeypatch.setattr(jobs.subprocess, "Popen", real_popen)
    code = subprocess.run([sys.executable, "-c", "import crossrec_core; print(crossrec_core.__file__)"],
                          env=started["env"], cwd=started["cwd"], capture_output=True, text=True, check=True)
    assert Path(code.stdout.strip()).resolve() == Path(crossrec_core.__file__).resolve()


def test_a_cancelled_worker_that_does_not_end_on_sigterm_is_killed_after_the_grace():
    import signal

    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None  # it ignored the polite request
        jobs._kill_if_still_alive(proc.pid, grace_s=0.5)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
