"""Warm start vs training from scratch after the newest 10 % of a log arrives (issue 15, 3c), and adding new
items without retraining (3b).

    flock /tmp/bench.lock .venv/bin/python bench/warm_start.py --logs demo,hm-fashion-oneday --demo-dir /tmp/demo \
        --seeds 42 --out /tmp/warm-start.json

For each log: the events are put in time order (a stable sort, so ties keep file order) and the last 10 % are
held back. ``base`` is trained from scratch (defaults) on the first 90 %, on the items seen there. Then, on the
full log:

* ``warm``: ``warm_start_train(base, full log)`` (what `crossrec train --warm-start` runs);
* ``scratch``: ``train_model(full log)`` with the same settings and seed;
* ``base``: the 90 % model as it is (items it never saw cannot be recommended);
* ``base + add_items``: the 90 % model with every new item whose category it knows added by
  ``TrainedModel.add_items`` (title + category, no retraining).

Every model is scored with the evaluator's test split of the full log (leave-last-out, each shopper's last
event; evaluation/evaluator.py: split_targets, ranker_space, rank_shipped: the lists `crossrec recommend`
ships), NDCG@10 on all shoppers and on those whose target is among the newest 10 % of events. Wall times:
``train_s`` of each training, ``live_add_s`` of LiveRecommender.add_items for the first 100 new items (it also
loads the text encoder) and the next 100 (copy of the model, titles encoded, a new Recommender), and
``add_s`` of add_items of every new item on a copy of ``base``; the adds run before the full-log trainings, so
their titles are not in the text cache yet. One JSON line per log and seed. ``--add-only`` trains the 90 % model
for one epoch and stops after the adds (their time depends on the catalogue, not on the training).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.calibration import log_paths  # noqa: E402
from crossrec_core.config import ModelConfig  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.evaluator import rank_shipped, ranker_space, split_targets  # noqa: E402
from crossrec_core.evaluation.metrics import per_user_ranking_metrics  # noqa: E402
from crossrec_core.serving.live import LiveRecommender  # noqa: E402
from crossrec_core.training.loop import train_model  # noqa: E402
from crossrec_core.training.warm_start import warm_start_train  # noqa: E402


def ndcg(model, ds, recent: np.ndarray, k: int = 10) -> dict:
    """Return test NDCG@k of the shipped lists on all shoppers and on those whose target is a recent event."""
    t = split_targets(ds, "test")
    space = ranker_space(model, ds, t.users, t.ends, t.targets)
    top, _ = rank_shipped(model, space, t.users, k)
    nd = per_user_ranking_metrics(top, space.targets, k)["NDCG"]
    new = recent[t.ends]  # the target event is among the newest 10 %
    return {"ndcg": round(float(nd.mean()), 4), "ndcg_recent": round(float(nd[new].mean()), 4) if new.any() else None,
            "users": int(t.n_users), "recent_users": int(new.sum())}


def recent_mask(ds, inter: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
    """Return bool (n_events,) in ds's event order: the event is one of the held-back rows."""
    key = lambda u, i, t: pd.Series(u, dtype=object).astype(str) + "\x1f" + pd.Series(i, dtype=object).astype(str) + "\x1f" + pd.Series(t).astype(str)  # noqa: E731
    fr = ds.interactions_frame()
    held_keys = set(key(held["user_id"], held["item_id"], held["timestamp"]))
    return key(fr["user_id"], fr["item_id"], fr["timestamp"]).isin(held_keys).to_numpy()


def run(name: str, demo_dir: Path, seed: int, add_only: bool = False) -> dict:
    # a fresh workspace per run: the title-vector cache starts empty, so the base model encodes the 90 % items'
    # titles and add_items the new ones (the full-log trainings then find every title of a known category cached)
    os.environ["CROSSREC_HOME"] = tempfile.mkdtemp(prefix="warm-start-home-")
    inter_path, items_path = log_paths(name, demo_dir)
    inter = pd.read_csv(inter_path, dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(items_path, dtype={"item_id": str})
    inter = inter.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(round(len(inter) * 0.9))
    old, held = inter.iloc[:cut], inter.iloc[cut:]
    tag = Path(name).name
    full = load_log(str(inter_path), str(items_path), name=tag)
    base_ds = load_log(old, items[items["item_id"].isin(old["item_id"])], name=f"{tag}-90")
    recent = recent_mask(full, inter, held)
    cfg = ModelConfig()
    # --add-only: the add_items times only (they depend on the catalogue, not on how long the model trained)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, **({"epochs": 1} if add_only else {})))
    out: dict = {"log": tag, "seed": seed, "events": full.n_events, "held_events": len(held),
                 "new_items": int((~pd.Series(full.item_ids).isin(base_ds.item_ids)).sum()),
                 "new_users": int((~pd.Series(full.user_ids).isin(base_ds.user_ids)).sum())}
    t0 = time.perf_counter()
    base = train_model(base_ds, cfg, name="base")
    out["base"] = {"train_s": round(time.perf_counter() - t0, 1), **ndcg(base, full, recent)}
    # 3b first, while the new titles are not yet in the text cache (training on the full log encodes them)
    new_items = full.items[(base.item_index(full.items["item_id"].to_numpy(dtype=object)) < 0)
                           & full.items["category"].isin(base.category_names)]
    live = LiveRecommender(base)
    batch = new_items.iloc[:100][["item_id", "title", "category"]]
    t0 = time.perf_counter()
    live.add_items(batch)  # the first call also loads the text encoder
    first_s = time.perf_counter() - t0
    second = new_items.iloc[100:200][["item_id", "title", "category"]]
    t0 = time.perf_counter()
    if len(second):
        live.add_items(second)
    out["live_add_s"] = {"first_100": round(first_s, 2), "next": len(second), "next_s": round(time.perf_counter() - t0, 2) if len(second) else None,
                         "items": int(live.model.n_items)}
    grown = copy.deepcopy(base)  # base itself is the warm start's starting point
    t0 = time.perf_counter()
    grown.add_items(new_items[["item_id", "title", "category"]])
    out["base_add_items"] = {"added": len(new_items), "add_s": round(time.perf_counter() - t0, 2), **ndcg(grown, full, recent)}
    if add_only:
        return out
    t0 = time.perf_counter()
    warm = warm_start_train(base, full, cfg, name="warm")
    out["warm"] = {"train_s": round(time.perf_counter() - t0, 1), "best_epoch": warm.metrics["best_epoch"],
                   "epochs": len(warm.metrics["history"]), **ndcg(warm, full, recent)}
    t0 = time.perf_counter()
    scratch = train_model(full, cfg, name="scratch")
    out["scratch"] = {"train_s": round(time.perf_counter() - t0, 1), "best_epoch": scratch.metrics["best_epoch"],
                      "epochs": len(scratch.metrics["history"]), **ndcg(scratch, full, recent)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", default="demo,hm-fashion-oneday")
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--add-only", action="store_true", help="train the 90 %% model for 1 epoch and time add_items only")
    args = ap.parse_args()
    for name in args.logs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run(name, args.demo_dir, seed, args.add_only)
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
