"""`certfailover demo`: the whole story on local CAs and a local nginx (see demo/run.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="two local Pebble CAs, a local nginx, a real revocation "
                                    "and a verified failover")
    p.add_argument("--workdir", type=Path, default=Path(".demo"),
                   help="where the demo keeps its files (emptied first; default ./.demo)")
    p.add_argument("--interval", type=float, default=1.0, help="daemon interval in seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..demo import run_demo
    if not args.verbose:  # the demo prints its own timeline; engine log lines only with -v
        logging.getLogger().setLevel(logging.WARNING)
    out = (lambda s: print(s, file=sys.stderr)) if args.json else print
    result = run_demo(args.workdir.resolve(), out=out, interval=args.interval)
    if args.json:
        emit(args, result)
    return 0 if result.ok else 1
