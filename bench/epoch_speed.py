"""Seconds per training epoch of the default model on some logs (three epochs, one run, no fusion fit).

    OMP_NUM_THREADS=1 .venv/bin/python bench/epoch_speed.py --logs /tmp/drift-b,/tmp/dense-c [--epochs 3] [--set cpu_bf16=false]

Each log is a folder with interactions.csv and items.csv (bench/drift_logs.py, bench/dense_logs.py, ../shared/data).
Prints, per log, each epoch's training seconds (the epoch's own timer: batches, forward, backward, steps; not
validation), its loss and validation NDCG@10: the losses show whether a speed change left the arithmetic alone.
Run from a worktree with ``PYTHONPATH=<worktree>`` for a before / after pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from crossrec_core.config import ModelConfig
from crossrec_core.data.load import load_log
from crossrec_core.training.loop import train_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--logs", required=True, help="comma-separated log folders")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="a TrainConfig field to change, e.g. cpu_bf16=false (repeatable)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for folder in args.logs.split(","):
        ds = load_log(Path(folder) / "interactions.csv", Path(folder) / "items.csv", name=Path(folder).name)
        cfg = ModelConfig()
        changes = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=args.epochs, batch_choice=False, fusion_epochs=0, **changes))
        hist = train_model(ds, cfg).metrics["history"]
        print(json.dumps({"log": Path(folder).name, "set": args.set, "train_s": [round(h["train_s"], 2) for h in hist],
                          "loss": [round(h["loss"], 5) for h in hist], "valid_ndcg10": [round(h["ndcg10"], 4) for h in hist]}))


if __name__ == "__main__":
    main()
