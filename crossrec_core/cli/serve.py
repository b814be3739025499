"""`crossrec serve`: a local JSON HTTP server that takes shoppers' events and answers their next list at once.

    crossrec serve --model DIR [--interactions LOG [--items ITEMS]] [--host 127.0.0.1] [--port 8000]

The endpoints are described in crossrec_core/serving/http_api.py and the README ("Serving"). This module
parses the flags, loads the model (and the optional starting log), and runs the server until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from crossrec_core.cli.columns import add_column_flags, column_mapping
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError, DataError, ModelError
from crossrec_core.serving.http_api import ServeConfig, make_server
from crossrec_core.serving.live import LiveConfig, LiveRecommender
from crossrec_core.storage.registry import load_model

_HELP = """\
Serve a trained model over HTTP (JSON), updating each shopper's list as their events arrive.

  POST /events              {"user_id", "item_id", "event", "timestamp"} or a list of them
  POST /items               {"item_id", "title", "category"} or a list: new items, recommendable at once
  GET  /recommend/USER?k=10 {"user_id", "items": [{"rank", "item_id", "title", "category", "score"}]}
  GET  /health

score is the calibrated probability that the item is the shopper's next one. Shoppers of
--interactions start from their logged history; anyone else starts empty (cold start).
There is no authentication: it listens on 127.0.0.1 unless --host says otherwise; put it behind
your own gateway before opening it to other machines. Ctrl-C stops it.
"""


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser(
        "serve", help="serve recommendations over local HTTP, updated as events arrive",
        description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder written by `crossrec train`")
    p.add_argument("--interactions", metavar="PATH", help="optional log whose shoppers start with their history")
    p.add_argument("--items", metavar="PATH", help="optional items table for --interactions (item_id, category, title)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--max-users", type=int, default=LiveConfig.max_users, metavar="N",
                   help=f"shoppers held in memory at once, least recently active dropped first (default {LiveConfig.max_users})")
    add_column_flags(p)
    p.set_defaults(func=run_serve)


def _check_paths(args: argparse.Namespace) -> tuple[Path, Path | None, Path | None]:
    model_dir = Path(args.model).expanduser()
    # a bare name may be a workspace model (load_model resolves it); a path must exist
    if not model_dir.is_dir() and ("/" in args.model or os.sep in args.model or model_dir.exists()):
        what = "is a file, not a model folder" if model_dir.exists() else "does not exist"
        raise ModelError(f"Model folder '{model_dir}' {what}. Train one with `crossrec train` or pass the folder it printed.")
    inter = Path(args.interactions).expanduser() if args.interactions else None
    if inter is not None and not inter.is_file():
        raise DataError(f"Interactions file '{inter}' does not exist.")
    items = Path(args.items).expanduser() if args.items else None
    if items is not None and inter is None:
        raise ConfigError("--items describes the items of --interactions; give --interactions too, or leave --items out.")
    if items is not None and not items.is_file():
        raise DataError(f"Items file '{items}' does not exist.")
    return model_dir, inter, items


def run_serve(args: argparse.Namespace) -> int:
    """Handle `crossrec serve`; returns the exit status after Ctrl-C (CrossrecError -> 2 in cli.main)."""
    cfg = ServeConfig(host=args.host, port=args.port)  # validates the port
    live_cfg = LiveConfig(max_users=args.max_users)
    model_dir, inter, items = _check_paths(args)
    model = load_model(model_dir)
    ds = None
    if inter is not None:
        ds = load_log(str(inter), str(items) if items else None, mapping=column_mapping(args), name=inter.stem)
        model.check_compatible(ds)
    live = LiveRecommender(model, ds, config=live_cfg)
    server = make_server(live, cfg)
    if threading.current_thread() is threading.main_thread():
        # `kill` (SIGTERM) stops it the same way as Ctrl-C: close the socket, exit 0. SIGINT too, explicitly: a process
        # started from a background shell job inherits SIGINT ignored, and Python then leaves Ctrl-C ignored
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    who = f"{ds.n_users} shoppers from {inter.name}" if ds is not None else "no starting log"
    print(f"crossrec serve: model {model_dir.name} ({live.recommender.n_items} items, {who}) on {server.url} "
          "(no authentication; Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        print("crossrec serve: stopping", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0
