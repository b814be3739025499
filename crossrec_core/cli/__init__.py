"""The `crossrec` command: ingest, demo, train, compress, recommend, evaluate, models, serve.

Each group of subcommands lives in its own module that exposes ``register(subparsers)``; this file only
routes and turns CrossrecError into a plain message with exit status 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys

from crossrec_core.cli import data, evaluate, model, recommend, serve
from crossrec_core.errors import CrossrecError

# modules that contribute subcommands, each with register(subparsers) -> None, in --help order
_COMMAND_MODULES = (data, model, recommend, evaluate, serve)

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors also exit 2, without traceback
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"crossrec: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crossrec", description="Cross-category product recommendation from interaction logs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in _COMMAND_MODULES:
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        rc = args.func(args)
    except CrossrecError as err:
        print(f"crossrec: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("crossrec: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("crossrec: error: out of memory. Try a smaller log or fewer items.", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
