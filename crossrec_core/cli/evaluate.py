"""`crossrec evaluate`: a trained model against popularity, item-kNN, next-item-rules and category-transition baselines.

    crossrec evaluate --model DIR --interactions PATH [--items PATH] [--k 10] [--json FILE]
                      [--split test|valid] [--max-users N]

Prints one table per user subset (all / switch / novel; see crossrec_core/evaluation/evaluator.py) and writes the
same numbers as JSON. Baselines are fitted on the log given here, on the events before each target.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from crossrec_core.cli.columns import add_column_flags, column_mapping
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError, DataError, LeakError
from crossrec_core.evaluation.baselines import default_baselines
from crossrec_core.evaluation.evaluator import evaluate_rankers
from crossrec_core.storage.registry import load_model
from crossrec_core.storage.workspace import atomic_write_json

_HELP = """\
Compare a trained model with four baselines (popularity, item-kNN, next-item rules, category-transition) on a log.

Protocol: leave-last-out. Each user's last event is the target (--split valid: the second-to-last),
every catalogue item is ranked, items the user already had are excluded. The model is scored on the
very lists `crossrec recommend` writes (cold-start fallback, fusion re-rank); the calibration of their
probabilities (expected calibration error, Brier score, reliability bins) is in the output and --json.
A model trained on some of the held-out target events is refused (--allow-seen runs anyway). Metrics at K: HR, NDCG,
P, R, F1, MRR, plus catalogue / category coverage, diversity, novelty and the share of
recommendations from categories new to the user. Reported on all users, on "switch" users (the
target's category differs from the last item's) and on "novel" users (the target's category is
new to the user).
"""


def register(subparsers) -> None:
    """Add the `evaluate` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="compare a model with baselines on all / switch / novel users",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder written by `crossrec train` (or a workspace model name)")
    p.add_argument("--interactions", required=True, metavar="PATH", help="interaction log (CSV/TSV/Parquet/JSONL)")
    p.add_argument("--items", metavar="PATH", help="optional items table (item_id, category, title)")
    p.add_argument("--k", type=int, default=10, metavar="K", help="list length K (default 10)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
    p.add_argument("--split", choices=("test", "valid"), default="test", help="target: last event (test, default) or second-to-last (valid)")
    p.add_argument("--max-users", type=int, metavar="N", help="evaluate a random sample of at most N users (faster on big logs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the user sample (default 0)")
    p.add_argument("--no-baselines", action="store_true", help="evaluate the model alone")
    p.add_argument("--retrieval-only", action="store_true",
                   help="also score the model by retrieval alone (no cold-start fallback, no fusion re-rank): a diagnostic, not what ships")
    p.add_argument("--allow-seen", action="store_true",
                   help="evaluate even if the model was trained on some of the held-out targets (the output then carries a warning)")
    add_column_flags(p)
    p.set_defaults(func=run_evaluate)


def _check_args(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, got {args.k}.")
    if args.max_users is not None and args.max_users < 1:
        raise ConfigError(f"--max-users must be at least 1, got {args.max_users}.")
    for flag, value in (("--interactions", args.interactions), ("--items", args.items)):
        if value is not None and not Path(value).expanduser().is_file():
            raise DataError(f"The {flag} file '{value}' does not exist. Check the path.")
    if args.json:
        parent = Path(args.json).expanduser().resolve().parent
        if not parent.is_dir():
            raise DataError(f"Cannot write --json {args.json}: the folder '{parent}' does not exist. Create it or pick another path.")


def run_evaluate(args: argparse.Namespace) -> int:
    """Run `crossrec evaluate`; return the exit status (0 on success)."""
    _check_args(args)
    t0 = time.perf_counter()
    model = load_model(args.model)
    ds = load_log(Path(args.interactions).expanduser(), Path(args.items).expanduser() if args.items else None, mapping=column_mapping(args))
    for warning in ds.report.warnings:
        print(f"note: {warning}", file=sys.stderr)
    model_name = str(getattr(model, "name", "model")) or "model"
    rankers = {model_name: model}
    if not args.no_baselines:
        for name, ranker in default_baselines().items():
            rankers[name if name not in rankers else f"{name} (baseline)"] = ranker
    try:
        result = evaluate_rankers(
            ds, rankers, k=args.k, split=args.split, max_users=args.max_users, seed=args.seed,
            retrieval_diagnostic=args.retrieval_only, allow_seen=args.allow_seen,
        )
    except LeakError as err:
        raise LeakError(f"{err} (--allow-seen runs it anyway, with a warning on every output.)") from None
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    print(result.to_text())
    print(f"\n{len(rankers)} methods on {result.subset_sizes['all']} users in {time.perf_counter() - t0:.1f}s")
    if args.json:
        payload = {**result.to_dict(), "model": model_name, "model_dir": str(args.model), "interactions": str(args.interactions)}
        atomic_write_json(Path(args.json).expanduser(), payload)
        print(f"wrote {args.json}")
    return 0
