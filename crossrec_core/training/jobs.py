"""Background training jobs: training runs in its own process and reports through a JSON file.

Why a separate process (not a thread in the app): training keeps both CPU cores busy for minutes and
holds the GIL in Python-heavy stretches; in its own process the studio stays responsive, any browser
tab or session can follow the job by reading ``workspace/jobs/<job_id>/progress.json``, and the model
is saved even when the tab that started it is closed.

Layout::

    workspace/jobs/<job_id>/
      spec.json       what to train (dataset name, model name, ModelConfig.to_dict())
      progress.json   written atomically by the worker: status, phase, epoch, loss curve, metrics
      worker.log      the worker's log (for bug reports)
      checkpoints/    per-epoch checkpoints (resume after a crash)

Run a job's worker by hand with ``python -m crossrec_core.training.jobs <job_id>``.

Why one module of ~470 lines: starting, following, cancelling and recovering a job all read and write
the same folder and progress file, whose states must stay consistent across processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
import json

from crossrec_core.config import ModelConfig
from crossrec_core.errors import ConfigError, CrossrecError
from crossrec_core.storage.datasets import load_dataset
from crossrec_core.storage.workspace import atomic_write_json, models_dir, safe_name, workspace_root
from crossrec_core.training.pipeline import train_and_save
from crossrec_core.training.progress import Phase

log = logging.getLogger(__name__)

STATUS_QUEUED, STATUS_RUNNING, STATUS_DONE, STATUS_FAILED, STATUS_CANCELLED = (
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
)
FINISHED = (STATUS_DONE, STATUS_FAILED, STATUS_CANCELLED)
# Why: the progress file is rewritten at most this often (plus on every phase or epoch change), so a
# fast loop does not spend its time on fsync.
_WRITE_EVERY_S = 0.5
_MAX_LOSS_POINTS = 2000
_EPOCH_PHASES = (Phase.TRAIN, Phase.VALID)
# Why fixed shares: the steps after training take a similar time whatever the log (a few seconds to a
# minute), so the bar goes from where early stopping ended training to 1 in these steps.
_AFTER_TRAINING = {Phase.PRIOR: 0.1, Phase.FUSION_CANDIDATES: 0.2, Phase.FUSION: 0.7, Phase.DONE: 0.9, Phase.SAVE: 0.95}


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one training job, read from its progress file."""

    job_id: str
    dataset: str
    model_name: str
    status: str
    phase: str = ""
    epoch: int = 0
    n_epochs: int = 0
    step: int = 0
    n_steps: int = 0
    loss: float | None = None
    elapsed_s: float = 0.0
    message: str = ""
    created_at: float = 0.0
    pid: int | None = None
    # (fractional epoch, loss, run) and (epoch, valid NDCG@10, run): run is the fit run ("length buckets" or
    # "random batches": they take turns an epoch each, training/batch_race.py), "" for a single run
    loss_curve: list[tuple[float, float, str]] = field(default_factory=list)
    valid_curve: list[tuple[int, float, str]] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    epochs_run: int = 0  # highest epoch trained so far (early stopping ends before n_epochs)
    best_epoch: int | None = None  # known once training has finished
    reference_ndcg10: float | None = None  # the most popular products' validation NDCG@10 (TrainProgress)
    run: str = ""  # the fit run of the current epoch (TrainProgress.run)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def fraction(self) -> float:
        """Return the share of the job done, in [0, 1], never moving back between phases.

        Epochs are a cap (early stopping), so during training this is a lower bound; the steps after
        training (blend weights, re-ranker, saving) take the bar from where training stopped to 1.
        """
        if self.status == STATUS_DONE:
            return 1.0
        within = (self.step / self.n_steps) if self.n_steps else 0.0
        if self.phase in _AFTER_TRAINING:
            start = self.epochs_run / self.n_epochs if self.n_epochs else 0.0
            share = _AFTER_TRAINING[self.phase] + (0.5 * within if self.phase == Phase.FUSION_CANDIDATES else 0.0)
            return float(min(1.0, start + (1.0 - start) * share))
        if self.phase not in _EPOCH_PHASES or not self.n_epochs:
            return 0.0
        return float(min(1.0, max(0.0, ((max(self.epoch, 1) - 1) + within) / self.n_epochs)))

    def describe(self) -> str:
        """Return the job's state as one plain sentence (what the Train page shows on its progress bar)."""
        if self.status == STATUS_QUEUED:
            return "Waiting to start…"
        if self.status == STATUS_DONE:
            best = self.best_epoch if self.best_epoch is not None else self.metrics.get("best_epoch")
            run = self.epochs_run or len(self.metrics.get("history") or ()) or best
            return f"Finished: best epoch {best} of {run} run" if best else "Finished."
        if self.status == STATUS_CANCELLED:
            return "Cancelled."
        if self.status == STATUS_FAILED:
            return "Failed."
        phase, of = self.phase, f"{self.step:,} of {self.n_steps:,}"
        if phase == Phase.TEXT:
            return f"Encoding item titles… {of} items" if self.n_steps else "Encoding item titles…"
        if phase in _EPOCH_PHASES:
            loss = "" if self.loss is None else f", loss {self.loss:.3f}"
            check = ": checking quality on held-out shoppers" if phase == Phase.VALID else ""
            run = f", {self.run}" if self.run else ""
            return f"Epoch {self.epoch} of at most {self.n_epochs} (early stopping{run}){check}{loss}"
        if phase == Phase.PRIOR:
            return f"Trained for {self.epochs_run} epochs; tuning the blend with similar items…"
        if phase == Phase.FUSION_CANDIDATES:
            return f"Preparing the re-ranker: {of} shoppers…" if self.n_steps else "Preparing the re-ranker…"
        if phase == Phase.FUSION:
            return "Fitting the re-ranker and its probabilities…"
        if phase == Phase.SAVE:
            return "Saving the model…"
        return "Loading the dataset…"


def jobs_dir(root=None) -> Path:
    """Return the folder holding one sub-folder per training job (created if missing)."""
    path = workspace_root(root) / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_training_job(
    dataset: str,
    model_name: str,
    config: ModelConfig | None = None,
    *,
    root=None,
    python: str | None = None,
) -> str:
    """Return the id of a new training job, started in a detached child process.

    The child trains ``dataset`` (a workspace dataset name) with ``config`` and saves the model as
    ``models/<model_name>``. Raises ConfigError for a bad name or when a job for the same model name is
    still running.
    """
    dataset = safe_name(dataset)
    model_name = safe_name(model_name)
    config = config or ModelConfig()
    for job in list_jobs(root):
        if job.model_name == model_name and not job.finished:
            raise ConfigError(
                f"A training job for '{model_name}' is already running (job {job.job_id}). "
                "Wait for it to finish, cancel it, or choose another model name."
            )
    root_path = workspace_root(root)
    job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    folder = jobs_dir(root_path) / job_id
    folder.mkdir()
    now = time.time()
    atomic_write_json(
        folder / "spec.json",
        {"job_id": job_id, "dataset": dataset, "model_name": model_name, "config": config.to_dict(), "created_at": now},
    )
    atomic_write_json(
        folder / "progress.json",
        _progress_dict(job_id, dataset, model_name, STATUS_QUEUED, created_at=now),
    )
    env = dict(os.environ, CROSSREC_HOME=str(root_path), PYTHONUNBUFFERED="1")
    # the worker imports this very crossrec_core (a git worktree, a checkout), never another copy installed
    # in the environment: from the cwd below, `-m` would otherwise fall through to the installed package
    code_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH", "")) if p)
    with open(folder / "worker.log", "ab") as logfh:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "crossrec_core.training.jobs", job_id],
            env=env,
            stdout=logfh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a closed tab or a restarted app does not kill the training
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    _merge_progress(folder, pid=proc.pid)
    log.info("started training job %s (pid %d): %s on %s", job_id, proc.pid, model_name, dataset)
    return job_id


def read_job(job_id: str, root=None) -> JobStatus:
    """Return the current status of a job; a worker that died without finishing reads as failed."""
    job_id = safe_name(job_id)
    folder = jobs_dir(root) / job_id
    data = _read_json(folder / "progress.json")
    if data is None:
        raise ConfigError(f"There is no training job '{job_id}' in this workspace.")
    status = _status_from_dict(data)
    if status.status not in (STATUS_DONE, STATUS_CANCELLED) and (folder / CANCEL_MARKER).exists():
        # cancelled: the worker may have rewritten its running state after the canceller wrote "cancelled" (it
        # handles SIGTERM between bytecodes, so a progress write can land after), or failed while stopping
        _merge_progress(folder, status=STATUS_CANCELLED, message="Cancelled; no model was saved.")
        status = _status_from_dict(_read_json(folder / "progress.json") or data)
    if not status.finished and status.pid is not None and not _pid_alive(status.pid):
        # re-read: the worker may have written its final state between our read and the liveness check
        data = _read_json(folder / "progress.json") or data
        status = _status_from_dict(data)
        if not status.finished:
            message = "The training process stopped unexpectedly (see worker.log in the job folder). Start it again."
            _merge_progress(folder, status=STATUS_FAILED, message=message)
            status = _status_from_dict(_read_json(folder / "progress.json") or data)
    return status


def list_jobs(root=None) -> list[JobStatus]:
    """Return every job in the workspace, newest first."""
    out = []
    for folder in sorted(jobs_dir(root).iterdir(), reverse=True):
        if folder.is_dir() and (folder / "progress.json").is_file():
            try:
                out.append(read_job(folder.name, root))
            except CrossrecError:
                continue
    return out


def cancel_job(job_id: str, root=None) -> JobStatus:
    """Return the job's status after asking its worker to stop (SIGTERM to its own process group)."""
    status = read_job(job_id, root)
    if status.finished:
        return status
    folder = jobs_dir(root) / safe_name(job_id)
    (folder / CANCEL_MARKER).touch()  # first: whatever the worker writes before it stops, the cancel stands
    if status.pid is not None and _pid_alive(status.pid):
        try:
            os.killpg(status.pid, signal.SIGTERM)  # the worker leads its own session (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        else:
            threading.Thread(target=_kill_if_still_alive, args=(status.pid,), daemon=True).start()
    _merge_progress(folder, status=STATUS_CANCELLED, message="Cancelled; no model was saved.")
    return read_job(job_id, root)


# A cancelled job's folder holds this file: read_job reports the job cancelled whatever the worker last wrote.
CANCEL_MARKER = "cancel-requested"

# Seconds a cancelled worker has to end on its SIGTERM before its process group gets SIGKILL. Why: Python runs the
# SIGTERM handler only between bytecodes, so a worker inside a long native call (or slow to shut down) lived on
# for ~40 s once under a loaded CI run. Its model is written to a staging folder and renamed in, so a kill never
# leaves a half-written model.
CANCEL_GRACE_S = 5.0


def _kill_if_still_alive(pid: int, grace_s: float = CANCEL_GRACE_S) -> None:
    """SIGKILL the worker's process group if ``pid`` is still alive ``grace_s`` seconds after its SIGTERM."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_job(job_id: str, root=None, *, timeout: float = 600.0, poll_s: float = 0.2) -> JobStatus:
    """Return the job's final status, polling until it finishes or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_job(job_id, root)
        if status.finished or time.monotonic() > deadline:
            return status
        time.sleep(poll_s)


def run_job(job_id: str, root=None) -> JobStatus:
    """Return the final status after running the job's training in THIS process (the worker's body)."""
    folder = jobs_dir(root) / safe_name(job_id)
    spec = _read_json(folder / "spec.json")
    if spec is None:
        raise ConfigError(f"Training job '{job_id}' has no spec.json.")
    reporter = ProgressWriter(folder)
    reporter.update(status=STATUS_RUNNING, pid=os.getpid(), phase=Phase.LOAD)
    try:
        config = ModelConfig.from_dict(spec["config"])
        ds = load_dataset(spec["dataset"], root=root)
        model, path = train_and_save(
            ds, config, models_dir(root) / spec["model_name"], on_progress=reporter, checkpoint_dir=folder / "checkpoints",
            name=spec["model_name"],
        )
        reporter.update(
            status=STATUS_DONE,
            phase=Phase.DONE,
            message=f"Saved as '{spec['model_name']}'.",
            metrics=_json_safe(getattr(model, "metrics", {}) or {}),
            model_path=str(path),
            force=True,
        )
    except CrossrecError as err:
        reporter.update(status=STATUS_FAILED, message=str(err), force=True)
    except MemoryError:
        reporter.update(status=STATUS_FAILED, message="Out of memory. Try fewer epochs or a smaller log.", force=True)
    except Exception as err:  # a bug: record it plainly for the app and keep the traceback in worker.log
        log.exception("training job %s failed", job_id)
        reporter.update(
            status=STATUS_FAILED,
            message=f"Training failed with an internal error ({type(err).__name__}: {err}). See worker.log in {folder}.",
            force=True,
        )
    return read_job(job_id, root)


class ProgressWriter:
    """A TrainProgress callback that keeps the job's progress.json current (atomic writes, throttled)."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        self._clock = clock
        self._last_write = 0.0
        self._last_key: tuple = ()
        self._state = _read_json(self.folder / "progress.json") or {}
        self._state.setdefault("loss_curve", [])
        self._state.setdefault("valid_curve", [])

    def __call__(self, p) -> None:
        """Record one TrainProgress (epoch, n_epochs, step, n_steps, loss, valid_ndcg10, elapsed_s, phase)."""
        epoch, n_steps, step = int(p.epoch), int(p.n_steps or 0), int(p.step or 0)
        loss = None if p.loss is None else float(p.loss)
        run = str(getattr(p, "run", "") or "")
        if loss is not None and p.phase == Phase.TRAIN:
            x = (epoch - 1) + (step / n_steps if n_steps else 1.0)
            curve = self._state["loss_curve"]
            curve.append([round(x, 4), loss, run])
            if len(curve) > _MAX_LOSS_POINTS:  # keep the file small: drop every other old point
                self._state["loss_curve"] = curve[: len(curve) // 2 : 2] + curve[len(curve) // 2 :]
        valid = getattr(p, "valid_ndcg10", None)
        if valid is not None:
            vc = self._state["valid_curve"]
            if not any(pt[0] == epoch and (pt[2] if len(pt) > 2 else "") == run for pt in vc[-2:]):
                vc.append([epoch, float(valid), run])
        key = (p.phase, epoch, valid is not None)
        changes: dict = {"phase": str(p.phase), "step": step, "n_steps": n_steps, "elapsed_s": float(p.elapsed_s or 0.0)}
        if p.phase in _EPOCH_PHASES:  # other phases count their own steps: keep the epoch counters
            changes.update(epoch=epoch, n_epochs=int(p.n_epochs or 0), loss=loss, run=run,
                           epochs_run=max(epoch, int(self._state.get("epochs_run") or 0)))
        elif p.phase == Phase.DONE:  # training's last report carries the best epoch
            changes.update(best_epoch=epoch)
        if getattr(p, "reference_ndcg10", None) is not None:
            changes["reference_ndcg10"] = float(p.reference_ndcg10)
        self.update(force=key != self._last_key, **changes)
        self._last_key = key

    def update(self, *, force: bool = True, **changes) -> None:
        """Merge ``changes`` into the progress state; write it when forced or when due."""
        self._state.update(changes)
        now = self._clock()
        if force or now - self._last_write >= _WRITE_EVERY_S:
            self._state["updated_at"] = time.time()
            atomic_write_json(self.folder / "progress.json", self._state)
            self._last_write = now


# -- helpers --------------------------------------------------------------------------------------


def _progress_dict(job_id, dataset, model_name, status, **extra) -> dict:
    return {
        "job_id": job_id,
        "dataset": dataset,
        "model_name": model_name,
        "status": status,
        "phase": "",
        "epoch": 0,
        "n_epochs": 0,
        "step": 0,
        "n_steps": 0,
        "loss": None,
        "elapsed_s": 0.0,
        "message": "",
        "loss_curve": [],
        "valid_curve": [],
        "metrics": {},
        **extra,
    }


def _status_from_dict(d: dict) -> JobStatus:
    return JobStatus(
        job_id=str(d.get("job_id", "")),
        dataset=str(d.get("dataset", "")),
        model_name=str(d.get("model_name", "")),
        status=str(d.get("status", STATUS_QUEUED)),
        phase=str(d.get("phase", "")),
        epoch=int(d.get("epoch") or 0),
        n_epochs=int(d.get("n_epochs") or 0),
        step=int(d.get("step") or 0),
        n_steps=int(d.get("n_steps") or 0),
        loss=None if d.get("loss") is None else float(d["loss"]),
        elapsed_s=float(d.get("elapsed_s") or 0.0),
        message=str(d.get("message", "")),
        created_at=float(d.get("created_at") or 0.0),
        pid=None if d.get("pid") is None else int(d["pid"]),
        loss_curve=[(float(pt[0]), float(pt[1]), str(pt[2]) if len(pt) > 2 else "") for pt in d.get("loss_curve", [])],
        valid_curve=[(int(pt[0]), float(pt[1]), str(pt[2]) if len(pt) > 2 else "") for pt in d.get("valid_curve", [])],
        metrics=dict(d.get("metrics") or {}),
        epochs_run=int(d.get("epochs_run") or 0),
        best_epoch=None if d.get("best_epoch") is None else int(d["best_epoch"]),
        reference_ndcg10=None if d.get("reference_ndcg10") is None else float(d["reference_ndcg10"]),
        run=str(d.get("run") or ""),
    )


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # atomic writes make this rare; treat as "not readable yet"
        return None


def _merge_progress(folder: Path, **changes) -> None:
    data = _read_json(folder / "progress.json") or {}
    data.update(changes)
    atomic_write_json(folder / "progress.json", data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (finished, not yet reaped by the app process) is not alive
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def main(argv: list[str] | None = None) -> int:
    """Run one job's worker: ``python -m crossrec_core.training.jobs <job_id>``."""
    parser = argparse.ArgumentParser(prog="python -m crossrec_core.training.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (cancel) ends the process without a traceback; the canceller already wrote the status
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    status = run_job(args.job_id)
    return 0 if status.status == STATUS_DONE else 1


if __name__ == "__main__":
    sys.exit(main())
