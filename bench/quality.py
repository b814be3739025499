"""Recommendation quality benchmark: crossrec vs baselines and a SASRec reference, on every real log.

Protocol: leave-last-out (test target = each user's last event), full ranking over the catalogue, items
already in the history excluded, K=10; HR@10 and NDCG@10 on all / switch / novel users (see
crossrec_core/evaluation/evaluator.py). Methods:

* crossrec: ``train_model`` with the default ModelConfig;
* SASRec reference: the same trainer configured as SASRec's original recipe (transformer encoder, item ID
  embeddings only -- no text, category, attributes, events or time gaps -- and one-negative BCE loss);
* popularity, item-kNN, category-transition baselines (fitted on the events before each target).

Usage:
    .venv/bin/python bench/quality.py                         # every dataset under /work/shared/data + demo
    .venv/bin/python bench/quality.py --datasets demo hm-fashion-oneday --quick
    .venv/bin/python bench/quality.py --out results.md --json results.json

``--quick`` caps training at 3 epochs and evaluates at most 2,000 users per dataset (minutes, not hours).
Every "crossrec loses" line carries the paired-bootstrap 95% interval of the difference, and leads that
are within noise are listed too.

The same protocol against the real RecBole SASRec / GRU4Rec (not this re-implementation), with the
three baselines in the same run and table, is ``bench/peers/compare.py``; bench/RESULTS.md reports that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossrec_core.evaluation.affinity import journey_recall  # noqa: E402
from crossrec_core.evaluation.baselines import default_baselines  # noqa: E402
from crossrec_core.config import ModelConfig  # noqa: E402
from crossrec_core.evaluation.evaluator import SUBSETS, evaluate_rankers  # noqa: E402

DATA_ROOT = Path(os.environ.get("CROSSREC_BENCH_DATA", "/work/shared/data"))
DEMO = "demo"
METRICS = ("HR@10", "NDCG@10")


def sasrec_config(base: ModelConfig) -> ModelConfig:
    """Return SASRec's original recipe expressed as a ModelConfig (IDs only, transformer, one-negative BCE)."""
    item = dataclasses.replace(
        base.item, use_id=True, use_category=False, use_attributes=False, use_text=False, use_vectors=False, id_dropout=0.0
    )
    user = dataclasses.replace(base.user, kind="transformer", use_events=False, use_time_gaps=False)
    train = dataclasses.replace(base.train, loss="bce")
    return ModelConfig(item=item, user=user, train=train)


def crossrec_config(quick: bool, epochs: int | None, device: str) -> ModelConfig:
    """Return the default ModelConfig, with the epoch cap and device of this run."""
    cfg = ModelConfig()
    changes: dict = {"device": device}
    if epochs is not None:
        changes["epochs"] = epochs
    elif quick:
        changes["epochs"] = 3
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def load_dataset(name: str):
    """Return (InteractionDataset, journeys DataFrame or None) for a dataset folder name or "demo"."""
    if name == DEMO:
        from crossrec_core.data.demo_store import build_demo_dataset

        return build_demo_dataset(seed=0)
    from crossrec_core.data.load import load_log

    folder = DATA_ROOT / name
    items = folder / "items.csv"
    ds = load_log(folder / "interactions.csv", items if items.is_file() else None, name=name)
    return ds, None


def available_datasets() -> list[str]:
    """Return every dataset folder under DATA_ROOT that holds an interactions.csv, then "demo"."""
    found = sorted(p.name for p in DATA_ROOT.iterdir() if (p / "interactions.csv").is_file()) if DATA_ROOT.is_dir() else []
    return found + [DEMO]


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    """Return {dataset, sizes, metrics frame records, train seconds, journeys} for one dataset."""
    from crossrec_core.training.loop import train_model

    t0 = time.perf_counter()
    ds, journeys = load_dataset(name)
    logging.info("%s: %d users, %d items, %d events, %d categories", name, ds.n_users, ds.n_items, ds.n_events, ds.n_categories)
    base = crossrec_config(args.quick, args.epochs, args.device)
    rankers: dict = {}
    train_s: dict[str, float] = {}
    configs = {"crossrec": base}
    if not args.skip_sasrec:
        configs["SASRec reference"] = sasrec_config(base)
    for method, cfg in configs.items():
        t = time.perf_counter()
        rankers[method] = train_model(ds, cfg, name=f"{name}-{method.split()[0].lower()}")
        train_s[method] = time.perf_counter() - t
        logging.info("%s: trained %s in %.0fs", name, method, train_s[method])
    rankers.update(default_baselines())
    max_users = args.max_users if args.max_users is not None else (2000 if args.quick else None)
    res = evaluate_rankers(ds, rankers, k=10, split="test", max_users=max_users, seed=0)
    differences = []  # crossrec minus every other method, per subset and metric, paired bootstrap 95% CI
    for other in res.methods:
        for subset in SUBSETS:
            for metric in METRICS:
                if other == "crossrec" or res.subset_sizes[subset] == 0:
                    continue
                d = res.difference("crossrec", other, subset, metric)
                differences.append({"other": other, "subset": subset, "metric": metric,
                                    "mean": d.mean, "low": d.low, "high": d.high, "significant": d.significant})
    out = {
        "dataset": name,
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "n_events": ds.n_events,
        "n_categories": ds.n_categories,
        "subset_sizes": res.subset_sizes,
        "metrics": res.metrics.to_dict(orient="records"),
        "differences": differences,
        "train_seconds": train_s,
        "eval_seconds": res.seconds,
        "seconds": time.perf_counter() - t0,
    }
    if journeys is not None:
        out["journeys"] = {m: journey_recall(r, ds, journeys, k=10).summary() for m, r in rankers.items()}
    return out


def markdown_table(result: dict) -> str:
    """Return a markdown table: rows method, columns HR@10 / NDCG@10 per subset (n users in the header)."""
    m = pd.DataFrame(result["metrics"])
    m = m[m["metric"].isin(METRICS)]
    sizes = result["subset_sizes"]
    cols = [(s, metric) for s in SUBSETS for metric in METRICS]
    head = "| method | " + " | ".join(f"{metric} {s} (n={sizes[s]})" for s, metric in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for method in dict.fromkeys(m["method"]):
        sub = m[m["method"] == method].set_index(["subset", "metric"])["value"]
        cells = [("-" if pd.isna(sub.get(c)) else f"{sub.get(c):.4f}") for c in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def losses(result: dict, model: str = "crossrec") -> list[str]:
    """Return one line per (subset, metric) where a baseline or the reference beats ``model``.

    Each line carries the paired-bootstrap 95% interval of ``model`` minus the best other method, and
    says whether the loss is significant (the interval excludes 0) or within noise.
    """
    m = pd.DataFrame(result["metrics"])
    m = m[m["metric"].isin(METRICS)]
    diffs = {(d["other"], d["subset"], d["metric"]): d for d in result.get("differences", [])}
    lines = []
    for (subset, metric), grp in m.groupby(["subset", "metric"], sort=False):
        vals = grp.set_index("method")["value"]
        if model not in vals or pd.isna(vals[model]):
            continue
        others = vals.drop(model).dropna()
        if others.empty:
            continue
        best = others.idxmax()
        if others[best] > vals[model]:
            rel = (others[best] - vals[model]) / others[best] * 100 if others[best] > 0 else 0.0
            d = diffs.get((best, subset, metric))
            ci = ""
            if d is not None:
                verdict = "significant" if d["significant"] else "within noise"
                ci = f"; 95% CI of the difference [{d['low']:+.4f}, {d['high']:+.4f}], {verdict}"
            lines.append(f"- {result['dataset']}, {subset} users, {metric}: {best} {others[best]:.4f} vs {model} "
                         f"{vals[model]:.4f} ({model} {rel:.0f}% lower{ci})")
    return lines


def uncertain_wins(result: dict, model: str = "crossrec") -> list[str]:
    """Return one line per (subset, metric) where ``model`` leads but its lead over the runner-up is within noise."""
    lines = []
    by_key: dict[tuple[str, str], list[dict]] = {}
    for d in result.get("differences", []):
        by_key.setdefault((d["subset"], d["metric"]), []).append(d)
    for (subset, metric), ds in by_key.items():
        if all(d["mean"] >= 0 for d in ds):
            closest = min(ds, key=lambda d: d["mean"])
            if not closest["significant"]:
                lines.append(f"- {result['dataset']}, {subset} users, {metric}: ahead of {closest['other']} by "
                             f"{closest['mean']:+.4f}, 95% CI [{closest['low']:+.4f}, {closest['high']:+.4f}] (within noise)")
    return lines


def report(results: list[dict], command: str) -> str:
    """Return the whole markdown report."""
    parts = ["# crossrec quality benchmark", "", f"Command: `{command}`", "",
             "Leave-last-out (test = last event), full ranking, seen items excluded, K=10.", ""]
    for r in results:
        parts.append(f"## {r['dataset']}")
        parts.append(f"{r['n_users']:,} users, {r['n_items']:,} items, {r['n_events']:,} events, "
                     f"{r['n_categories']:,} categories; training "
                     + ", ".join(f"{k} {v:.0f}s" for k, v in r["train_seconds"].items())
                     + f"; total {r['seconds']:.0f}s")
        parts.append("")
        parts.append(markdown_table(r))
        if "journeys" in r:
            parts.append("")
            parts.append("Planted journeys (demo store): " + "; ".join(f"{m}: {s}" for m, s in r["journeys"].items()))
        parts.append("")
    lost = [line for r in results for line in losses(r)]
    parts.append("## Where crossrec loses")
    parts.extend(lost or ["- nowhere: crossrec is best on every dataset, subset and metric"])
    close = [line for r in results for line in uncertain_wins(r)]
    if close:
        parts.append("")
        parts.append("## Where crossrec leads, but within noise (paired bootstrap, 2,000 resamples of users)")
        parts.extend(close)
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help=f"dataset folders under {DATA_ROOT} and/or 'demo' (default: all)")
    parser.add_argument("--quick", action="store_true", help="at most 3 epochs and 2,000 evaluated users per dataset")
    parser.add_argument("--epochs", type=int, help="override the epoch cap of both trained models")
    parser.add_argument("--max-users", type=int, help="evaluate a seeded sample of at most N users")
    parser.add_argument("--skip-sasrec", action="store_true", help="do not train the SASRec reference")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    names = args.datasets or available_datasets()
    unknown = [n for n in names if n != DEMO and not (DATA_ROOT / n / "interactions.csv").is_file()]
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(unknown)}; available: {', '.join(available_datasets())}")
    command = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    for name in names:
        results.append(run_dataset(name, args))
        text = report(results, command.strip())
        if args.out:  # rewritten after each dataset, so a long run shows partial results
            args.out.write_text(text, encoding="utf-8")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    print(report(results, command.strip()))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
