"""Scale benchmark: ingestion, one training epoch, recommending for 100k users and UMAP of 100k items.

    .venv/bin/python bench/scale.py [--sizes 1m,10m] [--stages generate,ingest,train,recommend,umap]

Each stage runs in its own child process (``python bench/scale.py --child STAGE --size S``) so its wall
time and peak memory (ru_maxrss of that process) are its own. Synthetic logs, seeded, written under
bench/out/scale/<size>/ (git-ignored):

* 1m: 1,000,000 events, 100,000 users, 50,000 items; 10m: 10,000,000 events, 1,000,000 users,
  500,000 items. Zipf(1.1) item popularity, 300 categories of Zipf-skewed size, users with a home
  category (70% of their events) and log-normal history lengths, synthetic titles, view/cart/purchase
  events, increasing timestamps per user.

Stages: ingest = load_log(CSV) + save_dataset (workspace under bench/out/scale/workspace); train =
train_model(epochs=1, text encoder off) + save_model (events/s from the epoch's own timer);
recommend = Recommender.recommend_batch top-10 for 100,000 users (history = whole log, seen excluded), with
shoppers/s, peak memory, the ratio to the FLOP floor (users x items x dim x 2 at 68 GFLOP/s per core, 2 cores)
and, untimed, the dense path's lists for the first 1,000 of them compared item for item;
umap = crossrec_core.serving.projection.project_items(method="umap") on 100,000 item vectors (the trained
model's when it has that many items, else seeded random 64-d vectors), with the numba compile of
UMAP's first fit timed separately on 2,000 points.
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "scale"
SIZES = {
    "1m": {"events": 1_000_000, "users": 100_000, "items": 50_000},
    "10m": {"events": 10_000_000, "users": 1_000_000, "items": 500_000},
}
STAGES = ("generate", "ingest", "train", "recommend", "umap")
N_CATEGORIES = 300
REC_USERS = 100_000
CHECK_USERS = 1_000  # of them, also ranked on the dense path (not timed): identical lists?
# The arithmetic floor of recommending: users x items x dim multiply-adds x 2 FLOP at this CPU's fp32
# matrix-product rate (measured ~68 GFLOP/s per core) on its 2 cores
FLOP_PER_CORE = 68e9
CORES = 2
UMAP_ITEMS = 100_000


# -- synthetic log ----------------------------------------------------------------------------------
def generate(size: str, seed: int = 0) -> dict:
    """Return counts after writing interactions.csv and items.csv for ``size`` (vectorised, seeded)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    n_ev, n_users, n_items = spec["events"], spec["users"], spec["items"]
    folder = OUT / size
    folder.mkdir(parents=True, exist_ok=True)
    # categories: Zipf-skewed sizes; items sorted by popularity rank are spread over categories
    cat_w = 1.0 / np.arange(1, N_CATEGORIES + 1) ** 0.8
    item_cat = rng.choice(N_CATEGORIES, size=n_items, p=cat_w / cat_w.sum())
    item_pop = 1.0 / np.arange(1, n_items + 1) ** 1.1  # item i has popularity rank i
    # per-category cumulative popularity for sampling inside a category
    order = np.argsort(item_cat, kind="stable")
    cat_start = np.searchsorted(item_cat[order], np.arange(N_CATEGORIES + 1))
    pop_sorted = item_pop[order]
    cum = np.cumsum(pop_sorted)
    cat_base = np.concatenate([[0.0], cum])[cat_start]  # cumulative mass before each category
    # history lengths: log-normal, rescaled to the event budget (at least 2 events per user)
    lens = np.maximum(2, rng.lognormal(mean=1.8, sigma=1.0, size=n_users)).astype(np.int64)
    lens = np.maximum(2, np.round(lens * (n_ev / lens.sum()))).astype(np.int64)
    diff = n_ev - int(lens.sum())
    lens[: abs(diff)] += np.sign(diff)
    lens = np.maximum(lens, 1)
    users = np.repeat(np.arange(n_users), lens)
    n = len(users)
    home = rng.choice(N_CATEGORIES, size=n_users, p=cat_w / cat_w.sum())
    in_home = rng.random(n) < 0.7
    ev_cat = np.where(in_home, home[users], rng.choice(N_CATEGORIES, size=n, p=cat_w / cat_w.sum()))
    # inverse-CDF sampling of an item inside the event's category, by popularity
    lo, hi = cat_base[ev_cat], cat_base[ev_cat + 1]
    empty = hi <= lo
    u = lo + rng.random(n) * (hi - lo)
    pos = np.clip(np.searchsorted(cum, u, side="right"), cat_start[ev_cat], np.maximum(cat_start[ev_cat + 1] - 1, 0))
    items = np.where(empty, rng.integers(0, n_items, n), order[pos])
    start = rng.integers(1_700_000_000, 1_707_776_000, size=n_users)
    gaps = rng.exponential(3600.0, size=n).astype(np.int64) + 1
    within = np.arange(n) - np.repeat(np.cumsum(lens) - lens, lens)
    cs = np.cumsum(gaps)
    first_cs = np.repeat(cs[np.cumsum(lens) - lens] - gaps[np.cumsum(lens) - lens], lens)
    ts = np.repeat(start, lens) + (cs - first_cs) * (within >= 0)
    event = rng.choice(np.array(["view", "cart", "purchase"]), size=n, p=[0.85, 0.1, 0.05])
    t0 = time.perf_counter()
    pacsv.write_csv(
        pa.table({
            "user_id": pa.array(np.char.add("u", users.astype(str))),
            "item_id": pa.array(np.char.add("i", items.astype(str))),
            "timestamp": pa.array(ts),
            "event": pa.array(event),
        }),
        folder / "interactions.csv",
    )
    nouns = np.array(["Kettle", "Jacket", "Tent", "Mug", "Charger", "Sneaker", "Lamp", "Backpack", "Blender", "Novel"])
    adjs = np.array(["Classic", "Compact", "Premium", "Eco", "Trail", "Urban", "Deluxe", "Mini"])
    ids = np.arange(n_items)
    titles = np.char.add(np.char.add(np.char.add(adjs[ids % len(adjs)], " "), nouns[(ids // 8) % len(nouns)]), np.char.add(" #", ids.astype(str)))
    pacsv.write_csv(
        pa.table({
            "item_id": pa.array(np.char.add("i", ids.astype(str))),
            "category": pa.array(np.char.add("Category ", item_cat.astype(str))),
            "title": pa.array(titles),
        }),
        folder / "items.csv",
    )
    return {"events": int(n), "users": n_users, "items": n_items, "write_s": time.perf_counter() - t0,
            "csv_mb": round((folder / "interactions.csv").stat().st_size / 2**20, 1)}


# -- stages (run in a child process) ----------------------------------------------------------------
def _ds_name(size: str) -> str:
    return f"scale-{size}"


def stage_ingest(size: str) -> dict:
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.datasets import save_dataset

    folder = OUT / size
    t0 = time.perf_counter()
    ds = load_log(folder / "interactions.csv", folder / "items.csv", name=_ds_name(size))
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    save_dataset(ds)
    return {"load_log_s": load_s, "save_s": time.perf_counter() - t1, "events": ds.n_events, "users": ds.n_users, "items": ds.n_items}


def stage_train(size: str) -> dict:
    import dataclasses

    from crossrec_core.config import ModelConfig
    from crossrec_core.storage.datasets import load_dataset
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    t0 = time.perf_counter()
    ds = load_dataset(_ds_name(size))
    load_s = time.perf_counter() - t0
    cfg = ModelConfig()
    cfg = dataclasses.replace(
        cfg,
        item=dataclasses.replace(cfg.item, use_text=False),
        train=dataclasses.replace(cfg.train, epochs=1),
    )
    progress_file = OUT / size / "train-progress.json"
    last = [0.0]

    def on_progress(p) -> None:  # the latest progress, every 10 s: lets a person watch an hours-long epoch
        if time.monotonic() - last[0] >= 10 or p.phase != "train":
            last[0] = time.monotonic()
            progress_file.write_text(json.dumps({**dataclasses.asdict(p), "rss_mb": _rss_mb()}, default=float), encoding="utf-8")

    t1 = time.perf_counter()
    model = train_model(ds, cfg, name=_ds_name(size), on_progress=on_progress)
    train_s = time.perf_counter() - t1
    hist = model.metrics.get("history", [{}])[0]
    save_model(model, OUT / size / "model")
    return {
        "load_dataset_s": load_s,
        "train_model_s": train_s,
        "epoch_train_s": hist.get("train_s"),
        "events_per_s": hist.get("events_per_s"),
        "valid_ndcg10": hist.get("ndcg10"),
        "loss": model.metrics.get("loss"),
    }


def _rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_recommend(size: str) -> dict:
    """Top-10 for REC_USERS users (timed), then the dense reference path on the first CHECK_USERS of them
    (not timed): how many lists are identical, item for item."""
    from crossrec_core.storage.datasets import load_dataset
    from crossrec_core.serving.recommender import Recommender
    from crossrec_core.storage.registry import load_model

    ds = load_dataset(_ds_name(size))
    model = load_model(OUT / size / "model")
    seqs = model.align(ds)
    users = np.random.default_rng(0).choice(ds.n_users, size=min(REC_USERS, ds.n_users), replace=False).astype(np.int64)
    users.sort()
    ends = ds.seqs.offsets[1:][users]
    load0 = os.getloadavg()
    rec = Recommender(model, ds)
    t0 = time.perf_counter()
    out = rec.recommend_batch(seqs, users, ends, 10)
    s = time.perf_counter() - t0
    load1 = os.getloadavg()
    peak = _rss_mb()
    d = int(model.config.dim)
    floor_s = len(users) * ds.n_items * d * 2 / (FLOP_PER_CORE * CORES)
    res = {"users": int(len(users)), "rows": int(len(out)), "recommend_s": s, "users_per_s": len(users) / s,
           "peak_rss_mb_recommend": peak, "flop_floor_s": floor_s, "x_floor": s / floor_s, "dim": d,
           "blocked": bool(ds.n_items >= rec.compact_min_items), "load_before": load0, "load_after": load1}
    n_check = min(CHECK_USERS, len(users))
    if n_check:
        ref = Recommender(model, ds)
        ref.compact_min_items = np.inf  # the dense path: today's lists
        t1 = time.perf_counter()
        want = ref.recommend_batch(seqs, users[:n_check], ends[:n_check], 10)
        got = out[out["user_idx"].isin(users[:n_check])]
        key = ["user_idx", "rank", "item_idx"]
        a = want[key].groupby("user_idx")["item_idx"].apply(tuple)
        b = got[key].groupby("user_idx")["item_idx"].apply(tuple).reindex(a.index)
        res.update({"checked_users": int(n_check), "identical_lists": int((a == b).sum()), "dense_check_s": time.perf_counter() - t1})
    return res


def stage_umap(size: str) -> dict:
    from crossrec_core.serving.projection import ProjectionConfig, project_items

    vecs = None
    model_dir = OUT / size / "model"
    if model_dir.is_dir():
        from crossrec_core.storage.registry import load_model

        iv = load_model(model_dir).item_vectors()
        if len(iv) >= UMAP_ITEMS:
            vecs, source = iv[:UMAP_ITEMS], "model item vectors"
    if vecs is None:
        vecs, source = np.random.default_rng(0).normal(size=(UMAP_ITEMS, 64)).astype(np.float32), "random 64-d"
    cfg = ProjectionConfig(method="umap")
    t0 = time.perf_counter()
    project_items(vecs[:2000] + 0.0, cfg, use_cache=False)  # first fit: numba compiles UMAP's kernels
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    proj = project_items(vecs, cfg, use_cache=False)
    return {"items": int(len(vecs)), "vectors": source, "first_fit_2k_s": compile_s, "umap_100k_s": time.perf_counter() - t1, "method": proj.method}


def run_child(stage: str, size: str) -> dict:
    os.environ.setdefault("CROSSREC_HOME", str(OUT / "workspace"))
    fn = {"generate": generate, "ingest": stage_ingest, "train": stage_train, "recommend": stage_recommend, "umap": stage_umap}[stage]
    t0 = time.perf_counter()
    res = fn(size)
    res["wall_s"] = time.perf_counter() - t0
    res["peak_rss_mb"] = _rss_mb()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="crossrec scale benchmark (1M / 10M events).")
    p.add_argument("--sizes", default="1m")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--timeout", type=int, default=3600, help="seconds per stage")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_child(args.child, args.size), default=float), flush=True)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    # earlier runs' rows stay (a 10M run takes hours): this run replaces only the (size, stage) it redoes
    store = OUT / "scale.json"
    kept = json.loads(store.read_text(encoding="utf-8")) if store.is_file() else []
    for size in args.sizes.split(","):
        for stage in args.stages.split(","):
            if stage == "generate" and (OUT / size / "interactions.csv").is_file() and (OUT / size / "items.csv").is_file():
                print(f"[{size}] generate: reusing {OUT / size}", flush=True)
                continue
            cmd = [sys.executable, __file__, "--child", stage, "--size", size]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=str(ROOT))
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                res = json.loads(line[7:]) if line else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
            except subprocess.TimeoutExpired:
                res = {"error": f"timed out after {args.timeout}s"}
            res["process_s"] = time.perf_counter() - t0
            results.append({"size": size, "stage": stage, **res})
            print(f"[{size}] {stage}: {json.dumps(res, default=float)}", flush=True)
            redone = {(r["size"], r["stage"]) for r in results}
            merged = [r for r in kept if (r.get("size"), r.get("stage")) not in redone] + results
            store.write_text(json.dumps(merged, indent=2, default=float), encoding="utf-8")
    lines = ["| size | stage | wall s | peak MB | detail |", "|---|---|---|---|---|"]
    for r in results:
        detail = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k not in ("size", "stage", "wall_s", "peak_rss_mb", "process_s")}
        wall = r.get("wall_s")
        lines.append(f"| {r['size']} | {r['stage']} | {wall:.1f} | {r.get('peak_rss_mb', float('nan')):.0f} | {detail} |" if wall is not None
                     else f"| {r['size']} | {r['stage']} | - | - | {detail} |")
    table = "\n".join(lines)
    cmd = "`.venv/bin/python bench/scale.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`"
    (OUT / "scale.md").write_text(f"Command: {cmd}\n\n{table}\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
