"""Quality and calibration of what `crossrec recommend` ships, on the test targets of a log.

For each log: train with the defaults (as `crossrec train` does), then recommend top-K for every test
history (each user's events before the last one) through the same Recommender the CLI uses, and report
NDCG@K / HR@K on all / novel users, and the calibration of the probabilities on the K shown rows:
expected calibration error (15 equal-width bins), Brier score, mean probability vs hit rate.

    .venv/bin/python bench/calibration.py --logs demo,hm-fashion-oneday --out bench/out/calibration.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crossrec_core.config import ModelConfig  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.evaluator import split_targets  # noqa: E402
from crossrec_core.evaluation.metrics import calibration_report, per_user_ranking_metrics  # noqa: E402
from crossrec_core.serving.recommender import Recommender  # noqa: E402
from crossrec_core.training.loop import train_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def log_paths(name: str, demo_dir: Path) -> tuple[Path, Path]:
    """Return (interactions, items) of "demo", a folder of ../shared/data, or any folder path."""
    folder = demo_dir if name == "demo" else (Path(name) if "/" in name else SHARED / name)
    return folder / "interactions.csv", folder / "items.csv"


def measure(name: str, demo_dir: Path, k: int, seed: int, cfg: ModelConfig | None = None, ds=None) -> dict:
    """Train on log ``name`` (defaults, or ``cfg``) with ``seed`` and return the test figures of what ships."""
    if ds is None:
        inter, items = log_paths(name, demo_dir)
        ds = load_log(str(inter), str(items), name=Path(name).name)
    t0 = time.perf_counter()
    cfg = cfg or ModelConfig()
    model = train_model(ds, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed)))
    train_s = time.perf_counter() - t0
    t = split_targets(ds, "test")
    rec = Recommender(model)
    aligned = model.align(ds)
    # the test history of each user ends before its last event (model space: same positions, the
    # model knows every item of the log it was trained on)
    recs = rec.recommend_batch(aligned, t.users.astype(np.int64), t.ends, k)
    top = np.full((t.n_users, k), -1, dtype=np.int64)
    prob = np.full((t.n_users, k), np.nan)
    row = np.searchsorted(t.users, recs["user_idx"].to_numpy())
    top[row, recs["rank"].to_numpy() - 1] = recs["item_idx"].to_numpy()
    prob[row, recs["rank"].to_numpy() - 1] = recs["probability"].to_numpy()
    m = per_user_ranking_metrics(top, t.targets, k)
    hits = top == t.targets[:, None]
    cal = calibration_report(prob[top >= 0], hits[top >= 0])
    # what the fusion re-rank adds on test: the same model's lists in retrieval order
    rerank = model.fusion_rerank
    model.fusion_rerank = False
    recs_r = rec.recommend_batch(aligned, t.users.astype(np.int64), t.ends, k)
    model.fusion_rerank = rerank
    top_r = np.full((t.n_users, k), -1, dtype=np.int64)
    top_r[np.searchsorted(t.users, recs_r["user_idx"].to_numpy()), recs_r["rank"].to_numpy() - 1] = recs_r["item_idx"].to_numpy()
    m_r = per_user_ranking_metrics(top_r, t.targets, k)
    v = model.metrics["valid"]
    out = {
        "log": Path(name).name, "seed": seed,
        "ndcg_retrieval_order": float(m_r["NDCG"].mean()),
        "ndcg_novel_retrieval_order": float(m_r["NDCG"][t.novel].mean()) if t.novel.any() else None,
        "coverage": float(len(np.unique(top[top >= 0])) / model.n_items), "users": int(t.n_users), "novel_users": int(t.novel.sum()), "train_s": round(train_s, 1),
        "ndcg": float(m["NDCG"].mean()), "hr": float(m["HR"].mean()),
        "ndcg_novel": float(m["NDCG"][t.novel].mean()) if t.novel.any() else None,
        "ece": cal["ece"], "brier": cal["brier"], "mean_proba": cal["mean_proba"], "hit_rate_rows": cal["positive_rate"],
        "fusion_rerank": v.get("fusion_rerank"), "oof_fusion": v.get("ndcg10_fusion_oof"), "oof_retrieval": v.get("ndcg10_retrieval_oof"),
        "best_epoch": model.metrics["best_epoch"],
        "epochs_run": model.metrics.get("epochs_run"),
        "random_batches": v.get("random_batches"), "batch_choice": v.get("batch_choice"), "batch_choice_z": v.get("batch_choice_z"),
        # the race of the two runs (training/batch_race.py): who was dropped when, z per round, each run's curve
        "batch_dropped": v.get("batch_dropped"), "batch_rounds": model.metrics.get("batch_rounds"),
        "run_curves": {run: [[h["epoch"], round(h["ndcg10_stop"], 5), round(h["train_s"], 2)] for h in hist]
                       for run, hist in (model.metrics.get("run_histories") or {}).items()},
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", default="demo,hm-fashion-oneday,amazon-food-kitchen,taobao-userbehavior",
                    help="comma-separated: demo, a folder name of ../shared/data, or a folder path (e.g. a bench/dense_logs.py output)")
    ap.add_argument("--demo-dir", default="/tmp/demo", help="the demo store exported with `crossrec demo --export DIR`")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seeds", default="42", help="comma-separated training seeds (default 42, the default config's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.logs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(measure(name, Path(args.demo_dir), args.k, seed))
            if args.out:  # written after every run: a long job keeps what it finished
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
