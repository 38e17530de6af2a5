"""`certfailover` command line. Commands live in cli/*_cmd.py modules, found automatically.

Each module exposes `register(sub)`, adding its parser with `set_defaults(func=run)` where
`run(args) -> int`. Global options: --config PATH (default ./certfailover.toml or
$CERTFAILOVER_CONFIG), --json, -v/--verbose.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..config import default_path
from ..errors import CertFailoverError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certfailover",
        description="Keep a site trusted when its CA fails: standby certificates from independent "
                    "CAs, continuous checks, verified atomic failover.")
    parser.add_argument("--version", action="version", version=f"certfailover {__version__}")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: $CERTFAILOVER_CONFIG or ./certfailover.toml)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import __path__ as cli_path
    for mod in sorted(m.name for m in pkgutil.iter_modules(cli_path) if m.name.endswith("_cmd")):
        importlib.import_module(f"certfailover.cli.{mod}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = default_path()
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CertFailoverError as exc:
        print(f"certfailover: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
