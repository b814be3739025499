"""Where a training run's time goes outside the epoch: every phase of ``train_model`` on a scale log, the epoch cut short.

    CROSSREC_HOME=/tmp/scale-home .venv/bin/python bench/scale.py --sizes 10m --stages generate,ingest
    CROSSREC_HOME=/tmp/scale-home OMP_NUM_THREADS=1 .venv/bin/python bench/train_phases.py --size 10m --steps 60 [--per-step 310]

Trains the scale stage's model (bench/scale.py: defaults, text encoder off, one epoch) with the epoch cut to its
first ``--steps`` batches, and prints the wall seconds of each phase (before the first step: loading, windows,
item-neighbour tables; the cut epoch; validation; the blends; mining the fusion scorer's candidates; fitting it).
With ``--per-step N`` it instead times steps 10..N of a full epoch (ms per step) and stops there; ``--profile`` adds
torch's profiler over those steps and prints its operators by self CPU time (where a step goes). With ``--epochs N``
it trains N whole epochs (length buckets only) and prints each one's validation NDCG@10 and target events/s:
quality against speed for a change of the step (``--set "train.batch_size:512"``).
Run from a worktree with ``PYTHONPATH=<worktree>`` for a before / after pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

import crossrec_core.training.epochs as epochs
from crossrec_core.config import changed_config
from crossrec_core.storage.datasets import load_dataset
from crossrec_core.training.loop import train_model
from crossrec_core.training.loss import RetrievalLoss


class _Enough(Exception):
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="10m")
    p.add_argument("--steps", type=int, default=60, help="batches of the cut epoch")
    p.add_argument("--per-step", type=int, default=0, help="time steps 10..N of a full epoch instead, then stop")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="with --per-step: torch's profiler over steps 10..N")
    p.add_argument("--epochs", type=int, default=0, help="train N whole epochs of the first run, print each one's "
                   "validation NDCG@10 and target events/s, then stop (quality against speed; the race's other run is off)")
    p.add_argument("--set", default="", help='config changes, "section.field:value,..." (config.changed_config)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shape: dict[str, int] = {}
    plain_init = epochs.Fit.__init__

    def init(self, *a, **k) -> None:  # the first run's targets and steps per epoch (target events/s below)
        plain_init(self, *a, **k)
        shape.setdefault("targets", int(self.windows.n_targets))
        shape.setdefault("steps", int(self.n_steps))

    epochs.Fit.__init__ = init
    counted = {"targets": 0, "on": False}
    plain_forward = RetrievalLoss.forward

    def forward(self, *a):  # --per-step: the targets of the timed steps themselves (buckets differ in length)
        if counted["on"]:
            counted["targets"] += int((a[5] > 0).sum())
        return plain_forward(self, *a)

    RetrievalLoss.forward = forward
    curve: list[dict] = []
    plain_epoch = epochs.Fit.run_epoch

    def run_epoch(self) -> None:  # --epochs: each epoch's figures, then stop
        plain_epoch(self)
        h = self.state.history[-1]
        curve.append({"epoch": h["epoch"], "valid_ndcg10": round(h["ndcg10_stop"], 4), "encoders_ndcg10": round(h["ndcg10"], 4),
                      "train_s": round(h["train_s"], 1), "target_events_per_s": round(h["events_per_s"])})
        print(json.dumps(curve[-1]), flush=True)
        if len(curve) >= args.epochs:
            raise _Enough

    if args.epochs:
        epochs.Fit.run_epoch = run_epoch
    if not args.per_step and not args.epochs:  # the epoch cut to --steps batches
        plain = epochs.epoch_batches
        epochs.epoch_batches = lambda *a, **k: plain(*a, **k)[: args.steps]
    ds = load_dataset(f"scale-{args.size}")
    cfg = changed_config(args.set)
    train = dataclasses.replace(cfg.train, epochs=max(args.epochs, 1), batch_choice=cfg.train.batch_choice and not args.epochs)
    cfg = dataclasses.replace(cfg, item=dataclasses.replace(cfg.item, use_text=False), train=train)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    last = [0.0, "before the first step"]
    marks: dict[str, float] = {}
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def on_progress(prog) -> None:
        now = time.perf_counter() - t0
        if args.per_step and prog.phase == "train":
            if prog.step == 10:
                marks["from"] = now
                counted["on"] = True
                if args.profile:
                    prof.start()
            if prog.step >= args.per_step:
                marks["to"] = now
                counted["on"] = False
                if args.profile:
                    prof.stop()
                raise _Enough
        phase = str(prog.phase)
        if phase != last[1]:
            phases[last[1]] = phases.get(last[1], 0.0) + now - last[0]
            last[:] = [now, phase]

    try:
        train_model(ds, cfg, on_progress=on_progress)
    except _Enough:
        if args.epochs:
            print(json.dumps({"size": args.size, "set": args.set, "threads": args.threads, "steps_per_epoch": shape["steps"],
                              "targets_per_epoch": shape["targets"], "epochs": curve}))
            return
        ms = (marks["to"] - marks["from"]) / (args.per_step - 10) * 1000
        print(json.dumps({"size": args.size, "before the first step_s": round(phases.get("before the first step", 0.0), 1),
                          "ms_per_step": round(ms, 1), "steps": f"10..{args.per_step}",
                          "target_events_per_s": round(counted["targets"] / (marks["to"] - marks["from"])),
                          "threads": args.threads, "set": args.set}))
        if args.profile:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        return
    phases[last[1]] = phases.get(last[1], 0.0) + time.perf_counter() - t0 - last[0]
    print(json.dumps({"size": args.size, "cut_epoch_steps": args.steps, **{k: round(v, 1) for k, v in phases.items()},
                      "total_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
