"""`certfailover run`: the daemon (or one tick with --once, for cron)."""

from __future__ import annotations

import argparse

from ..daemon import Daemon
from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the daemon: check, decide, deploy, replenish, record")
    p.add_argument("--interval", type=float, help="seconds between ticks (default: [daemon] "
                                                  "interval or 300)")
    p.add_argument("--once", action="store_true", help="one tick, then exit (for cron)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    interval = args.interval or rt.config.daemon.interval
    if interval <= 0:
        raise SystemExit("certfailover: error: --interval must be > 0")
    rt.startup()
    daemon = Daemon(rt.engine, interval=interval)
    daemon.install_signals()
    code = daemon.run(once=args.once)
    if args.once and args.json:
        emit(args, {"ticks": daemon.ticks})
    return code
