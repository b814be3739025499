"""A log whose item vectors carry a signal the IDs and titles do not show, and what `--item-vectors` gains on it
(issue 15.2).

    .venv/bin/python bench/vector_logs.py --out /tmp/vec-a --seed 1                  # write the log
    flock /tmp/bench.lock .venv/bin/python bench/vector_logs.py --measure /tmp/vec-a   # with / without vectors

Every item has a hidden **style** (one of ``--styles``), drawn independently of its category, brand and
title ("<noun> <n>": no style word). Every shopper has a favourite style: each next item is of a category
drawn at random, and within it of the shopper's style with probability ``--loyalty`` (else any item), by
popularity. So what predicts the next item across categories is the style, which only the item vectors
show: ``item_vectors.parquet`` holds, per item, its style's random centroid plus noise (``--noise``),
``--dim`` values, in a list column ``vector``. A share of items (``--new``) appears only as shoppers' last
(test) events: cold items that the vectors, title and category must carry alone.

``--measure`` trains the default model twice on the log (seed 42), without and with the vectors, and
prints test NDCG@10 of the shipped lists on all shoppers, on shoppers whose target category is new to
them, and on shoppers whose target is a cold item, plus the training times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dense_logs import NOUNS, write_log  # noqa: E402
from crossrec_core.config import default_config  # noqa: E402
from crossrec_core.data.item_vectors import attach_item_vectors, read_item_vectors  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.evaluator import rank_shipped, ranker_space, split_targets  # noqa: E402
from crossrec_core.evaluation.metrics import per_user_ranking_metrics  # noqa: E402
from crossrec_core.training.loop import train_model, train_popularity  # noqa: E402

DAY = 24 * 3600


def generate(users: int, items: int, categories: int, styles: int, seed: int, *, loyalty: float = 0.8, median_events: int = 8,
             dim: int = 16, noise: float = 0.5, new: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items, item vectors) of one hidden-style log."""
    rng = np.random.default_rng(seed)
    cat_of = rng.integers(0, categories, items)
    style_of = rng.integers(0, styles, items)
    pop = 1.0 / rng.permutation(np.arange(1, items + 1)) ** 0.7
    is_new = rng.random(items) < new
    rows = []
    for u in range(users):
        fav = int(rng.integers(styles))
        n = max(3, int(rng.poisson(median_events)))
        t = int(rng.integers(0, 30 * DAY))
        had: set[int] = set()
        for k in range(n):
            last = k == n - 1
            c = int(rng.integers(categories))
            pool = (cat_of == c) & (last | ~is_new)  # new items only as the last (test) event
            if rng.random() < loyalty:
                pool &= style_of == fav
            pool[list(had)] = False
            cand = np.flatnonzero(pool)
            if len(cand) == 0:
                continue
            i = int(rng.choice(cand, p=pop[cand] / pop[cand].sum()))
            had.add(i)
            rows.append((f"u{u}", f"i{i}", t, "purchase"))
            t += int(rng.integers(600, 3 * DAY))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    used = set(inter["item_id"])
    cat_names = [f"{NOUNS[c % len(NOUNS)].title()}s {c // len(NOUNS) + 1}" for c in range(categories)]
    items_df = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(items)],
        "category": [cat_names[c] for c in cat_of],
        "title": [f"{NOUNS[c % len(NOUNS)]} {i}" for i, c in enumerate(cat_of)],
        "brand": [f"brand{b}" for b in rng.integers(0, 40, items)],
    })
    centroids = rng.normal(size=(styles, dim))
    vecs = centroids[style_of] + noise * rng.normal(size=(items, dim))
    vec_df = pd.DataFrame({"item_id": items_df["item_id"], "vector": list(vecs.astype(np.float32))})
    keep = items_df["item_id"].isin(used).to_numpy()
    return inter, items_df[keep].reset_index(drop=True), vec_df[keep].reset_index(drop=True)


def measure(folder: Path, seed: int = 42) -> None:
    ds = load_log(str(folder / "interactions.csv"), str(folder / "items.csv"), name=folder.name)
    with_vecs = attach_item_vectors(ds, *read_item_vectors(folder / "item_vectors.parquet"))
    split = ds.leave_last_out()
    pop = train_popularity(ds, split.train_end)
    for label, data in (("without vectors", ds), ("with --item-vectors", with_vecs)):
        t0 = time.perf_counter()
        model = train_model(data, default_config(seed=seed, device="cpu"))
        train_s = time.perf_counter() - t0
        t = split_targets(data, "test")
        space = ranker_space(model, data, t.users, t.ends, t.targets)
        top, _ = rank_shipped(model, space, t.users, 10)
        nd = per_user_ranking_metrics(top, space.targets, 10)["NDCG"]
        cold = pop[t.targets] == 0
        print(json.dumps({
            "log": folder.name, "run": label, "users": int(len(nd)), "ndcg10": round(float(nd.mean()), 4),
            "novel_users": int(t.novel.sum()), "ndcg10_novel": round(float(nd[t.novel].mean()), 4),
            "cold_item_users": int(cold.sum()), "ndcg10_cold_items": round(float(nd[cold].mean()), 4) if cold.any() else None,
            "best_epoch": model.metrics.get("best_epoch"), "train_s": round(train_s, 1),
            "loadavg": open("/proc/loadavg").read().split()[:3],
        }), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--measure", type=Path, default=None, help="a folder this script wrote: train without / with its vectors")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--categories", type=int, default=20)
    ap.add_argument("--styles", type=int, default=8)
    ap.add_argument("--loyalty", type=float, default=0.8)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--new", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.measure is not None:
        measure(args.measure)
        return
    if args.out is None:
        ap.error("give --out DIR (write a log) or --measure DIR")
    inter, items, vecs = generate(args.users, args.items, args.categories, args.styles, args.seed, loyalty=args.loyalty,
                                  dim=args.dim, noise=args.noise, new=args.new)
    write_log(args.out, inter, items, "Hidden-style synthetic shop log (item vectors carry the style)",
              f"Made by `bench/vector_logs.py --out {args.out} --seed {args.seed} --users {args.users} --items {args.items} "
              f"--styles {args.styles} --loyalty {args.loyalty} --noise {args.noise} --new {args.new}`: each shopper keeps to one "
              "hidden item style across categories; only item_vectors.parquet (item_id, vector) shows the style.")
    vecs.to_parquet(args.out / "item_vectors.parquet", index=False)


if __name__ == "__main__":
    main()
