"""Train crossrec once on a log with TrainConfig overrides and keep what a study of the batch race needs.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python bench/race_curves.py LOG --seed 42 --set batch_drop_after=0 --out F.json

LOG is a folder (interactions.csv + items.csv) or "demo". Writes, as JSON: both runs' validation curves (epoch, CPU
seconds of this process at the end of each epoch's validation, the stopping figure, NDCG@10), the race's rounds,
the shipped run and best epoch, CPU seconds to that epoch, and the test lists' scores (leave-last-out, the split
``bench/peers/compare.py`` uses) with each shopper's NDCG@10 and novel-category flag, so paired differences between
two such files can be bootstrapped. With ``batch_drop_after=0`` neither run is dropped: each runs to its own early
stopping, and a dropping rule can be replayed on the two whole curves:

    .venv/bin/python bench/race_curves.py --replay F1.json F2.json ...

prints, per file and rule, the run that would ship, the round its rival is dropped, the shipped run's best validation
figure and the CPU seconds to its best epoch (each epoch's CPU: the time between its validation and the one before).
Rules: the recorded rounds' paired z and gap (``training/batch_race.py``: behind by more than one standard error and
MIN_GAP for k rounds in a row), or "cap R": at round R the run with the lower best-so-far figure is dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "peers")]


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _epoch_cpu(res: dict) -> tuple[float, dict[tuple[str, int], float]]:
    """Return (CPU before the first epoch, {(run, epoch): the CPU of that epoch and its validation})."""
    at = sorted(((v[1], k) for k, v in res["valid_at"].items()), key=lambda x: x[0])
    out, prev = {}, None
    for cpu, key in at:
        run, epoch = key.rsplit("|", 1)
        if prev is None:  # the first epoch's share of the time before it is not knowable: half of it is set-up
            first = cpu
        out[(run, int(epoch))] = cpu - (prev if prev is not None else cpu / 2)
        prev = cpu
    return first / 2, out


def replay(res: dict, rule: str) -> dict:
    """Return what ``rule`` ("full", "z1xK" or "capR") would have shipped from both runs' whole curves."""
    from crossrec_core.training.batch_race import MIN_GAP

    runs = list(res["curves"])
    if len(runs) < 2:
        return {"rule": rule, "ship": runs[0], "dropped_at": None}
    setup, cpu = _epoch_cpu(res)
    curves = {r: res["curves"][r] for r in runs}
    best_so_far = {r: [max(h["ndcg10_stop"] for h in c[: i + 1]) for i in range(len(c))] for r, c in curves.items()}
    drop = None  # (round, dropped run)
    if rule.startswith("z1x"):
        k = int(rule[3:])
        rounds = res["rounds"] or []
        for i in range(k - 1, len(rounds)):
            streak = rounds[i - k + 1 : i + 1]
            if all(r["z"] > 1.0 and r.get("gap", 0.0) >= MIN_GAP for r in streak):
                drop = (rounds[i]["epoch"], runs[0])
                break
            if all(r["z"] < -1.0 and r.get("gap", 0.0) <= -MIN_GAP for r in streak):
                drop = (rounds[i]["epoch"], runs[1])
                break
    elif rule.startswith("cap"):
        R = int(rule[3:])
        n = min(R, len(curves[runs[0]]), len(curves[runs[1]]))
        a, b = best_so_far[runs[0]][n - 1], best_so_far[runs[1]][n - 1]
        drop = (n, runs[1] if a >= b else runs[0])
    ship = res["run"] if drop is None else next(r for r in runs if r != drop[1])
    best_i = max(range(len(curves[ship])), key=lambda i: (curves[ship][i]["ndcg10_stop"], -i))
    spent = setup + sum(cpu.get((ship, e), 0.0) for e in range(1, best_i + 2))
    other = next(r for r in runs if r != ship)
    last_other = len(curves[other]) if drop is None else drop[0]
    spent += sum(cpu.get((other, e), 0.0) for e in range(1, min(last_other, best_i + 1) + 1))  # the rival's epochs before the best
    return {"rule": rule, "ship": ship, "dropped_at": None if drop is None else drop[0], "best_epoch": best_i + 1,
            "valid": curves[ship][best_i]["ndcg10_stop"], "cpu_to_best": spent}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--replay" or argv and argv[0] == "--replay":
        files = (argv or sys.argv[1:])[1:]
        rules = ["full", "z1x3", "z1x2", "z1x1", "cap3", "cap5", "cap8"]
        print("| log | rule | ships | rival dropped at round | best epoch | valid NDCG@10 (stopping figure) | CPU s to best |")
        print("|---|---|---|---:|---:|---:|---:|")
        for f in files:
            res = json.loads(Path(f).read_text())
            for rule in rules:
                r = replay(res, rule)
                print(f"| {Path(res['log']).name} | {rule} | {r['ship']} | {r.get('dropped_at') or '-'} | {r.get('best_epoch', '-')} | "
                      f"{r.get('valid', float('nan')):.4f} | {r.get('cpu_to_best', float('nan')):.0f} |")
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--set", action="append", default=[], help="TrainConfig field=JSON value (repeatable)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    os.environ.setdefault("CROSSREC_HOME", "/tmp/race-curves-home")
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from compare import K, load_dataset, score_lists, topk_matrix
    from crossrec_core.config import ModelConfig
    from crossrec_core.serving.recommender import Recommender
    from crossrec_core.training.loop import train_model

    ds = load_dataset(a.log, None)
    cfg = ModelConfig()
    over = {"seed": a.seed}
    for s in a.set:
        k, v = s.split("=", 1)
        over[k] = json.loads(v)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **over))
    c0, valid_at = _cpu(), {}

    def on_progress(pr) -> None:
        if pr.phase == "valid" and pr.valid_ndcg10 is not None:
            valid_at[f"{getattr(pr, 'run', '')}|{int(pr.epoch)}"] = (float(pr.elapsed_s), _cpu() - c0, float(pr.valid_ndcg10))

    t0 = time.perf_counter()
    model = train_model(ds, cfg, on_progress=on_progress, name="race-curves")
    train_s, train_cpu = time.perf_counter() - t0, _cpu() - c0
    m = model.metrics
    best = int(m["best_epoch"])
    run = ("length buckets" if model.config.train.length_buckets else "random batches") if m.get("run_histories") else ""
    llo = ds.leave_last_out()
    rec = Recommender(model, ds).recommend_batch(model.align(ds), llo.test_users, llo.test_pos, K)
    item_idx = ds.item_index(model.item_ids[rec["item_idx"].to_numpy()])
    top = topk_matrix(rec["user_idx"].to_numpy(), rec["rank"].to_numpy(), item_idx, np.asarray(llo.test_users))
    scores = score_lists(ds, top)
    per = scores.pop("_per_user")
    histories = m.get("run_histories") or {"": m["history"]}
    res = {
        "log": a.log, "seed": a.seed, "set": a.set, "train_s": train_s, "train_cpu": train_cpu, "best_epoch": best, "run": run,
        "to_best": valid_at.get(f"{run}|{best}"), "valid_at": valid_at, "rounds": m.get("batch_rounds"), "epochs_run": m.get("epochs_run"),
        "scores": scores, "load": os.getloadavg(),
        "curves": {k: [{f: h[f] for f in ("epoch", "train_s", "ndcg10_stop", "ndcg10") if f in h} for h in v] for k, v in histories.items()},
        "per_user_ndcg": per["NDCG"].tolist(), "novel_mask": per["mask_novel"].tolist(),
    }
    Path(a.out).write_text(json.dumps(res, default=str))
    print(json.dumps({k: res[k] for k in ("train_s", "train_cpu", "best_epoch", "run", "to_best", "epochs_run")}, default=str))
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
