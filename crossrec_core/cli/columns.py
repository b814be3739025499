"""The --user-col ... --title-col flags shared by `crossrec train`, `recommend` and `evaluate`.

One definition, so a command line that trains a model on a log with its own column names also
recommends and evaluates with it. Without flags the columns are detected (canonical names first).
"""

from __future__ import annotations

import argparse

# CLI flag (argparse dest) -> canonical column of the interaction log
MAPPING_FLAGS = {
    "user_col": "user_id",
    "item_col": "item_id",
    "time_col": "timestamp",
    "event_col": "event",
    "category_col": "category",
    "title_col": "title",
}


def add_column_flags(parser: argparse.ArgumentParser) -> None:
    """Add --user-col, --item-col, --time-col, --event-col, --category-col and --title-col to ``parser``."""
    for flag, canon in MAPPING_FLAGS.items():
        parser.add_argument(
            "--" + flag.replace("_", "-"), dest=flag, metavar="NAME", default=None,
            help=f"column of the interactions file holding the {canon} (default: detected)",
        )


def column_mapping(args: argparse.Namespace) -> dict[str, str] | None:
    """Return the mapping canonical column -> source column given by the flags, or None when none was given."""
    m = {canon: getattr(args, flag) for flag, canon in MAPPING_FLAGS.items() if getattr(args, flag, None)}
    return m or None
