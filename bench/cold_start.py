"""Which shoppers should get the cold-start list: test NDCG@10 of the shipped lists of saved models with the
cold-start fallback for shoppers with at most 2, 1 or 0 known events, and the model's own (validated) choice.

    .venv/bin/python bench/cold_start.py --logs hm-fashion-oneday,/tmp/chain-a,demo --models /tmp/refit-models

The models are those `bench/fusion_refit.py train` saves (one folder per log under --models). For each log it
prints how many test shoppers are short (<= 2 known events) and how many of the novel-category ones are, then
NDCG@10 on all / novel / short shoppers for each threshold, with paired-bootstrap intervals against the fixed
rule (2). The fusion scorer is the saved one throughout (fitted with the saved model's own threshold), so this
measures the retrieval stage's choice under a fixed re-rank. Run one job at a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.calibration import log_paths  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.evaluator import ranker_space, split_targets  # noqa: E402
from crossrec_core.evaluation.metrics import paired_bootstrap, per_user_ranking_metrics  # noqa: E402
from crossrec_core.serving.recommender import Recommender  # noqa: E402
from crossrec_core.storage.registry import load_model  # noqa: E402


def shipped_ndcg(model, space, users: np.ndarray, cold_max_events: int | None, k: int = 10) -> np.ndarray:
    """Return per-user NDCG@k of the lists a Recommender with this cold threshold ships."""
    recs = Recommender(model, cold_max_events=cold_max_events).recommend_batch(space.seqs, users, space.ends, k)
    top = np.full((len(users), k), -1, dtype=np.int64)
    row = pd.Index(users).get_indexer(recs["user_idx"].to_numpy(np.int64))
    top[row, recs["rank"].to_numpy(np.int64) - 1] = recs["item_idx"].to_numpy(np.int64)
    return per_user_ranking_metrics(top, space.targets, k)["NDCG"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", required=True, help="comma-separated: demo, a ../shared/data folder name, or a folder path")
    ap.add_argument("--models", required=True, type=Path, help="one saved model per log, in a folder named like the log")
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    args = ap.parse_args()
    print("| log | threshold | NDCG@10 all [vs 2] | novel [vs 2] | short shoppers (<= 2 events) |")
    print("|---|---|---|---|---|")
    for name in args.logs.split(","):
        inter, items = log_paths(name, args.demo_dir)
        ds = load_log(str(inter), str(items), name=Path(name).name)
        model = load_model(args.models / Path(name).name)
        t = split_targets(ds, "test")
        users = np.asarray(t.users, dtype=np.int64)
        space = ranker_space(model, ds, users, t.ends, t.targets)
        short = (space.ends - space.seqs.offsets[users]) <= 2
        novel = np.asarray(t.novel)
        print(f"<!-- {Path(name).name}: {len(users):,} test shoppers, {short.sum():,} short, {novel.sum():,} novel, "
              f"{(novel & short).sum():,} novel and short; the model chose {model.cold_max_events} -->", flush=True)
        base = shipped_ndcg(model, space, users, 2)
        for th in (2, 1, 0):
            x = base if th == 2 else shipped_ndcg(model, space, users, th)
            d, dn = paired_bootstrap(x, base), paired_bootstrap(x[novel], base[novel])
            mark = " (the model's choice)" if th == model.cold_max_events else ""
            print(f"| {Path(name).name} | {th}{mark} | {x.mean():.4f} [{d.low:+.4f}, {d.high:+.4f}] | "
                  f"{x[novel].mean():.4f} [{dn.low:+.4f}, {dn.high:+.4f}] | {x[short].mean() if short.any() else float('nan'):.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
