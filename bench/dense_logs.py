"""Dense synthetic shop logs for the benchmarks: long histories with cross-category structure unlike
the demo store's.

The shared logs are sparse (1-14 events per shopper). These logs have a median of 50+ events per
shopper and three kinds of cross-category structure, each invisible to a single item pair:

* **multi-step category chains**: the next category depends on the last TWO categories (a second-order
  chain: after A then B comes C, after D then B comes E), so "B -> ?" alone is ambiguous;
* **category-level habits**: every shopper has a few home categories they keep coming back to, with
  their own item taste (a latent vector), so the category mix of a history predicts more than its
  last item does;
* **seasonal switches**: each category has a season (a phase over the year); its weight follows a
  cosine of the event's date, so the same history moves to other categories as the year turns.

Items have a title ("<style> <noun> <n>") and a brand attribute; popularity within a category is Zipf.

    .venv/bin/python bench/dense_logs.py --out /tmp/dense-a --seed 1
    .venv/bin/python bench/dense_logs.py --out /tmp/dense-b --seed 2 --users 1500 --categories 30

writes interactions.csv (user_id,item_id,timestamp,event) and items.csv (item_id,category,title,brand)
and a PROVENANCE.md saying how they were made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

NOUNS = ["tent", "boot", "stove", "mug", "lamp", "jacket", "kettle", "novel", "pan", "scarf", "drill", "plant",
         "chair", "watch", "glove", "tea", "puzzle", "brush", "towel", "candle", "bag", "sock", "rug", "knife",
         "bottle", "vase", "pen", "soap", "hat", "clock", "bowl", "helmet", "pillow", "camera", "speaker", "ball"]
STYLES = ["classic", "urban", "alpine", "studio", "coastal", "nordic", "pro", "vintage", "compact", "deluxe"]
YEAR = 365 * 24 * 3600


def generate(users: int, items: int, categories: int, seed: int, median_events: int = 60,
             latents: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items) of one dense log.

    ``latents``, when given, receives what generated it (the chain, habits, tastes, seasons): bench/oracle.py
    ranks by the true next-item probability with them. Passing it changes nothing in the log.
    """
    rng = np.random.default_rng(seed)
    C = categories
    cat_of = np.sort(rng.integers(0, C, items))
    d = 8
    item_vec = rng.normal(size=(items, d)) / np.sqrt(d)
    # Zipf popularity within each category
    pop = np.zeros(items)
    for c in range(C):
        idx = np.flatnonzero(cat_of == c)
        pop[idx] = 1.0 / np.arange(1, len(idx) + 1) ** 0.9
    # second-order category chain: P(next | prev2, prev1), sparse and peaked
    chain = rng.dirichlet(np.full(C, 0.08), size=(C, C))
    season_phase = rng.uniform(0, 2 * np.pi, C)
    inter_rows: list[tuple] = []
    n_events = np.clip(rng.lognormal(np.log(median_events), 0.6, users).astype(int), 20, 400)
    habits, tastes = np.zeros((users, C)), np.zeros((users, d))
    for u in range(users):
        home = rng.choice(C, size=rng.integers(3, 6), replace=False)
        habit = np.full(C, 0.02)
        habit[home] = rng.dirichlet(np.ones(len(home))) * 3
        habits[u] = habit
        taste = tastes[u] = rng.normal(size=d)
        t = rng.uniform(0, YEAR)
        prev2, prev1 = rng.choice(home, 2)
        seen: set[int] = set()
        for _ in range(n_events[u]):
            season = 1.0 + 0.8 * np.cos(2 * np.pi * (t % YEAR) / YEAR - season_phase)
            w = (0.55 * chain[prev2, prev1] + 0.45 * habit / habit.sum()) * season
            c = int(rng.choice(C, p=w / w.sum()))
            idx = np.flatnonzero(cat_of == c)
            s = np.log(pop[idx]) + 1.5 * item_vec[idx] @ taste
            s[[i for i, j in enumerate(idx) if int(j) in seen]] -= 3.0  # mostly new items
            p = np.exp(s - s.max())
            item = int(idx[rng.choice(len(idx), p=p / p.sum())])
            seen.add(item)
            r = rng.random()
            event = "purchase" if r < 0.1 else ("cart" if r < 0.3 else "view")
            inter_rows.append((f"u{u}", f"i{item}", int(t), event))
            prev2, prev1 = prev1, c
            t += rng.exponential(2 * 24 * 3600)
    inter = pd.DataFrame(inter_rows, columns=["user_id", "item_id", "timestamp", "event"])
    if latents is not None:
        latents.update(cat_of=cat_of, item_vec=item_vec, pop=pop, chain=chain, season_phase=season_phase, habit=habits,
                       taste=tastes)
    return inter, catalogue(rng, cat_of, set(inter["item_id"]))


def catalogue(rng: np.random.Generator, cat_of: np.ndarray, used: set) -> pd.DataFrame:
    """Return the items table (item_id "i<n>", category, title "<style> <noun> <n>", brand) of the items in ``used``."""
    C = int(cat_of.max()) + 1 if len(cat_of) else 0
    cat_names = [f"{NOUNS[c % len(NOUNS)].title()}s {c // len(NOUNS) + 1}" if c >= len(NOUNS) else f"{NOUNS[c].title()}s" for c in range(C)]
    items_df = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(len(cat_of))],
        "category": [cat_names[c] for c in cat_of],
        "title": [f"{STYLES[rng.integers(len(STYLES))]} {NOUNS[c % len(NOUNS)]} {i}" for i, c in enumerate(cat_of)],
        "brand": [f"brand{rng.integers(40)}" for _ in range(len(cat_of))],
    })
    return items_df[items_df["item_id"].isin(used)].reset_index(drop=True)


def write_log(out: Path, inter: pd.DataFrame, items: pd.DataFrame, heading: str, made_by: str) -> None:
    """Write interactions.csv, items.csv and a PROVENANCE.md (``heading``, ``made_by``, the log's shape) to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    inter.to_csv(out / "interactions.csv", index=False)
    items.to_csv(out / "items.csv", index=False)
    per_user = inter.groupby("user_id").size()
    (out / "PROVENANCE.md").write_text(
        f"# {heading}\n\n{made_by}\n\n"
        f"{len(inter):,} events, {inter['user_id'].nunique():,} users, {len(items):,} items, {items['category'].nunique()} categories; "
        f"events per user: median {int(per_user.median())}, min {per_user.min()}, max {per_user.max()}.\n"
    )
    print(f"wrote {len(inter):,} events ({int(per_user.median())} per user, median) to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--categories", type=int, default=20)
    ap.add_argument("--median-events", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    inter, items = generate(args.users, args.items, args.categories, args.seed, args.median_events)
    write_log(
        Path(args.out), inter, items, "Dense synthetic shop log",
        f"Made by `bench/dense_logs.py --users {args.users} --items {args.items} --categories {args.categories} "
        f"--median-events {args.median_events} --seed {args.seed}` (second-order category chains, per-shopper category "
        "habits, seasonal category weights; see its docstring).",
    )


if __name__ == "__main__":
    main()
