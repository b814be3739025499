"""How long `crossrec recommend`'s lists take for every test shopper of a log, from any checkout (before / after).

    .venv/bin/python bench/fusion_refit.py train --logs demo,hm-fashion-oneday,amazon-food-kitchen --models /tmp/refit   # once
    .venv/bin/python bench/ship_speed.py --models /tmp/refit --logs demo,/work/shared/data/amazon-food-kitchen [--root CHECKOUT]

For each log's saved model (MODELS/<log's folder name>): the shipped top 10 (`rank_shipped`, what `crossrec recommend`
writes) for every test shopper, twice; prints one JSON line per log with both times (the first pays cold caches)
and NDCG@10, so a before / after pair can be checked for identical quality. ``--root`` imports crossrec_core from
another checkout (a worktree at an older commit); give shared logs as full paths then.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout whose crossrec_core is timed")
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    args = ap.parse_args()
    sys.path[:0] = [args.root + "/bench", args.root]
    from bench.fusion_refit import load  # noqa: E402  (from --root, hence here)
    from crossrec_core.evaluation.evaluator import rank_shipped, ranker_space, split_targets  # noqa: E402
    from crossrec_core.evaluation.metrics import per_user_ranking_metrics  # noqa: E402
    from crossrec_core.storage.registry import load_model  # noqa: E402

    for log in args.logs.split(","):
        ds = load(log, args.demo_dir)
        model = load_model(args.models / Path(log).name)
        t = split_targets(ds, "test")
        space = ranker_space(model, ds, t.users, t.ends, t.targets)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            top, _ = rank_shipped(model, space, t.users, 10)
            times.append(round(time.perf_counter() - t0, 2))
        nd = per_user_ranking_metrics(top, space.targets, 10)["NDCG"]
        print(json.dumps({"root": args.root, "log": log, "users": int(t.n_users), "recommend_s": times, "ndcg": round(float(nd.mean()), 4)}), flush=True)


if __name__ == "__main__":
    main()
