"""Dense synthetic logs whose next item follows the ORDER of the history, not a rule between two items.

bench/chain_logs.py plants item-to-item complements (a next-item rule catches them) and bench/dense_logs.py plants
category chains, habits and seasons (the category term catches them). Neither leaves much to a sequence encoder:
there, a converged SASRec learns little (dense-b 0.015 NDCG@10, bench/RESULTS.md). This log is the other kind, the
kind a sequence model is for (long rating or viewing histories, like a film or video catalogue):

* **a drifting interest**: each shopper's state is a moving average of the latent vectors of the items they just
  had (half-life ``--memory`` events) plus their own taste; the next item is drawn by its latent match to that
  state, so it depends on the last several items in order and on no single one;
* **releases**: items come out over the log's span and are most popular for a while after, so the recent items of
  a history say what period it is in and which items are new;
* **categories from the latent space**: an item's category is its nearest of C centroids in the latent space (with
  some noise), so drifting interest crosses categories, and some next items are in categories the shopper never
  touched.

    .venv/bin/python bench/drift_logs.py --out /tmp/drift-b --seed 6      # bench/RESULTS.md's drift-b
    .venv/bin/python bench/drift_logs.py --out /tmp/drift-c --seed 7 --users 6000 --items 3700 --categories 18 --median-events 165
    # short histories, the shape of the issue's held-out log A (3,000 shoppers, 1,500 items, 12 categories)
    .venv/bin/python bench/drift_logs.py --out /tmp/drift-s --seed 11 --users 3000 --items 1500 --categories 12 --median-events 13

writes interactions.csv (user_id,item_id,timestamp,event) and items.csv (item_id,category,title,brand)
and a PROVENANCE.md saying how they were made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dense_logs import catalogue, write_log  # noqa: E402

DAY = 24 * 3600
SPAN = 3 * 365 * DAY  # releases and shoppers spread over three years


def generate(users: int, items: int, categories: int, seed: int, median_events: int = 100, memory: float = 4.0,
             sharpness: float = 10.0, zipf: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items) of one drifting-interest log (see the module docstring)."""
    rng = np.random.default_rng(seed)
    d = 16
    vec = rng.normal(size=(items, d))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    centroids = rng.normal(size=(categories, d))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    cat_of = np.argmax(vec @ centroids.T + rng.normal(scale=0.15, size=(items, categories)), axis=1)
    base_pop = -zipf * np.log(rng.permutation(items) + 1.0)  # Zipf by a random rank
    release = rng.uniform(-0.3 * SPAN, SPAN, items)  # a third out before the log starts
    keep = 0.5 ** (1.0 / memory)  # the state's weight on its past, per event
    n_events = np.clip(rng.lognormal(np.log(median_events), 0.7, users).astype(int), 20, 600)
    rows: list[tuple] = []
    for u in range(users):
        taste = rng.normal(size=d)
        taste /= np.linalg.norm(taste)
        t = rng.uniform(0, SPAN * 0.8)
        state = taste.copy()
        seen = np.zeros(items, dtype=bool)
        for _ in range(n_events[u]):
            age = (t - release) / (90 * DAY)
            out = age >= 0
            aim = 0.7 * state / np.linalg.norm(state) + 0.3 * taste
            s = sharpness * (vec @ aim) + base_pop + 1.5 * np.exp(-np.clip(age, 0, None))
            s = np.where(out & ~seen, s, -np.inf)
            p = np.exp(s - s.max())
            item = int(rng.choice(items, p=p / p.sum()))
            seen[item] = True
            state = keep * state + (1 - keep) * vec[item]
            r = rng.random()
            event = "purchase" if r < 0.15 else ("cart" if r < 0.3 else "view")
            rows.append((f"u{u}", f"i{item}", int(t), event))
            t += rng.exponential(DAY if rng.random() < 0.8 else 20 * DAY)  # sessions, and gaps between them
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    return inter, catalogue(rng, cat_of, set(inter["item_id"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=950)
    ap.add_argument("--items", type=int, default=1700)
    ap.add_argument("--categories", type=int, default=19)
    ap.add_argument("--median-events", type=int, default=100)
    ap.add_argument("--memory", type=float, default=4.0, help="half-life of the drifting interest, in events")
    ap.add_argument("--sharpness", type=float, default=10.0, help="weight of the latent match against popularity")
    ap.add_argument("--zipf", type=float, default=0.5, help="exponent of the items' base popularity by rank")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    inter, items = generate(args.users, args.items, args.categories, args.seed, args.median_events, args.memory, args.sharpness, args.zipf)
    write_log(
        Path(args.out), inter, items, "Dense synthetic log with a drifting interest",
        f"Made by `bench/drift_logs.py --users {args.users} --items {args.items} --categories {args.categories} "
        f"--median-events {args.median_events} --memory {args.memory} --sharpness {args.sharpness} --zipf {args.zipf} "
        f"--seed {args.seed}` (each next item follows a "
        "moving average of the last items' latent vectors, releases over three years, categories from the latent "
        "space; see its docstring).",
    )


if __name__ == "__main__":
    main()
