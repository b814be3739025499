"""Bootstrap the demo: the demo store in the workspace and a trained demo model, built only when missing.

``python -m crossrec_core.training.bootstrap`` does it from a terminal with a progress bar (``make run`` calls it
before starting the studio); the studio's Home button builds the dataset and trains the model in a
background job instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Callable

from tqdm import tqdm

from crossrec_core.config import ModelConfig
from crossrec_core.data.demo_store import build_demo_dataset
from crossrec_core.errors import CrossrecError, ModelError
from crossrec_core.storage.catalog import MODEL_FORMAT_VERSION, read_json
from crossrec_core.storage.datasets import load_dataset, save_dataset
from crossrec_core.storage.workspace import datasets_dir, models_dir, workspace_root
from crossrec_core.training import jobs
from crossrec_core.training.pipeline import train_and_save

log = logging.getLogger(__name__)

DEMO_DATASET = "demo-store"
DEMO_MODEL = "demo-model"


def demo_config() -> ModelConfig:
    """Return the demo model's configuration: the defaults with a lower epoch cap.

    Why a cap: the demo must be ready within a couple of minutes on a 2-core laptop; early stopping
    usually ends the demo store's training before the cap anyway.
    """
    cfg = ModelConfig()
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=min(cfg.train.epochs, 8)))


def demo_dataset_exists(root=None) -> bool:
    """Return True when the workspace already holds the demo store."""
    return (datasets_dir(root) / DEMO_DATASET / "manifest.json").is_file()


def demo_model_exists(root=None) -> bool:
    """Return True when the workspace already holds a demo model this crossrec can read (a demo model
    saved by an older crossrec, in another model format, is trained again)."""
    path = models_dir(root) / DEMO_MODEL / "config.json"
    if not path.is_file():
        return False
    try:
        return read_json(path).get("format_version") == MODEL_FORMAT_VERSION
    except (ModelError, OSError, AttributeError):
        return False


def ensure_demo_dataset(root=None, *, seed: int = 0) -> str:
    """Return the demo dataset's name, building and saving it (with its planted journeys) if missing."""
    if not demo_dataset_exists(root):
        ds, journeys = build_demo_dataset(seed=seed)
        save_dataset(ds, DEMO_DATASET, root=root, extras={"journeys": journeys})
        log.info("demo store saved: %d users, %d items, %d events", ds.n_users, ds.n_items, ds.n_events)
    return DEMO_DATASET


def ensure_demo(root=None, *, on_progress: Callable | None = None) -> tuple[str, str]:
    """Return (dataset name, model name) of the demo, building the store and training the model if missing.

    Idempotent: a second call finds both and returns at once. Training runs in this process and reports
    through ``on_progress`` (TrainProgress objects, see crossrec_core.training.loop).
    """
    root = workspace_root(root)
    ensure_demo_dataset(root)
    if not demo_model_exists(root):
        ds = load_dataset(DEMO_DATASET, root=root)
        train_and_save(ds, demo_config(), models_dir(root) / DEMO_MODEL, on_progress=on_progress, name=DEMO_MODEL)
        log.info("demo model saved")
    return DEMO_DATASET, DEMO_MODEL


def start_demo_training(root=None) -> str | None:
    """Return the id of a background job training the demo model, or None when it exists or is training."""
    if demo_model_exists(root):
        return None
    for job in jobs.list_jobs(root):
        if job.model_name == DEMO_MODEL and not job.finished:
            return job.job_id
    return jobs.start_training_job(DEMO_DATASET, DEMO_MODEL, demo_config(), root=root)


def main(argv: list[str] | None = None) -> int:
    """Build the demo from a terminal with a tqdm progress bar; exit 2 with a plain message on errors."""
    parser = argparse.ArgumentParser(prog="python -m crossrec_core.training.bootstrap", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bar = None

    def on_progress(p) -> None:
        nonlocal bar
        if p.phase != "train":
            if bar is not None:
                bar.set_postfix_str(p.phase)
            return
        if bar is None:
            bar = tqdm(total=int(p.n_epochs) * max(int(p.n_steps), 1), desc="training demo-model", unit="step",
                       file=sys.stderr)
        done = (int(p.epoch) - 1) * max(int(p.n_steps), 1) + int(p.step)
        bar.update(max(done - bar.n, 0))
        post = f"epoch {p.epoch}/{p.n_epochs} loss {p.loss:.3f}" if p.loss is not None else f"epoch {p.epoch}"
        if getattr(p, "valid_ndcg10", None) is not None:
            post += f" valid NDCG@10 {p.valid_ndcg10:.3f}"
        bar.set_postfix_str(post)
        bar.refresh()

    try:
        print(f"crossrec: preparing the demo in {workspace_root()} ...", file=sys.stderr)
        ds_name, model_name = ensure_demo(on_progress=on_progress)
    except CrossrecError as err:
        print(f"crossrec: error: {err}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    print(f"crossrec: demo ready: dataset '{ds_name}', model '{model_name}'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
