"""What private training (`crossrec train --dp-epsilon E`) costs in quality, on the shared logs (issue 15.5).

    flock /tmp/bench.lock .venv/bin/python bench/dp_quality.py --logs hm-fashion-oneday --eps 8,4,1

For each log, trains and scores on the test split (each shopper's last event; the lists
`crossrec recommend` ships, NDCG@10 on all shoppers and on those whose target's category is new to them):

* ``default``: the ordinary model (early stopping, prior, item-kNN, fusion re-rank), not private;
* ``private setup, no noise``: the private loop (one window per shopper, clipped per-shopper gradients,
  fixed passes, sampled softmax, prior / item-kNN / fusion off) without noise -- NOT private: it
  separates the cost of that setup from the cost of the noise;
* ``epsilon E``: `--dp-epsilon E`, with the epsilon the accountant reports;
* ``epsilon E, no ID vectors`` (``--runs noid``): the same without the item-ID embedding, the one part
  whose size grows with the catalogue (items then are title + category + attributes): fewer noised
  parameters.

Prints one JSON line per (log, run) with the training time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fusion_refit import load, test_ndcg  # noqa: E402
from crossrec_core.config import default_config  # noqa: E402
from crossrec_core.training.loop import train_model  # noqa: E402
from crossrec_core.training.private import private_config, train_private  # noqa: E402

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", default="hm-fashion-oneday")
    ap.add_argument("--eps", default="8,4,1")
    ap.add_argument("--epochs", type=int, default=None, help="private passes (default: TrainConfig.dp_epochs)")
    ap.add_argument("--runs", default="default,nonoise,eps")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    args = ap.parse_args()
    runs = args.runs.split(",")
    for name in args.logs.split(","):
        ds = load(name, args.demo_dir)
        base = default_config(seed=args.seed, device="cpu")
        plan = ([("default", None, False)] if "default" in runs else []) + ([("no noise", 8.0, True)] if "nonoise" in runs else [])
        plan += [(f"epsilon {e:g}", e, False) for e in map(float, args.eps.split(","))] if "eps" in runs else []
        plan += [(f"epsilon {e:g}, no ID vectors", e, False) for e in map(float, args.eps.split(","))] if "noid" in runs else []
        for label, eps, noise_free in plan:
            cfg = dataclasses.replace(base, item=dataclasses.replace(base.item, use_id=False)) if "no ID" in label else base
            t0 = time.perf_counter()
            if eps is None:
                model = train_model(ds, cfg)
            else:
                model = train_private(ds, private_config(cfg, eps, args.epochs), noise_free=noise_free)
            train_s = time.perf_counter() - t0
            nd, novel, _ = test_ndcg(model, ds)
            p = model.metrics.get("privacy", {})
            print(json.dumps({
                "log": Path(name).name, "run": label, "users": int(len(nd)), "novel_users": int(novel.sum()),
                "ndcg10": round(float(nd.mean()), 4), "ndcg10_novel": round(float(nd[novel].mean()), 4) if novel.any() else None,
                "epsilon_spent": None if not p else p.get("epsilon"), "delta": p.get("delta"), "noise": p.get("noise_multiplier"),
                "steps": p.get("steps"), "epochs": model.metrics.get("best_epoch"), "train_s": round(train_s, 1),
                "loadavg": open("/proc/loadavg").read().split()[:3],
            }), flush=True)

if __name__ == "__main__":
    main()
