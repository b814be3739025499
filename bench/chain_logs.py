"""Synthetic shop logs built on item-level complements: what a shopper buys next is often a specific
item of ANOTHER category that goes with the one just bought (tent -> a stove that fits it -> its gas).

The demo store (crossrec_core/data/demo_store.py) plants a few category journeys; bench/dense_logs.py
plants category-level chains, habits and seasons. Here the cross-category signal lives between ITEMS,
not categories: every item has a few complements in other categories, so a category-level model (what
category comes next) knows little and an item-to-item model a lot, and many shoppers' next purchase
is in a category they never touched (a high novel-category share, like a shop where people buy a kit
piece by piece). Purchases only, short histories (median ~13), like a sparse order log.

Each shopper starts from a popular item; each next purchase is, in turn:

* a complement of one of the last two items (``--follow``, default 0.6), picked by the complement's
  strength (Zipf over the item's list);
* another item of a category the shopper already bought in, by their taste (a latent vector) (0.25);
* a popular item anywhere (the rest).

    .venv/bin/python bench/chain_logs.py --out /tmp/chain-a --seed 1
    .venv/bin/python bench/chain_logs.py --out /tmp/chain-b --seed 2 --users 2000 --items 2500 --categories 16

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


def generate(users: int, items: int, categories: int, seed: int, median_events: int = 13, follow: float = 0.6,
             n_complements: int = 4, latents: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items) of one complement-chain log.

    ``latents``, when given, receives what generated it (complements, tastes, popularity): bench/oracle.py
    ranks by the true next-item probability with them. Passing it changes nothing in the log.
    """
    rng = np.random.default_rng(seed)
    C = categories
    cat_of = rng.integers(0, C, items)
    d = 8
    item_vec = rng.normal(size=(items, d)) / np.sqrt(d)
    pop = 1.0 / rng.permutation(np.arange(1, items + 1)) ** 0.8  # Zipf over the whole catalogue
    pop_p = pop / pop.sum()
    # complements: each item points at n_complements items of other categories, popular ones more often
    comp = np.zeros((items, n_complements), dtype=np.int64)
    for i in range(items):
        other = np.flatnonzero(cat_of != cat_of[i])
        w = pop[other] * np.exp(2.0 * item_vec[other] @ item_vec[i])  # complements share a style
        comp[i] = rng.choice(other, size=n_complements, replace=False, p=w / w.sum())
    comp_p = 1.0 / np.arange(1, n_complements + 1) ** 1.2
    comp_p /= comp_p.sum()
    by_cat = [np.flatnonzero(cat_of == c) for c in range(C)]
    n_events = np.clip(rng.lognormal(np.log(median_events), 0.5, users).astype(int), 3, 200)
    rows: list[tuple] = []
    tastes = np.zeros((users, d))
    for u in range(users):
        taste = tastes[u] = rng.normal(size=d)
        t = rng.uniform(0, 365 * DAY)
        hist = [int(rng.choice(items, p=pop_p))]
        while len(hist) < n_events[u]:
            r = rng.random()
            if r < follow:
                src = hist[-1] if rng.random() < 0.75 or len(hist) < 2 else hist[-2]
                nxt = int(comp[src, rng.choice(n_complements, p=comp_p)])
            elif r < follow + 0.25:
                idx = by_cat[int(cat_of[hist[rng.integers(len(hist))]])]
                s = np.log(pop[idx]) + 1.5 * item_vec[idx] @ taste
                p = np.exp(s - s.max())
                nxt = int(idx[rng.choice(len(idx), p=p / p.sum())])
            else:
                nxt = int(rng.choice(items, p=pop_p))
            if nxt in hist[-3:]:
                continue  # no immediate re-buys
            hist.append(nxt)
        for item in hist:
            rows.append((f"u{u}", f"i{item}", int(t), "purchase"))
            t += rng.exponential(5 * DAY)
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    if latents is not None:
        latents.update(cat_of=cat_of, item_vec=item_vec, pop=pop, comp=comp, comp_p=comp_p, taste=tastes, follow=follow)
    return inter, catalogue(rng, cat_of, set(inter["item_id"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--categories", type=int, default=12)
    ap.add_argument("--median-events", type=int, default=13)
    ap.add_argument("--follow", type=float, default=0.6, help="share of purchases that follow a complement")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    inter, items = generate(args.users, args.items, args.categories, args.seed, args.median_events, args.follow)
    write_log(
        Path(args.out), inter, items, "Complement-chain synthetic shop log",
        f"Made by `bench/chain_logs.py --users {args.users} --items {args.items} --categories {args.categories} "
        f"--median-events {args.median_events} --follow {args.follow} --seed {args.seed}` (item-level complements "
        "across categories, per-shopper taste, purchases only; see its docstring).",
    )


if __name__ == "__main__":
    main()
