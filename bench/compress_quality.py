"""What `crossrec compress` costs on real logs: size on disk, load and recommend time, NDCG@10 change.

    .venv/bin/python bench/fusion_refit.py train --logs demo,hm-fashion-oneday,/tmp/chain-a --models /tmp/refit   # once
    .venv/bin/python bench/compress_quality.py --logs demo,hm-fashion-oneday,/tmp/chain-a --models /tmp/refit

For each log's saved model (MODELS/<log>): compress it (int8 item tables and layer weights; ``--layers float32``
keeps the layers in float32, ``--prune`` adds magnitude pruning), then recommend top-10 on the test histories with both and report the folder sizes, the load time,
the recommend time for every test shopper, NDCG@10 on all / novel shoppers, the share of identical list
slots and the mean absolute probability change of the shown rows. Prints one JSON line per log.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fusion_refit import load  # noqa: E402
from crossrec_core.evaluation.evaluator import rank_shipped, ranker_space, split_targets  # noqa: E402
from crossrec_core.evaluation.metrics import per_user_ranking_metrics  # noqa: E402
from crossrec_core.storage.compress import CompressConfig, compress_model  # noqa: E402
from crossrec_core.storage.registry import load_model  # noqa: E402


def lists(folder: Path, ds, k: int = 10) -> dict:
    t0 = time.perf_counter()
    model = load_model(folder)
    load_s = time.perf_counter() - t0
    t = split_targets(ds, "test")
    space = ranker_space(model, ds, t.users, t.ends, t.targets)
    t0 = time.perf_counter()
    top, prob = rank_shipped(model, space, t.users, k)  # what `crossrec recommend` ships
    rec_s = time.perf_counter() - t0
    nd = per_user_ranking_metrics(top, space.targets, k)["NDCG"]
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return {"top": top, "prob": prob, "ndcg": float(nd.mean()), "ndcg_novel": float(nd[t.novel].mean()) if t.novel.any() else None,
            "load_s": round(load_s, 2), "recommend_s": round(rec_s, 2), "mb": round(size / 2**20, 2), "users": int(t.n_users)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    ap.add_argument("--prune", type=float, default=0.0)
    ap.add_argument("--layers", choices=("int8", "float32"), default="int8", help="the layers' weights (as `crossrec compress --layers`)")
    args = ap.parse_args()
    for name in args.logs.split(","):
        tag = Path(name).name
        ds = load(name, args.demo_dir)
        src = args.models / tag
        out = Path(tempfile.mkdtemp(prefix="compressed-")) / tag
        compress_model(src, out, CompressConfig(prune=args.prune, int8_layers=args.layers == "int8"))
        lists(src, ds)  # a first call pays the cold caches (text cache, allocator): time the second of each
        a, b = lists(src, ds), lists(out, ds)
        both = np.isfinite(a["prob"]) & np.isfinite(b["prob"])
        print(json.dumps({
            "log": tag, "prune": args.prune, "layers": args.layers, "users": a["users"],
            "mb": [a["mb"], b["mb"]], "load_s": [a["load_s"], b["load_s"]], "recommend_s": [a["recommend_s"], b["recommend_s"]],
            "ndcg": [round(a["ndcg"], 4), round(b["ndcg"], 4)],
            "ndcg_novel": [None if a["ndcg_novel"] is None else round(a["ndcg_novel"], 4), None if b["ndcg_novel"] is None else round(b["ndcg_novel"], 4)],
            "same_slots": round(float((a["top"] == b["top"]).mean()), 4),
            "mean_abs_probability_change": round(float(np.abs(a["prob"] - b["prob"])[both].mean()), 5),
        }), flush=True)
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
