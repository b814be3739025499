"""Benchmark ingestion: load_log (read + validate + index) and profile_dataset on a large synthetic log.

Generates a CSV log with Zipf-skewed items (default 10M events, 1M users, 200k items, 500 categories) under
bench/out/ (git-ignored), then measures each phase in a child process and reports wall time and peak memory
(ru_maxrss of the child). Usage:

    .venv/bin/python bench/ingest.py                       # 10M events
    .venv/bin/python bench/ingest.py --events 1000000      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def generate(n_events: int, n_users: int, n_items: int, n_categories: int, seed: int = 0) -> tuple[Path, Path]:
    """Write interactions.csv and items.csv under bench/out/ (skipped when they already exist); return paths."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder = OUT / f"log_{n_events}_{n_users}_{n_items}_{n_categories}_{seed}"
    log_path, items_path = folder / "interactions.csv", folder / "items.csv"
    if log_path.exists() and items_path.exists():
        return log_path, items_path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Zipf-like item popularity: weight 1/rank^1.05 over a random rank order
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.05
    cdf = np.cumsum(weights[rng.permutation(n_items)])
    cdf /= cdf[-1]
    items = np.minimum(np.searchsorted(cdf, rng.random(n_events)), n_items - 1)
    # user activity is skewed too (lognormal), every user gets at least one event
    activity = rng.lognormal(0, 1.0, n_users)
    users = np.concatenate([np.arange(n_users), rng.choice(n_users, n_events - n_users, p=activity / activity.sum())])
    start = 1_700_000_000
    times = start + rng.integers(0, 90 * 86400, n_events)
    events = np.array(["view", "cart", "purchase"])[np.searchsorted([0.85, 0.95], rng.random(n_events))]
    table = pa.table(
        {
            "user_id": pa.array(np.char.add("u", users.astype(str))),
            "item_id": pa.array(np.char.add("sku", items.astype(str))),
            "timestamp": times,
            "event": events,
        }
    )
    pacsv.write_csv(table, log_path)
    nouns = np.array(["Tent", "Boots", "Stove", "Mug", "Kettle", "Lamp", "Chair", "Jacket", "Book", "Charger"])
    adjs = np.array(["Light", "Classic", "Compact", "Deluxe", "Waterproof", "Smart", "Vintage", "Travel"])
    ids = np.arange(n_items)
    titles = np.char.add(np.char.add(adjs[ids % len(adjs)], " "), np.char.add(nouns[ids // 7 % len(nouns)], " ")
                         )
    titles = np.char.add(titles, (ids % 97).astype(str))
    pacsv.write_csv(
        pa.table(
            {
                "item_id": pa.array(np.char.add("sku", ids.astype(str))),
                "category": pa.array(np.char.add("cat", rng.integers(0, n_categories, n_items).astype(str))),
                "title": pa.array(titles),
            }
        ),
        items_path,
    )
    return log_path, items_path


def child(log_path: str, items_path: str) -> None:
    """Run in a fresh process: time load_log and profile_dataset, print a JSON line with the numbers."""
    from crossrec_core.data.load import load_log
    from crossrec_core.data.profile import profile_dataset

    t0 = time.perf_counter()
    ds = load_log(log_path, items_path, name="bench")
    t1 = time.perf_counter()
    prof = profile_dataset(ds)
    t2 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024  # Linux: KB
    print(json.dumps({
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "load_s": t1 - t0, "profile_s": t2 - t1, "peak_mb": peak_mb, "n_events": ds.n_events,
        "n_users": ds.n_users, "n_items": ds.n_items, "n_categories": prof.n_categories,
        "duplicates": ds.report.counts.get("duplicate_events", 0),
    }))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=None, help="default: events / 10")
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--categories", type=int, default=500)
    ap.add_argument("--child", nargs=2, metavar=("LOG", "ITEMS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    users = args.users or max(args.events // 10, 1)
    t = time.perf_counter()
    log_path, items_path = generate(args.events, users, args.items, args.categories)
    gen_s = time.perf_counter() - t
    size_mb = log_path.stat().st_size / 2**20
    r = subprocess.run([sys.executable, __file__, "--child", str(log_path), str(items_path)],
                       capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return r.returncode
    m = json.loads(r.stdout.strip().splitlines()[-1])
    cmd = "python bench/ingest.py" + ("" if args.events == 10_000_000 else f" --events {args.events}")
    print(f"Command: `{cmd}` ({os.cpu_count()} CPU cores; log generated in {gen_s:.1f} s, {size_mb:,.0f} MB CSV)\n")
    load = os.getloadavg()[0]
    print("| events | users | items | categories | load_log (s) | profile_dataset (s) | total wall (s) | child CPU (s) | peak RSS (GB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {m['n_events']:,} | {m['n_users']:,} | {m['n_items']:,} | {m['n_categories']:,} | {m['load_s']:.1f} | "
          f"{m['profile_s']:.1f} | {m['load_s'] + m['profile_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_mb'] / 1024:.2f} |")
    print(f"\n(load average at the end: {load:.1f}; wall times grow when other processes share the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
