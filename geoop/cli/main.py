"""Entry point of the ``geoop`` command (also ``python -m geoop``)."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from ..errors import GeoopError

#: sub-command name -> module under geoop.cli
COMMANDS = {
    "info": "info",
    "data": "data",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "calibrate": "calibrate",
    "render": "render",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoop", description="Neural operators on arbitrary geometry.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in COMMANDS.items():
        try:
            m = importlib.import_module(f"geoop.cli.{mod}")
        except ModuleNotFoundError as e:  # sub-command not built in this version
            if e.name != f"geoop.cli.{mod}":
                raise
            continue
        p = m.add_parser(sub)
        p.set_defaults(_run=m.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except GeoopError as e:
        print(f"geoop {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"geoop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
