"""Training speed and quality on CPU: events/s per epoch, time to best epoch, valid NDCG@10 vs popularity,
and text-encoder throughput cold vs cached.

    .venv/bin/python bench/train_speed.py [--datasets demo,hm-fashion-oneday,amazon-food-kitchen,taobao-userbehavior]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

DATA = "/work/shared/data"


def load(name: str):
    if name == "demo":
        from crossrec_core.data.demo_store import build_demo_dataset

        return build_demo_dataset(0)[0]
    from crossrec_core.data.load import load_log

    return load_log(f"{DATA}/{name}/interactions.csv", f"{DATA}/{name}/items.csv", name=name)


def popularity_ndcg(ds) -> float:
    """Return valid NDCG@10 of train-popularity ranking with seen items excluded."""
    from crossrec_core.evaluation.metrics import ndcg_hr
    from crossrec_core.training.loop import train_popularity
    from crossrec_core.training.tuning import rank_targets

    split = ds.leave_last_out()
    pop = train_popularity(ds, split.train_end)
    users, ends = split.valid_users.astype(np.int64), split.valid_pos
    targets = ds.seqs.items[ends].astype(np.int64)
    ranks = np.concatenate([
        rank_targets(np.tile(pop, (len(users[s:s + 256]), 1)), ds.seqs, users[s:s + 256], ends[s:s + 256], targets[s:s + 256])
        for s in range(0, len(users), 256)
    ])
    return ndcg_hr(ranks)["ndcg10"]


def text_throughput(ds) -> tuple[float, float]:
    from crossrec_core.models.text import TextEncoder, item_texts

    texts = list(dict.fromkeys(item_texts(ds.items, ds.attribute_columns)))[:1000]
    with tempfile.TemporaryDirectory() as tmp:
        enc = TextEncoder(cache_dir=tmp)
        enc._load()
        t = time.perf_counter()
        enc.encode(texts)
        cold = len(texts) / (time.perf_counter() - t)
        t = time.perf_counter()
        TextEncoder(cache_dir=tmp).encode(texts)
        warm = len(texts) / (time.perf_counter() - t)
    return cold, warm


def main() -> int:
    import logging

    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="demo,hm-fashion-oneday,amazon-food-kitchen,taobao-userbehavior")
    p.add_argument("--encoder", default="transformer")
    p.add_argument("--text-only", action="store_true", help="only the text-encoder throughput (cold vs cached), no training")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from crossrec_core.config import default_config
    from crossrec_core.training.loop import train_model

    rows = []
    for name in ([] if args.text_only else args.datasets.split(",")):
        ds = load(name)
        pop = popularity_ndcg(ds)
        t = time.perf_counter()
        model = train_model(ds, default_config(encoder=args.encoder, device="cpu"))
        total = time.perf_counter() - t
        m = model.metrics
        hist = m["history"]
        eps = float(np.median([h["events_per_s"] for h in hist]))
        to_best = sum(h["train_s"] for h in hist if h["epoch"] <= m["best_epoch"])
        v = m["valid"]
        rows.append((name, ds.n_events, ds.n_items, m["loss"], eps, m["best_epoch"], len(hist), to_best, total, v["ndcg10"], v.get("ndcg10_fusion_oof", float("nan")), v["hr10"], pop))
        print(rows[-1], file=sys.stderr, flush=True)
    cold, warm = text_throughput(load("amazon-food-kitchen") if "amazon-food-kitchen" in args.datasets else load(args.datasets.split(",")[0]))
    print(f"\ncommand: {' '.join([sys.executable] + sys.argv)}  (CPU threads: {os.cpu_count()})\n")
    print("| dataset | events | items | loss | train events/s | best epoch | epochs run | train s to best | total s (incl. text, valid, fusion) | valid NDCG@10 | NDCG@10 fusion re-rank (out-of-fold, validation) | HR@10 | popularity NDCG@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]:,} | {r[3]} | {r[4]:,.0f} | {r[5]} | {r[6]} | {r[7]:.0f} | {r[8]:.0f} | {r[9]:.4f} | {r[10]:.4f} | {r[11]:.4f} | {r[12]:.4f} |")
    print(f"\ntext encoder (1,000 titles): cold {cold:,.0f} titles/s, cached {warm:,.0f} titles/s "
          f"(load average {os.getloadavg()[1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
