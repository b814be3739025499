"""Side-by-side benchmark: crossrec (its defaults) against the real RecBole SASRec and GRU4Rec, several seeds.

    .venv/bin/python bench/peers/compare.py [--datasets hm-fashion-oneday,/tmp/dense-a] [--seeds 42,43,44]

Runs with the APP venv. RecBole runs in its own venv (``bash bench/peers/setup_recbole.sh``) through
``bench/peers/run_recbole.py`` in a child process. For each log:

1. build the leave-last-out split (ds.leave_last_out()) and write it as RecBole atomic files
   (recbole_convert.py), so every method sees exactly the same train / valid / test events;
2. for every seed: crossrec (``train_model(ds)`` with its default config and ``train.seed`` = the seed,
   then ``Recommender.recommend_batch`` top-10, in a spawned child process), RecBole SASRec and GRU4Rec
   (model classes + yaml defaults, trained in the all-positions full-softmax form by default, see
   allpos.py, or RecBole's stock prefix-augmented form with ``--recbole-form stock``) until their own
   early stopping (patience 10, epoch cap 300), top-10 with seen items masked;
3. the crossrec baselines (popularity, item-kNN, category-transition: deterministic, once per log);
4. all top-10 lists are scored by crossrec's own evaluator on all / switch / novel users, and report.py
   writes mean +- std over seeds and paired-bootstrap intervals of crossrec minus the best peer.

Every (log, method, form, seed) run is cached under bench/out/peers/cache, keyed on the split's digest,
the settings and the code (crossrec_core's sources for crossrec; run_recbole.py + allpos.py for RecBole),
so a rerun trains only what changed (``--retrain`` ignores the cache).

Writes bench/out/peers.md and bench/out/peers.json (after every log) and prints the tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import inspect
import json
import multiprocessing as mp
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DATA = Path("/work/shared/data")
OUT = ROOT / "bench" / "out"
CACHE = OUT / "peers" / "cache"
PEER_PY = HERE / ".venv" / "bin" / "python"
DEMO = "demo-store"
RECBOLE_MODELS = ("SASRec", "GRU4Rec")
K = 10


# -- logs -----------------------------------------------------------------------------------------
def available_datasets() -> list[str]:
    """Return the dataset names: every folder of /work/shared/data with an interactions.csv, plus the demo store."""
    names = sorted(p.name for p in DATA.iterdir() if (p / "interactions.csv").is_file()) if DATA.is_dir() else []
    return names + [DEMO]


def log_folder(spec: str) -> Path | None:
    """Return the folder holding ``spec``'s interactions.csv (a shared-data name or a folder path), None for the demo store."""
    if spec == DEMO:
        return None
    if (DATA / spec / "interactions.csv").is_file():
        return DATA / spec
    path = Path(spec).expanduser()
    if (path / "interactions.csv").is_file():
        return path.resolve()
    raise SystemExit(f"unknown log {spec!r}: neither a name ({', '.join(available_datasets())}) nor a folder with interactions.csv")


def log_label(spec: str) -> str:
    """Return a short, file-name-safe label: the name, or a folder path's last part."""
    folder = log_folder(spec)
    name = DEMO if folder is None else (spec if spec == folder.name and folder.parent == DATA else folder.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def load_dataset(spec: str, max_events: int | None, seed: int = 0):
    """Return the InteractionDataset ``spec``, optionally reduced to a seeded sample of whole users."""
    from crossrec_core.data.dataset import from_frames
    from crossrec_core.data.demo_store import build_demo_dataset
    from crossrec_core.data.load import load_log

    folder = log_folder(spec)
    if folder is None:
        ds, _ = build_demo_dataset(seed=0)
    else:
        items = folder / "items.csv"
        ds = load_log(folder / "interactions.csv", items if items.is_file() else None, name=log_label(spec))
    if max_events is None or ds.n_events <= max_events:
        return ds
    # keep whole users (sequences intact) in a seeded random order until the event budget is used
    order = np.random.default_rng(seed).permutation(ds.n_users)
    keep = order[np.cumsum(ds.seqs.lengths[order]) <= max_events]
    inter = ds.interactions_frame()
    inter = inter[inter["user_id"].isin(set(ds.user_ids[keep]))].reset_index(drop=True)
    items = ds.items[ds.items["item_id"].isin(set(inter["item_id"]))].reset_index(drop=True)
    return from_frames(inter, items, name=ds.name, has_timestamps=ds.has_timestamps, event_weights=ds.event_weights)


# -- cache keys -----------------------------------------------------------------------------------
def _sha(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(hashlib.sha256(c).digest())
    return h.hexdigest()


def split_digest(ds, data_path: Path, rb_name: str) -> str:
    """Return a sha256 over the three atomic split files and the dataset crossrec trains on (events, items)."""
    files = [(data_path / rb_name / f"{rb_name}.{part}.inter").read_bytes() for part in ("train", "valid", "test")]
    items = pd.util.hash_pandas_object(ds.items.astype(str), index=False).to_numpy().tobytes()
    return _sha(*files, ds.seqs.offsets.tobytes(), ds.seqs.items.tobytes(), items)


def source_digest(paths: list[Path]) -> str:
    """Return a sha256 over the given .py files (sorted by path): a code change gives a new key."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    return _sha(*(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() for f in files))


def crossrec_code() -> str:
    """Return the digest of crossrec_core's sources (uncommitted edits included) and of the child that drives it."""
    child = (inspect.getsource(_crossrec_child) + inspect.getsource(load_dataset)).encode()
    return _sha(source_digest([ROOT / "crossrec_core"]).encode(), child)


def recbole_code() -> str:
    """Return the digest of the peer-side training code."""
    return source_digest([HERE / "run_recbole.py", HERE / "allpos.py"])


def git_commit() -> str:
    """Return the repository's HEAD commit (recorded next to results; the key uses source digests)."""
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return r.stdout.strip() or "unknown"


def cache_dir(label: str, method: str, form: str, seed: int, key: dict) -> Path:
    """Return the cache folder of one run: readable prefix + a hash of the whole key."""
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE / label / f"{method}-{form}-s{seed}-{h}"


def cached(folder: Path, key: dict) -> dict | None:
    """Return a finished run's result (with its top-K frame) stored in ``folder`` for exactly ``key``, or None."""
    stamp, res, topk = folder / "key.json", folder / "result.json", folder / "topk.csv"
    if not (stamp.is_file() and res.is_file() and topk.is_file()):
        return None
    if json.loads(stamp.read_text(encoding="utf-8")) != json.loads(json.dumps(key)):
        return None
    result = json.loads(res.read_text(encoding="utf-8"))
    result["topk"] = pd.read_csv(topk, dtype=np.int64)
    result["reused"] = True
    return result


def store(folder: Path, key: dict, result: dict, topk: pd.DataFrame) -> None:
    """Write a finished run: result.json, topk.csv (user_idx,rank,item_idx) and key.json last (marks it complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    topk.to_csv(folder / "topk.csv", index=False)
    (folder / "result.json").write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    (folder / "key.json").write_text(json.dumps(key, sort_keys=True), encoding="utf-8")


# -- crossrec, in a child process -------------------------------------------------------------------
def _crossrec_child(spec: str, max_events: int | None, epochs: int | None, seed: int, threads: int, home: str, changes: str = "") -> dict:
    os.environ["CROSSREC_HOME"] = home
    import dataclasses

    import torch

    from crossrec_core.config import changed_config
    from crossrec_core.serving.recommender import Recommender
    from crossrec_core.training.loop import train_model

    if threads > 0:
        torch.set_num_threads(threads)
    ds = load_dataset(spec, max_events)
    cfg = changed_config(changes)
    fixed = {"seed": seed, **({"epochs": epochs} if epochs is not None else {})}
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **fixed))
    valid_at: dict[int, tuple[float, float]] = {}

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    c0 = cpu()

    def on_progress(p) -> None:
        if p.phase == "valid" and p.valid_ndcg10 is not None:
            valid_at[(getattr(p, "run", ""), int(p.epoch))] = (float(p.elapsed_s), cpu() - c0)

    t0 = time.perf_counter()
    model = train_model(ds, cfg, on_progress=on_progress, name=f"bench-{log_label(spec)}-s{seed}")
    train_s, train_cpu_s = time.perf_counter() - t0, cpu() - c0
    best_epoch = int(model.metrics.get("best_epoch", -1))
    llo = ds.leave_last_out()
    t1 = time.perf_counter()
    seqs = model.align(ds)
    rec = Recommender(model, ds).recommend_batch(seqs, llo.test_users, llo.test_pos, K)
    recommend_s = time.perf_counter() - t1
    item_idx = ds.item_index(model.item_ids[rec["item_idx"].to_numpy()])
    history = model.metrics.get("history", [])
    # with the batch choice the two runs take turns, an epoch each (training/batch_race.py): the time to the shipped
    # run's best epoch includes the other run's epochs up to then. Every run reports under its label, a single one too.
    run = "length buckets" if model.config.train.length_buckets else "random batches"
    best_wall, best_cpu = valid_at.get((run, best_epoch), (float("nan"), float("nan")))
    return {
        "topk": {"user_idx": rec["user_idx"].to_numpy().astype(np.int64).tolist(), "rank": rec["rank"].to_numpy().astype(np.int64).tolist(),
                 "item_idx": item_idx.tolist()},
        "seed": seed,
        "train_seconds": train_s,
        "train_cpu_seconds": train_cpu_s,
        "torch_threads": torch.get_num_threads(),
        "time_to_best_seconds": best_wall,
        "cpu_to_best_seconds": best_cpu,
        "recommend_seconds": recommend_s,
        "best_epoch": best_epoch,
        "epochs_run": int(model.metrics.get("epochs_run", len(history))),  # both runs of the batch choice
        "epochs_cap": cfg.train.epochs,
        "patience": cfg.train.patience,
        "events_per_s": float(np.median([h["events_per_s"] for h in history] or [float("nan")])),
        "valid": model.metrics.get("valid", {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_avg": os.getloadavg()[1],
    }


def run_crossrec(spec: str, args: argparse.Namespace, seed: int, key: dict, folder: Path) -> dict:
    """Return crossrec's result (topk frame in ds indices), trained in a fresh spawned process, or from the cache."""
    if not args.retrain and (found := cached(folder, key)) is not None:
        return found
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        res = pool.submit(_crossrec_child, spec, args.max_events, args.epochs, seed, args.threads, str(OUT / "peers" / "workspace"),
                          args.crossrec_config).result()
    topk = pd.DataFrame(res.pop("topk"))
    res["git_commit"] = git_commit()
    store(folder, key, res, topk)
    res["topk"] = topk
    return res


# -- RecBole, in the peer venv ----------------------------------------------------------------------
def run_recbole(model: str, data_path: Path, rb_name: str, args: argparse.Namespace, seed: int, key: dict, folder: Path) -> dict:
    """Return run_recbole.py's result plus its top-K frame (tokens = crossrec user_idx / item_idx), or the cached one."""
    if not args.retrain and (found := cached(folder, key)) is not None:
        return found
    if not PEER_PY.is_file():
        raise SystemExit(f"{PEER_PY} is missing: run `bash bench/peers/setup_recbole.sh` first.")
    work = folder / "run"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(PEER_PY), str(HERE / "run_recbole.py"), "--data-path", str(data_path), "--dataset", rb_name, "--model", model,
        "--out", str(work), "--form", args.recbole_form, "--epochs", str(args.epochs or args.recbole_epochs),
        "--stopping-step", str(args.stopping_step), "--seed", str(seed), "--time-budget", str(args.recbole_time_budget),
        "--batch-size", str(args.recbole_batch), "--allpos-windows", args.allpos_windows, "--threads", str(args.threads), "--quiet",
    ]
    log_path = folder / "run.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"RecBole {model} failed (exit {proc.returncode}); see {log_path}")
    res = json.loads((work / f"{model}.json").read_text(encoding="utf-8"))
    topk = pd.read_csv(work / f"{model}.topk.csv", dtype=np.int64).rename(columns={"user_id": "user_idx", "item_id": "item_idx"})
    store(folder, key, res, topk)
    for f in (work / f"{model}.topk.csv", work / f"{model}.json"):
        f.unlink()
    res["topk"] = topk
    return res


# -- scoring --------------------------------------------------------------------------------------
def topk_matrix(user_idx: np.ndarray, rank: np.ndarray, item_idx: np.ndarray, users: np.ndarray, k: int = K) -> np.ndarray:
    """Return int64 (len(users), k) item_idx lists aligned to ``users`` (-1 where a list is short or missing)."""
    pos = pd.Index(users).get_indexer(user_idx)
    ok = (pos >= 0) & (rank >= 1) & (rank <= k)
    out = np.full((len(users), k), -1, dtype=np.int64)
    out[pos[ok], rank[ok] - 1] = item_idx[ok]
    return out


def score_lists(ds, topk_ds: np.ndarray) -> dict:
    """Return HR@10, NDCG@10 on all / switch / novel users and catalogue coverage, via crossrec's evaluator.

    ``_per_user`` (per-user NDCG and the subset masks) is kept for the paired comparisons and dropped from the JSON.
    """
    from crossrec_core.evaluation import metrics as M
    from crossrec_core.evaluation.evaluator import per_user_scores, split_targets, training_sequences

    targets = split_targets(ds, "test")
    popularity = np.bincount(training_sequences(ds, "test").items, minlength=ds.n_items).astype(np.float64)
    per_user = per_user_scores(topk_ds, targets, ds, K, popularity=popularity)
    out = {}
    for subset in ("all", "switch", "novel"):
        mask = targets.mask(subset)
        out[f"{subset}_n"] = int(mask.sum())
        out[f"{subset}_HR@10"] = float(per_user["HR"][mask].mean()) if mask.any() else float("nan")
        out[f"{subset}_NDCG@10"] = float(per_user["NDCG"][mask].mean()) if mask.any() else float("nan")
    out["coverage"] = float(M.catalogue_coverage(topk_ds, ds.n_items))
    out["cross_share"] = float(np.nanmean(per_user["cross_share"]))
    out["_per_user"] = {"NDCG": per_user["NDCG"], **{f"mask_{s}": targets.mask(s) for s in ("all", "switch", "novel")}}
    return out


def run_baselines(ds, test_users: np.ndarray) -> list[dict]:
    """Return one row per crossrec baseline (popularity, item-kNN, category-transition), fitted on the
    training part of the same split (everything before each test target), scored like the other methods."""
    from crossrec_core.evaluation.baselines import default_baselines
    from crossrec_core.evaluation.evaluator import rank_all, ranker_space, split_targets, training_sequences

    targets = split_targets(ds, "test")
    train_seqs = training_sequences(ds, "test")
    pos = pd.Index(test_users).get_indexer(targets.users)
    rows = []
    for name, ranker in default_baselines().items():
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        ranker.fit(ds, train_seqs)
        fit_s = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        space = ranker_space(ranker, ds, targets.users, targets.ends, targets.targets)
        topk = rank_all(ranker, space, targets.users, K)
        topk_ds = np.full((len(test_users), K), -1, dtype=np.int64)
        topk_ds[pos] = np.where(topk >= 0, space.to_ds[np.maximum(topk, 0)], -1)
        rows.append({
            "method": name, "form": "-", "seed": None, **score_lists(ds, topk_ds), "train_seconds": fit_s,
            "train_cpu_seconds": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
        })
    return rows


def run_dataset(spec: str, args: argparse.Namespace) -> tuple[str, dict]:
    """Return (markdown section, JSON record) for one log."""
    from recbole_convert import write_atomic_split
    from report import markdown_section, summarise

    label = log_label(spec)
    ds = load_dataset(spec, args.max_events)
    work = OUT / "peers" / label
    split = write_atomic_split(ds, work / "data", "bench")
    digest = split_digest(ds, work / "data", "bench")
    print(f"[{label}] {ds.n_users} users, {ds.n_items} items, {ds.n_events} events; atomic rows {split.n_rows}; split {digest[:12]}", flush=True)
    test_users = ds.leave_last_out().test_users.astype(np.int64)
    base = {"log": str(log_folder(spec) or DEMO), "split_sha256": digest, "max_events": args.max_events}
    runs: list[dict] = []
    for seed in args.seeds:
        jobs = []
        if "crossrec" in args.methods:
            key = {**base, "method": "crossrec", "form": "-", "seed": seed, "epochs": args.epochs, "threads": args.threads, "code": crossrec_code(),
                   **({"config": args.crossrec_config} if args.crossrec_config else {})}
            jobs.append(("crossrec", "-", key, lambda key=key, seed=seed: run_crossrec(spec, args, seed, key, cache_dir(label, "crossrec", "-", seed, key))))
        for model in RECBOLE_MODELS:
            if model not in args.methods:
                continue
            key = {**base, "method": model, "form": args.recbole_form, "seed": seed, "epochs": args.epochs or args.recbole_epochs,
                   "stopping_step": args.stopping_step, "time_budget": args.recbole_time_budget, "threads": args.threads,
                   "batch": args.recbole_batch if args.recbole_form == "allpos" else None,
                   "windows": args.allpos_windows if args.recbole_form == "allpos" else None, "code": recbole_code()}
            folder = cache_dir(label, model, args.recbole_form, seed, key)
            jobs.append((f"RecBole-{model}", args.recbole_form, key,
                         lambda model=model, key=key, folder=folder, seed=seed: run_recbole(model, work / "data", "bench", args, seed, key, folder)))
        for method, form, key, job in jobs:
            t = time.perf_counter()
            try:
                res = job()
                f = res.pop("topk")
                if method != "crossrec" and isinstance(res.get("best_epoch"), int) and res["best_epoch"] >= 0:
                    res["best_epoch"] += 1  # RecBole / allpos count epochs from 0, crossrec from 1: the tables count from 1
                topk = topk_matrix(f["user_idx"].to_numpy(), f["rank"].to_numpy(), f["item_idx"].to_numpy(), test_users)
                runs.append({"method": method, "form": form, "seed": seed, **score_lists(ds, topk),
                             **{k: v for k, v in res.items() if k not in ("epoch_log", "form", "seed")}})
            except Exception as err:  # a failing run is reported, the others still run
                runs.append({"method": method, "form": form, "seed": seed, "error": f"{type(err).__name__}: {err}"[:300]})
            r = runs[-1]
            state = "failed: " + r["error"] if "error" in r else (
                f"{'reused' if r.get('reused') else f'{time.perf_counter() - t:.0f}s'}, NDCG@10 {r['all_NDCG@10']:.4f}, "
                f"epochs {r.get('epochs_run')} (best {r.get('best_epoch')})")
            print(f"[{label}] seed {seed} {method} ({form}): {state}", flush=True)
    if "baselines" in args.methods:
        runs.extend(run_baselines(ds, test_users))
    facts = {"n_users": ds.n_users, "n_items": ds.n_items, "n_events": ds.n_events, "max_events": args.max_events,
             "seeds": args.seeds, "recbole_form": args.recbole_form, "epochs": args.epochs, "recbole_epochs": args.recbole_epochs,
             "stopping_step": args.stopping_step, "recbole_batch": args.recbole_batch, "allpos_windows": args.allpos_windows,
             "threads": args.threads}
    summary = summarise(runs)
    record = {"log": label, "source": base["log"], **facts, "summary": summary,
              "runs": [{k: v for k, v in r.items() if k != "_per_user"} for r in runs]}
    return markdown_section(label, facts, summary), record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="crossrec vs RecBole SASRec / GRU4Rec on the same leave-last-out split, several seeds.")
    p.add_argument("--datasets", default=",".join(available_datasets()),
                   help="comma-separated shared-data names, demo-store, or folders with interactions.csv (+ items.csv)")
    p.add_argument("--methods", default="crossrec,SASRec,GRU4Rec,baselines",
                   help="comma-separated: crossrec, SASRec, GRU4Rec, baselines (popularity, item-kNN, category-transition)")
    p.add_argument("--seeds", default="42,43,44", help="comma-separated seeds; every method runs once per seed on the same split")
    p.add_argument("--recbole-form", choices=("allpos", "stock"), default="allpos",
                   help="allpos: all positions of the latest 50-event window predict their next item, full softmax "
                        "(SASRec+ / gSASRec form, default); stock: RecBole's own prefix-augmented training")
    p.add_argument("--quick", action="store_true", help="sample users down to --max-events (default 15000) and cap epochs at 5 for every method")
    p.add_argument("--max-events", type=int, default=None, help="seeded sample of whole users up to this many events")
    p.add_argument("--epochs", type=int, default=None, help="epoch cap for EVERY method (smoke runs; default: crossrec's own, RecBole --recbole-epochs)")
    p.add_argument("--recbole-epochs", type=int, default=300, help="RecBole epoch cap (its own default, 300); early stopping ends it sooner")
    p.add_argument("--stopping-step", type=int, default=10, help="RecBole early-stopping patience (its default)")
    p.add_argument("--recbole-batch", type=int, default=128, help="allpos form: user sequences per optimiser step")
    p.add_argument("--allpos-windows", choices=("last", "all"), default="all",
                   help="allpos form: each user's latest 51 train events (last, as SASRec+ / gSASRec) or all train events cut into 51-event windows")
    p.add_argument("--recbole-time-budget", type=float, default=0.0, metavar="S",
                   help="stop each RecBole run after the first epoch that ends past S seconds of training, keeping its best epoch (0 = none)")
    p.add_argument("--crossrec-config", default="", metavar="CHANGES",
                   help='crossrec trained with these changes to the defaults ("section.field:value,...", e.g. "train.patience:5"); '
                        'cached apart from the defaults\' runs, which stay the ones the tables compare unless this is given')
    p.add_argument("--threads", type=int, default=0, help="torch threads for every method (0 = torch's default)")
    p.add_argument("--retrain", action="store_true", help="ignore the cache and train every run again")
    p.add_argument("--reuse-recbole", action="store_true", help=argparse.SUPPRESS)  # old flag: caching is now always on
    p.add_argument("--out", default=str(OUT / "peers.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.max_events = args.max_events or 15000
        args.epochs = args.epochs or 5
    args.methods = set(args.methods.split(","))
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    os.environ.setdefault("CROSSREC_HOME", str(OUT / "peers" / "workspace"))
    specs = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for spec in specs:
        log_folder(spec)  # fail early on an unknown log
    from report import page_header

    sections, records = [], []
    cmd = ".venv/bin/python bench/peers/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out_md = Path(args.out)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        md, rec = run_dataset(spec, args)
        print(md, flush=True)
        sections.append(md)
        records.append(rec)
        # written after every log so a long run leaves partial results behind
        out_md.write_text(page_header(cmd, args) + "\n".join(sections), encoding="utf-8")
        out_md.with_suffix(".json").write_text(json.dumps({"command": cmd, "logs": records}, indent=2, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
