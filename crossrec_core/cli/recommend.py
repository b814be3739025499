"""`crossrec recommend`: top-K recommendations for every user of a log, written as one CSV.

Contract (used by outside evaluation, keep it exact):
    crossrec recommend --model DIR --interactions PATH [--items PATH] [--users PATH] --k K --out FILE.csv
                       [--cross-category-only] [--threshold P] [--user-col ...] [--item-col ...] ...
writes columns exactly ``user_id,rank,item_id,score,category``; rank 1..K, K rows per user (fewer only
when --threshold removes some); score is the calibrated probability that the item is the user's next
one; lists are ordered by the fusion scorer (score falls down a list) and --threshold applies to it.
The table is built by crossrec_core.serving.export.recommend_for_log, the same function as the studio's
"Download all shoppers"; this module parses the flags and writes the file.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crossrec_core.cli.columns import add_column_flags, column_mapping
from crossrec_core.data.load import load_log
from crossrec_core.data.schema import COLUMN_ALIASES
from crossrec_core.errors import ConfigError, DataError, ModelError
from crossrec_core.safe_text import neutralise_frame
from crossrec_core.serving.export import recommend_for_log
from crossrec_core.storage.registry import load_model

PROGRESS_MIN_USERS = 1000  # fewer users finish in a blink: no bar

_HELP = """\
Write the top-K recommendations of a trained model for every user in a log.

Output CSV columns (exactly): user_id,rank,item_id,score,category
  rank      1..K, best first
  score     the calibrated probability (0..1) that this item is the user's next one (fitted on
            held-out events; on the validation targets the mean score of shown rows matches how
            often they come true); the list is ranked by the fusion scorer, so score falls down a
            list, and --threshold applies to it
  category  the item's category in the model (else from --items)
Every user with history in --interactions gets K rows (or every user listed in --users; users
the log does not know get cold-start recommendations: popular items in likely categories). Fewer
than K only when --threshold removes some. Items a user already interacted with anywhere in
--interactions are never recommended.
"""


def register(subparsers) -> None:
    """Add the `recommend` subcommand."""
    p = subparsers.add_parser(
        "recommend",
        help="write top-K recommendations per user as CSV",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder written by `crossrec train`")
    p.add_argument("--interactions", required=True, metavar="PATH", help="interaction log (CSV/TSV/Parquet/JSONL): the users' histories")
    p.add_argument("--items", metavar="PATH", help="optional items table (item_id, category, title)")
    p.add_argument("--users", metavar="PATH", help="optional one-column CSV of user ids (header optional); default: every user in the log")
    p.add_argument("--k", type=int, required=True, metavar="K", help="recommendations per user")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="output CSV (written atomically)")
    p.add_argument("--cross-category-only", action="store_true", help="only recommend items from categories absent from the user's history")
    p.add_argument("--threshold", metavar="P", help="drop items whose score (probability) is below P (0..1); "
                   "'model' = the threshold saved with the model (none saved: no threshold)")
    p.add_argument("--candidates", type=int, default=None, metavar="N",
                   help="items per user re-ranked by the fusion scorer (more = slower; default: as many as it was trained on)")
    add_column_flags(p)
    p.set_defaults(func=run_recommend)


def read_user_list(path: Path, known_users: np.ndarray, user_col: str | None = None) -> np.ndarray:
    """Return the user ids listed in a one-column CSV (header optional), de-duplicated in file order."""
    if not path.is_file():
        raise DataError(f"The users file '{path}' does not exist. Give a one-column CSV of user ids.")
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"Could not read the users file '{path.name}': {err}. Give a one-column CSV of user ids.") from err
    if raw.shape[1] == 0 or raw.empty:
        raise DataError(f"The users file '{path.name}' is empty. Give a one-column CSV of user ids.")
    if raw.shape[1] > 1:
        raise DataError(
            f"The users file '{path.name}' has {raw.shape[1]} columns; it must have exactly one (user ids), "
            f"e.g. first row: {', '.join(raw.iloc[0].astype(str).tolist()[:3])}."
        )
    values = raw.iloc[:, 0].astype(str).str.strip()
    values = values[values != ""]
    first = values.iloc[0] if len(values) else ""
    header_names = {a.replace("_", "") for a in COLUMN_ALIASES["user_id"]} | {"id", "userids", "users"}
    if user_col:
        header_names.add(user_col.lower().replace("_", ""))
    looks_like_header = first.lower().replace("_", "").replace(" ", "").replace("-", "") in header_names
    if looks_like_header and first not in set(map(str, known_users)):
        values = values.iloc[1:]
    if values.empty:
        raise DataError(f"The users file '{path.name}' lists no user ids.")
    return pd.unique(values.to_numpy(dtype=object))


def write_csv_atomic(frame: pd.DataFrame, out: Path, text_columns: tuple[str, ...] = ()) -> None:
    """Write ``frame`` to ``out`` through a temp file in the same folder and a rename.

    ``text_columns`` (text meant for people, never ids) are neutralised against spreadsheet formulas
    (safe_text.neutralise_frame); every other column is written as it is.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    if text_columns:
        frame = neutralise_frame(frame, text_columns)
    try:
        frame.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_recommend(args: argparse.Namespace) -> int:
    """Handle `crossrec recommend`; returns the exit status (CrossrecError is turned into 2 by cli.main)."""
    if args.k is None or args.k < 1:
        raise ConfigError(f"--k must be at least 1, got {args.k}.")
    if args.threshold is not None and args.threshold != "model":
        try:
            args.threshold = float(args.threshold)
        except ValueError:
            raise ConfigError(f"--threshold is a probability between 0 and 1 or 'model', got {args.threshold!r}.") from None
        if not 0.0 <= args.threshold <= 1.0:
            raise ConfigError(f"--threshold is a probability between 0 and 1, got {args.threshold}.")
    if args.candidates is not None and args.candidates < 1:
        raise ConfigError(f"--candidates must be at least 1, got {args.candidates}.")
    model_dir = Path(args.model).expanduser()
    # a bare name may be a workspace model (load_model resolves it); a path must exist
    if not model_dir.is_dir() and ("/" in args.model or os.sep in args.model or model_dir.exists()):
        what = "is a file, not a model folder" if model_dir.exists() else "does not exist"
        raise ModelError(
            f"Model folder '{model_dir}' {what}. Train one with `crossrec train` "
            "or pass the folder it printed (e.g. workspace/models/<name>)."
        )
    inter_path = Path(args.interactions).expanduser()
    if not inter_path.is_file():
        raise DataError(f"Interactions file '{inter_path}' does not exist.")
    items_path = Path(args.items).expanduser() if args.items else None
    if items_path is not None and not items_path.is_file():
        raise DataError(f"Items file '{items_path}' does not exist.")

    model = load_model(model_dir)
    if args.threshold == "model":
        args.threshold = model.threshold  # None when no threshold was saved with the model
    ds = load_log(str(inter_path), str(items_path) if items_path else None, mapping=column_mapping(args), name=inter_path.stem)
    users_file = Path(args.users).expanduser() if args.users else None
    wanted = read_user_list(users_file, ds.user_ids, args.user_col) if users_file else None
    bar = None
    n_users = ds.n_users if wanted is None else len(wanted)
    if n_users >= PROGRESS_MIN_USERS:
        bar = tqdm(total=n_users, desc="recommend", unit="user", file=sys.stderr, mininterval=0.5)

    def on_batch(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        out = recommend_for_log(
            model, ds, k=args.k, users=wanted, cross_category_only=args.cross_category_only,
            threshold=args.threshold, n_candidates=args.candidates, on_batch=on_batch,
        )
    finally:
        if bar is not None:
            bar.close()
    if wanted is not None:
        n_new = int((ds.user_index(wanted) < 0).sum())
        if n_new:
            print(f"crossrec: {n_new} user(s) from {users_file.name} are not in the log; they got cold-start "
                  "recommendations.", file=sys.stderr)
    out_path = Path(args.out).expanduser()
    write_csv_atomic(out, out_path, text_columns=("category",))  # user_id and item_id stay byte for byte
    print(f"Wrote {len(out)} recommendations for {n_users} users to {out_path}")
    return 0
