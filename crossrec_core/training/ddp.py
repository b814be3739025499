"""Data-parallel training with PyTorch DDP, launched by torchrun (gloo on CPU, NCCL on GPUs).

    torchrun --nproc_per_node 2 -m crossrec_core.training.ddp --interactions log.csv --out models/m
    crossrec train --ddp ...   (the same, through the CLI, under torchrun)

Every rank reads the log, takes its share of the batches, and DDP averages gradients, so all ranks hold
identical weights; validation is computed identically on every rank; rank 0 saves the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from crossrec_core.config import default_config
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError, CrossrecError
from crossrec_core.training.pipeline import train_and_save


def init_distributed(device: str = "auto") -> int:
    """Return this process's rank after joining the torchrun process group (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("--ddp needs to be launched by torchrun (for example: torchrun --nproc_per_node 2 -m crossrec_core.training.ddp ...).")
    if not torch.distributed.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.distributed.get_rank()


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """Return a sha1 over every tensor of a state dict (to compare ranks)."""
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Train under torchrun; rank 0 saves the model; each rank may report its weights digest."""
    p = argparse.ArgumentParser(prog="python -m crossrec_core.training.ddp")
    p.add_argument("--interactions", required=True)
    p.add_argument("--items", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--encoder", choices=("transformer", "gru", "lstm"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-text", action="store_true", help="skip the text encoder (quick tests)")
    p.add_argument("--report-dir", default=None, help="write rank<N>.json with a digest of the final weights")
    args = p.parse_args(argv)
    try:
        cfg = default_config(encoder=args.encoder, epochs=args.epochs, seed=args.seed, device=args.device)
        if args.no_text:
            cfg = dataclasses.replace(cfg, item=dataclasses.replace(cfg.item, use_text=False))
        rank = init_distributed(cfg.train.device)
        ds = load_log(args.interactions, args.items, name=Path(args.out).name)
        model, _ = train_and_save(ds, cfg, args.out, name=Path(args.out).name)
        if args.report_dir:
            Path(args.report_dir).mkdir(parents=True, exist_ok=True)
            info = {"rank": rank, "world": torch.distributed.get_world_size(), "digest": weights_digest(model.net.state_dict()), "metrics": model.metrics["valid"]}
            (Path(args.report_dir) / f"rank{rank}.json").write_text(json.dumps(info))
    except CrossrecError as err:
        print(f"crossrec: error: {err}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
