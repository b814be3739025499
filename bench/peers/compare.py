"""Side-by-side benchmark: crossrec (its defaults) against the real RecBole SASRec and GRU4Rec.

    .venv/bin/python bench/peers/compare.py [--datasets hm-fashion-oneday,demo-store] [--quick]

Runs with the APP venv. RecBole runs in its own venv (bench/setup: ``bash bench/peers/setup_recbole.sh``)
through ``bench/peers/run_recbole.py`` in a child process. For each dataset:

1. build the leave-last-out split (ds.leave_last_out()) and write it as RecBole atomic files
   (recbole_convert.py), so all three methods see exactly the same train / valid / test events;
2. crossrec: train_model(ds) with its default config, then Recommender.recommend_batch top-10 for
   every test user with history = everything before the test target (seen items excluded), in a
   child process (its own ru_maxrss);
3. RecBole SASRec and GRU4Rec: same split, their model defaults, epoch cap + early stopping on the
   same valid targets (NDCG@10), top-10 with seen items masked;
4. all top-10 lists are scored by crossrec's own evaluator functions (evaluate.split_targets /
   per_user_scores / metrics.catalogue_coverage) on all / switch / novel users.

Writes bench/out/peers.md and bench/out/peers.json and prints the tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
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
PEER_PY = HERE / ".venv" / "bin" / "python"
DEMO = "demo-store"
RECBOLE_MODELS = ("SASRec", "GRU4Rec")
K = 10


def available_datasets() -> list[str]:
    """Return the dataset names: every folder of /work/shared/data with an interactions.csv, plus the demo store."""
    names = sorted(p.name for p in DATA.iterdir() if (p / "interactions.csv").is_file()) if DATA.is_dir() else []
    return names + [DEMO]


def load_dataset(name: str, max_events: int | None, seed: int = 0):
    """Return the InteractionDataset ``name``, optionally reduced to a seeded sample of whole users."""
    from crossrec_core.data.dataset import from_frames
    from crossrec_core.data.load import load_log

    if name == DEMO:
        from crossrec_core.data.demo_store import build_demo_dataset

        ds, _ = build_demo_dataset(seed=0)
    else:
        folder = DATA / name
        items = folder / "items.csv"
        ds = load_log(folder / "interactions.csv", items if items.is_file() else None, name=name)
    if max_events is None or ds.n_events <= max_events:
        return ds
    # keep whole users (sequences intact) in a seeded random order until the event budget is used
    order = np.random.default_rng(seed).permutation(ds.n_users)
    keep = order[np.cumsum(ds.seqs.lengths[order]) <= max_events]
    inter = ds.interactions_frame()
    inter = inter[inter["user_id"].isin(set(ds.user_ids[keep]))].reset_index(drop=True)
    items = ds.items[ds.items["item_id"].isin(set(inter["item_id"]))].reset_index(drop=True)
    return from_frames(inter, items, name=ds.name, has_timestamps=ds.has_timestamps, event_weights=ds.event_weights)


# -- crossrec, in a child process -------------------------------------------------------------------
def _crossrec_child(name: str, max_events: int | None, epochs: int | None, home: str) -> dict:
    os.environ["CROSSREC_HOME"] = home
    import dataclasses

    import torch

    from crossrec_core.config import ModelConfig
    from crossrec_core.serving.recommender import Recommender
    from crossrec_core.training.loop import train_model

    ds = load_dataset(name, max_events)
    cfg = ModelConfig()
    if epochs is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
    valid_times: dict[int, float] = {}

    def on_progress(p) -> None:
        if p.phase == "valid" and p.valid_ndcg10 is not None:
            valid_times[int(p.epoch)] = float(p.elapsed_s)

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    model = train_model(ds, cfg, on_progress=on_progress, name=f"bench-{name}")
    train_s = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    train_cpu_s = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    best_epoch = int(model.metrics.get("best_epoch", -1))
    llo = ds.leave_last_out()
    t1 = time.perf_counter()
    seqs = model.align(ds)
    rec = Recommender(model, ds).recommend_batch(seqs, llo.test_users, llo.test_pos, K)
    recommend_s = time.perf_counter() - t1
    item_idx = ds.item_index(model.item_ids[rec["item_idx"].to_numpy()])
    return {
        "user_idx": rec["user_idx"].to_numpy().astype(np.int64).tolist(),
        "rank": rec["rank"].to_numpy().astype(np.int64).tolist(),
        "item_idx": item_idx.tolist(),
        "train_seconds": train_s,
        "train_cpu_seconds": train_cpu_s,
        "torch_threads": torch.get_num_threads(),
        "time_to_best_seconds": valid_times.get(best_epoch, float("nan")),
        "recommend_seconds": recommend_s,
        "best_epoch": best_epoch,
        "epochs_run": len(model.metrics.get("history", [])),
        "events_per_s": float(np.median([h["events_per_s"] for h in model.metrics.get("history", [])] or [float("nan")])),
        "valid": model.metrics.get("valid", {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_crossrec(name: str, max_events: int | None, epochs: int | None, home: Path) -> dict:
    """Return crossrec's top-K rows and timings, computed in a fresh spawned process."""
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_crossrec_child, name, max_events, epochs, str(home)).result()


# -- RecBole, in the peer venv ----------------------------------------------------------------------
def split_digest(data_path: Path, rb_name: str) -> str:
    """Return a sha256 over the three atomic split files: RecBole results are reused only for the same split."""
    import hashlib

    h = hashlib.sha256()
    for part in ("train", "valid", "test"):
        h.update((data_path / rb_name / f"{rb_name}.{part}.inter").read_bytes())
    return h.hexdigest()


def reusable_recbole(model: str, data_path: Path, rb_name: str, out: Path, epochs: int, stopping_step: int, time_budget: float) -> dict | None:
    """Return a finished RecBole result for exactly this split and settings, or None (then it must run)."""
    stamp = out / f"{model}.split.json"
    if not (stamp.is_file() and (out / f"{model}.json").is_file() and (out / f"{model}.topk.csv").is_file()):
        return None
    have = json.loads(stamp.read_text(encoding="utf-8"))
    same = {"split_sha256": split_digest(data_path, rb_name), "epochs": epochs, "stopping_step": stopping_step}
    if any(have.get(k) != v for k, v in same.items()):
        return None
    result = json.loads((out / f"{model}.json").read_text(encoding="utf-8"))
    # a run that stopped by itself within the budget is the run this budget would give
    finished_alone = result.get("stopped_by", "early stopping") != "time budget" and (
        not time_budget or result.get("train_seconds", float("inf")) <= time_budget
    )
    if have.get("time_budget", 0.0) != time_budget and not finished_alone:
        return None
    result["topk"] = pd.read_csv(out / f"{model}.topk.csv", dtype=np.int64)
    result["reused"] = True
    return result


def run_recbole(model: str, data_path: Path, rb_name: str, out: Path, epochs: int, stopping_step: int, reuse: bool = False,
                time_budget: float = 0.0) -> dict:
    """Return run_recbole.py's JSON result plus its top-K frame (tokens = crossrec user_idx / item_idx).

    With ``reuse``, a result that an earlier run left for the same split files and settings is read back
    instead of training again (RecBole is the slow part of this benchmark; crossrec always retrains).
    """
    if reuse:
        found = reusable_recbole(model, data_path, rb_name, out, epochs, stopping_step, time_budget)
        if found is not None:
            return found
    if not PEER_PY.is_file():
        raise SystemExit(f"{PEER_PY} is missing: run `bash bench/peers/setup_recbole.sh` first.")
    cmd = [
        str(PEER_PY), str(HERE / "run_recbole.py"), "--data-path", str(data_path), "--dataset", rb_name,
        "--model", model, "--out", str(out), "--epochs", str(epochs), "--stopping-step", str(stopping_step), "--quiet",
        "--time-budget", str(time_budget),
    ]
    log_path = out / f"{model}.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"RecBole {model} failed (exit {proc.returncode}); see {log_path}")
    result = json.loads((out / f"{model}.json").read_text(encoding="utf-8"))
    result["topk"] = pd.read_csv(out / f"{model}.topk.csv", dtype=np.int64)
    stamp = {"split_sha256": split_digest(data_path, rb_name), "epochs": epochs, "stopping_step": stopping_step, "time_budget": time_budget}
    (out / f"{model}.split.json").write_text(json.dumps(stamp), encoding="utf-8")
    return result


# -- scoring --------------------------------------------------------------------------------------
def topk_matrix(user_idx: np.ndarray, rank: np.ndarray, item_idx: np.ndarray, users: np.ndarray, k: int = K) -> np.ndarray:
    """Return int64 (len(users), k) item_idx lists aligned to ``users`` (-1 where a list is short or missing)."""
    pos = pd.Index(users).get_indexer(user_idx)
    ok = (pos >= 0) & (rank >= 1) & (rank <= k)
    out = np.full((len(users), k), -1, dtype=np.int64)
    out[pos[ok], rank[ok] - 1] = item_idx[ok]
    return out


def score_lists(ds, topk_ds: np.ndarray) -> dict[str, float]:
    """Return HR@10, NDCG@10 on all / switch / novel users and catalogue coverage, via crossrec's evaluator."""
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
    # kept for paired comparisons between methods (dropped before the JSON is written)
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
        t1 = time.perf_counter()
        space = ranker_space(ranker, ds, targets.users, targets.ends, targets.targets)
        topk = rank_all(ranker, space, targets.users, K)
        rec_s = time.perf_counter() - t1
        topk_ds = np.full((len(test_users), K), -1, dtype=np.int64)
        topk_ds[pos] = np.where(topk >= 0, space.to_ds[np.maximum(topk, 0)], -1)
        rows.append({
            "method": name, **score_lists(ds, topk_ds), "train_seconds": fit_s,
            "train_cpu_seconds": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "time_to_best_seconds": float("nan"), "recommend_seconds": rec_s, "peak_rss_mb": float("nan"),
            "epochs_run": "-", "best_epoch": "-", "load_avg": os.getloadavg()[1],
        })
    return rows


def paired_lines(rows: list[dict], reference: str = "crossrec") -> list[str]:
    """Return lines 'crossrec - X: NDCG@10 all +d [lo, hi] ...' with paired-bootstrap 95% intervals."""
    from crossrec_core.evaluation.metrics import paired_bootstrap

    by = {r["method"]: r for r in rows if "error" not in r and "_per_user" in r}
    if reference not in by:
        return []
    ref = by[reference]["_per_user"]
    lines = []
    for name, r in by.items():
        if name == reference:
            continue
        parts = []
        for subset in ("all", "switch", "novel"):
            mask = ref[f"mask_{subset}"]
            if not mask.any():
                continue
            d = paired_bootstrap(ref["NDCG"][mask], r["_per_user"]["NDCG"][mask])
            parts.append(f"{subset} {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]{'' if d.significant else ' (within noise)'}")
        lines.append(f"- {reference} - {name}, NDCG@10: " + "; ".join(parts))
    return lines


def _stop_note(r: dict) -> str:
    """Return ', time budget, still improving' style notes for a RecBole row that did not stop by itself."""
    if r.get("stopped_by") in (None, "early stopping"):
        return ""
    return f", {r['stopped_by']}" + (", still improving" if r.get("still_improving") else "")


def markdown_table(name: str, ds, rows: list[dict], note: str) -> str:
    """Return one dataset's markdown section: the table and the crossrec / RecBole-SASRec ratios."""
    head = ("| method | HR@10 | NDCG@10 | switch-HR@10 | switch-NDCG@10 | novel-HR@10 | novel-NDCG@10 | coverage | train s | "
            "train CPU s | time to best s | recommend s | peak MB | epochs (best) | load avg |")
    lines = [f"### {name}", "", note, "", head, "|" + "---|" * 15]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |" + " |" * 13)
            continue
        method = r["method"] + (" (reused)" if r.get("reused") else "")
        lines.append(
            f"| {method} | {r['all_HR@10']:.4f} | {r['all_NDCG@10']:.4f} | {r['switch_HR@10']:.4f} | {r['switch_NDCG@10']:.4f} | "
            f"{r['novel_HR@10']:.4f} | {r['novel_NDCG@10']:.4f} | {r['coverage']:.3f} | {r['train_seconds']:.1f} | {r.get('train_cpu_seconds', float('nan')):.1f} | "
            f"{r['time_to_best_seconds']:.1f} | {r['recommend_seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['epochs_run']} ({r['best_epoch']}){_stop_note(r)} | "
            f"{r.get('load_avg', float('nan')):.1f} |"
        )
    by = {r["method"]: r for r in rows if "error" not in r}
    if "crossrec" in by and "RecBole-SASRec" in by:
        c, s = by["crossrec"], by["RecBole-SASRec"]
        nd = c["all_NDCG@10"] / s["all_NDCG@10"] if s["all_NDCG@10"] > 0 else float("inf")
        tr = c["train_seconds"] / s["train_seconds"] if s["train_seconds"] > 0 else float("nan")
        cpu = c.get("train_cpu_seconds", float("nan")) / s.get("train_cpu_seconds", float("nan")) if s.get("train_cpu_seconds") else float("nan")
        nov = c["novel_NDCG@10"] / s["novel_NDCG@10"] if s["novel_NDCG@10"] > 0 else float("inf")
        verdict = []
        verdict.append("NDCG target met" if nd >= 1 else "NDCG target MISSED")
        if c["novel_n"] > 0:
            verdict.append("novel target met" if c["novel_NDCG@10"] > s["novel_NDCG@10"] else "novel target MISSED")
        if s.get("stopped_by") == "time budget" and tr > 1 / 3:
            verdict.append("time target not measurable: RecBole-SASRec was stopped by the time budget")
        else:
            verdict.append("time target met" if tr <= 1 / 3 else "time target MISSED")
        ratio = (f"crossrec / RecBole-SASRec: NDCG@10 x{nd:.2f}, novel-NDCG@10 x{nov:.2f}, training wall time x{tr:.2f}, "
                 f"training CPU time x{cpu:.2f} ({'; '.join(verdict)})")
        lines += ["", ratio]
    if "crossrec" in by and "events_per_s" in by["crossrec"]:
        lines += ["", f"crossrec trained on {by['crossrec']['events_per_s']:,.0f} target events/s per epoch (median over epochs)."]
    paired = paired_lines(rows)
    if paired:
        lines += ["", "Paired bootstrap (2,000 resamples of users), 95% interval of the NDCG@10 difference:"] + paired
    first = rows[0] if rows and "error" not in rows[0] else {}
    if first:
        lines += [f"users evaluated: all {first['all_n']}, switch {first['switch_n']}, novel {first['novel_n']}"]
    return "\n".join(lines) + "\n"


def run_dataset(name: str, args: argparse.Namespace) -> tuple[str, dict]:
    """Return (markdown section, JSON record) for one dataset."""
    from recbole_convert import write_atomic_split

    ds = load_dataset(name, args.max_events)
    work = OUT / "peers" / name
    split = write_atomic_split(ds, work / "data", "bench")
    print(f"[{name}] {ds.n_users} users, {ds.n_items} items, {ds.n_events} events; atomic rows {split.n_rows}", flush=True)
    rows: list[dict] = []
    llo = ds.leave_last_out()
    test_users = llo.test_users.astype(np.int64)
    if "crossrec" in args.methods:
        t = time.perf_counter()
        try:
            cr = run_crossrec(name, args.max_events, args.epochs, OUT / "peers" / "workspace")
            topk = topk_matrix(np.array(cr["user_idx"]), np.array(cr["rank"]), np.array(cr["item_idx"]), test_users)
            rows.append({"method": "crossrec", **score_lists(ds, topk), **{k: v for k, v in cr.items() if k not in ("user_idx", "rank", "item_idx")},
                         "load_avg": os.getloadavg()[1]})
        except Exception as err:  # a failing method is reported in the table, the others still run
            rows.append({"method": "crossrec", "error": f"{type(err).__name__}: {err}"[:200]})
        print(f"[{name}] crossrec done in {time.perf_counter() - t:.0f}s", flush=True)
    for model in RECBOLE_MODELS:
        if model not in args.methods:
            continue
        t = time.perf_counter()
        try:
            rb = run_recbole(model, work / "data", "bench", work / model, args.epochs or args.recbole_epochs, args.stopping_step,
                             reuse=args.reuse_recbole, time_budget=args.recbole_time_budget)
            f = rb.pop("topk")
            topk = topk_matrix(f["user_id"].to_numpy(), f["rank"].to_numpy(), f["item_id"].to_numpy(), test_users)
            rows.append({"method": f"RecBole-{model}", **score_lists(ds, topk), **{k: v for k, v in rb.items() if k != "epoch_log"},
                         "load_avg": rb.get("load_avg", float("nan") if rb.get("reused") else os.getloadavg()[1])})
        except Exception as err:
            rows.append({"method": f"RecBole-{model}", "error": f"{type(err).__name__}: {err}"[:200]})
        print(f"[{name}] RecBole {model} done in {time.perf_counter() - t:.0f}s", flush=True)
    if "baselines" in args.methods:
        rows.extend(run_baselines(ds, test_users))
    note = (
        f"{ds.n_users:,} users, {ds.n_items:,} items, {ds.n_events:,} events"
        + (f" (seeded sample of whole users, at most {args.max_events:,} events)" if args.max_events else "")
        + f"; epoch cap {args.epochs or 'crossrec default'} (crossrec) / {args.epochs or args.recbole_epochs} (RecBole), "
        f"RecBole stopping_step {args.stopping_step}. Times are wall seconds on this machine (2 cores); "
        "train CPU s is user + system CPU time of the training (steadier than wall time when other work shares "
        "the cores); load avg is the 5-minute load average when the method finished; (reused) marks a RecBole "
        "result read back from an earlier run on the identical split files (--reuse-recbole)."
    )
    clean = [{k: v for k, v in r.items() if k != "_per_user"} for r in rows]
    return markdown_table(name, ds, rows, note), {"dataset": name, "n_users": ds.n_users, "n_items": ds.n_items, "n_events": ds.n_events, "rows": clean}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="crossrec vs RecBole SASRec / GRU4Rec on the same leave-last-out split.")
    p.add_argument("--datasets", default=",".join(available_datasets()), help="comma-separated names (default: all + demo-store)")
    p.add_argument("--methods", default="crossrec,SASRec,GRU4Rec,baselines",
                   help="comma-separated: crossrec, SASRec, GRU4Rec, baselines (popularity, item-kNN, category-transition)")
    p.add_argument("--quick", action="store_true", help="sample users down to --max-events (default 15000) and cap epochs at 5 for every method")
    p.add_argument("--max-events", type=int, default=None, help="seeded sample of whole users up to this many events")
    p.add_argument("--epochs", type=int, default=None, help="epoch cap for every method (default: crossrec's own, RecBole --recbole-epochs)")
    p.add_argument("--recbole-epochs", type=int, default=30, help="RecBole epoch cap when --epochs is not given (its own default is 300)")
    p.add_argument("--stopping-step", type=int, default=10, help="RecBole early-stopping patience (its default)")
    p.add_argument("--recbole-time-budget", type=float, default=0.0, metavar="S",
                   help="stop each RecBole model after the first epoch that ends past S seconds of training, keeping its "
                        "best epoch (0 = none; on CPU RecBole's SASRec needs minutes per epoch on 100k-event logs)")
    p.add_argument("--reuse-recbole", action="store_true",
                   help="read back RecBole results an earlier run left for the same split and settings (crossrec still retrains)")
    p.add_argument("--out", default=str(OUT / "peers.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.max_events = args.max_events or 15000
        args.epochs = args.epochs or 5
    args.methods = set(args.methods.split(","))
    os.environ.setdefault("CROSSREC_HOME", str(OUT / "peers" / "workspace"))
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(available_datasets()))
    if unknown:
        raise SystemExit(f"unknown dataset(s): {', '.join(unknown)}; available: {', '.join(available_datasets())}")
    sections, records = [], []
    cmd = "`.venv/bin/python bench/peers/compare.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`"
    out_md = Path(args.out)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        md, rec = run_dataset(name, args)
        print(md, flush=True)
        sections.append(md)
        records.append(rec)
        # written after every dataset so a long run leaves partial results behind
        out_md.write_text("## crossrec vs RecBole (leave-last-out, full ranking, K=10, seen items excluded)\n\n"
                          f"Command: {cmd}\n\n" + "\n".join(sections), encoding="utf-8")
        out_md.with_suffix(".json").write_text(json.dumps(records, indent=2, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
