"""`crossrec ingest`, `crossrec demo` and `crossrec datasets`: get logs into the workspace and look at them."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from crossrec_core.data.demo_store import build_demo_dataset
from crossrec_core.data.load import load_log
from crossrec_core.data.profile import profile_dataset
from crossrec_core.errors import ConfigError
from crossrec_core.safe_text import neutralise_frame
from crossrec_core.storage.datasets import delete_dataset, list_datasets
from crossrec_core.storage.datasets import save_dataset
from crossrec_core.storage.workspace import atomic_write_text


def register(subparsers) -> None:
    """Add the ingest, demo and datasets subcommands."""
    p = subparsers.add_parser(
        "ingest",
        help="read a log (and an items table), validate it and store it in the workspace",
        description="Read an interaction log (CSV, TSV, Parquet, JSON Lines, .gz, RecBole .inter) and an optional "
        "items table, validate them and store the dataset in the workspace.",
    )
    p.add_argument("--interactions", required=True, metavar="PATH", help="the log: one row per event")
    p.add_argument("--items", metavar="PATH", help="optional items table: item_id, category, title, attributes")
    p.add_argument("--map", action="append", default=[], metavar="CANONICAL=SOURCE",
                   help="which log column holds user_id / item_id / timestamp / event / category / title (repeatable)")
    p.add_argument("--items-map", action="append", default=[], metavar="CANONICAL=SOURCE",
                   help="which items-table column holds item_id / category / title (repeatable)")
    p.add_argument("--name", help="dataset name in the workspace (default: the log's file name)")
    p.add_argument("--pseudonymize", action="store_true", help="store salted hashes instead of raw user ids")
    p.add_argument("--max-bytes", type=int, default=None,
                   help="refuse files larger than this, or that unpack (gzip, Parquet) to more (default 2 GB)")
    p.add_argument("--max-rows", type=int, default=None, help="refuse files with more rows than this (default 200 million)")
    p.set_defaults(func=cmd_ingest)

    d = subparsers.add_parser("demo", help="build the simulated demo store into the workspace")
    d.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    d.add_argument("--export", metavar="DIR", default=None,
                   help="also write the demo store as canonical files DIR/interactions.csv and DIR/items.csv")
    d.set_defaults(func=cmd_demo)

    ls = subparsers.add_parser("datasets", help="list stored datasets, or delete one")
    ls.add_argument("--delete", metavar="NAME", help="delete the dataset NAME")
    ls.set_defaults(func=cmd_datasets)


def parse_map(pairs: list[str]) -> dict[str, str]:
    """Return {canonical: source} from ["user_id=customer", ...] (ConfigError on a malformed pair)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--map expects CANONICAL=SOURCE such as user_id=customer_no, got '{pair}'.")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def cmd_ingest(args: argparse.Namespace) -> int:
    ds = load_log(
        args.interactions,
        args.items,
        mapping=parse_map(args.map),
        items_mapping=parse_map(args.items_map),
        name=args.name,
        pseudonymize=args.pseudonymize,
        max_bytes=args.max_bytes,
        max_rows=args.max_rows,
    )
    path = save_dataset(ds, args.name or ds.name)
    _print_profile(ds, profile_dataset(ds))
    print(f"\nSaved dataset '{path.name}' to {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    ds, journeys = build_demo_dataset(seed=args.seed)
    path = save_dataset(ds, ds.name, extras={"journeys": journeys})
    if args.export:
        _export_demo(ds, Path(args.export))
    _print_profile(ds, profile_dataset(ds))
    print("\nPlanted journeys:")
    for _, row in journeys[journeys["step"] == 1].iterrows():
        print(f"  {row['journey_id']}: {row['name']} ({row['n_users']:,} users)")
    print(f"\nSaved dataset '{path.name}' to {path}")
    return 0


def _export_demo(ds, folder: Path) -> None:
    """Write the demo store as the canonical CSV files that `crossrec train` reads with no flags
    (titles and categories neutralised against spreadsheet formulas; ids as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "interactions.csv", ds.interactions_frame().to_csv(index=False, lineterminator="\n"))
    items = neutralise_frame(ds.items, ("title", "category"))
    atomic_write_text(folder / "items.csv", items.to_csv(index=False, lineterminator="\n"))
    print(f"Exported interactions.csv and items.csv to {folder}")


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.delete:
        delete_dataset(args.delete)
        print(f"Deleted dataset '{args.delete}'.")
        return 0
    infos = list_datasets()
    if not infos:
        print("No datasets yet. Run `crossrec demo` or `crossrec ingest --interactions PATH`.")
        return 0
    print(f"{'name':<32} {'users':>10} {'items':>10} {'events':>12} {'categories':>10}  created")
    for i in infos:
        print(f"{i.name:<32} {i.n_users:>10,} {i.n_items:>10,} {i.n_events:>12,} {i.n_categories:>10,}  {i.created_at}")
    return 0


def _print_profile(ds, profile) -> None:
    print(profile.to_text())
    if ds.report.warnings:
        print(f"\nWarnings ({len(ds.report.warnings)}):")
        for w in ds.report.warnings:
            print(f"  - {w}")
    if ds.report.notes:
        print("\nNotes:")
        for n in ds.report.notes:
            print(f"  - {n}")
    sys.stdout.flush()
