"""The one path from a dataset to a saved model: what `crossrec train`, `torchrun -m
crossrec_core.training.ddp`, the studio's background jobs and the demo bootstrap all call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.errors import ConfigError
from crossrec_core.models.trained import TrainedModel
from crossrec_core.storage.registry import save_model
from crossrec_core.training.loop import train_model
from crossrec_core.training.private import train_private
from crossrec_core.training.progress import Phase, TrainProgress


def train_and_save(
    ds: InteractionDataset,
    config: ModelConfig,
    out: str | Path,
    *,
    name: str | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    init: Callable[[torch.nn.Module], None] | None = None,
) -> tuple[TrainedModel, Path | None]:
    """Train on ``ds`` and save the model to the folder ``out`` (atomically); return (model, folder).

    Args:
        name: the model's name (default: the folder's name).
        on_progress: receives every TrainProgress of training, then one Phase.SAVE report.
        checkpoint_dir, resume, init: see train_model (init: a warm start, training/warm_start.py).
    Under torch.distributed only rank 0 saves (the folder is None on other ranks), and every rank
    waits until it has, so no rank exits while the model is half-written.
    """
    out = Path(out)
    t0 = time.perf_counter()
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if config.train.dp_epsilon is not None:  # DP-SGD: its own loop (training/private.py)
        if dist or checkpoint_dir is not None or resume:
            raise ConfigError("Private training (--dp-epsilon) runs on one process without checkpoints: drop --ddp, --checkpoint-dir and --resume.")
        if init is not None:
            raise ConfigError("Private training (--dp-epsilon) starts from fresh weights: drop --warm-start.")
        model = train_private(ds, config, on_progress=on_progress, name=name or out.name or ds.name)
    else:
        model = train_model(ds, config, on_progress=on_progress, checkpoint_dir=checkpoint_dir, resume=resume, name=name or out.name or ds.name, init=init)
    path = None
    if not dist or torch.distributed.get_rank() == 0:
        if on_progress is not None:
            on_progress(TrainProgress(int(model.metrics.get("best_epoch", 0)), config.train.epochs, 0, 0, None, None,
                                      time.perf_counter() - t0, Phase.SAVE))
        path = save_model(model, out)
    if dist:
        torch.distributed.barrier()
    return model, path
