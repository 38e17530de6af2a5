"""`certfailover run`: the daemon (or one tick with --once, for cron)."""

from __future__ import annotations

import argparse

from ..daemon import build_daemon
from ..errors import InputError
from ..metrics import parse_listen
from ..store.lock import acquire_daemon_lock
from .common import emit, load_config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the daemon: check what is due, decide, deploy, "
                                   "replenish, record, notify")
    p.add_argument("--interval", type=float, help="seconds between ticks (default: [daemon] "
                                                  "interval or 300)")
    p.add_argument("--once", action="store_true",
                   help="one tick checking everything, then exit (for cron)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics "
                        "(default: [metrics] listen; off when neither is set)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    listen = None
    if args.metrics_listen:
        try:
            listen = parse_listen(args.metrics_listen)
        except ValueError as exc:
            raise InputError(f"--metrics-listen: {exc}") from None
    config = load_config(args)
    interval = args.interval or config.daemon.interval
    if interval <= 0:
        raise InputError("--interval must be > 0")
    # one daemon per store: taken before anything acts (even the schema migration and crash
    # recovery), held for the daemon's life; a cron tick (--once) is refused the same way
    with acquire_daemon_lock(config):
        from ..wiring import build
        rt = build(config)
        rt.startup()
        # --once (cron) has no memory of earlier runs: every check is due
        daemon = build_daemon(rt.engine, rt.config, interval=interval, metrics_listen=listen,
                              scheduled=not args.once)
        daemon.install_signals()
        try:
            code = daemon.run(once=args.once)
        finally:
            daemon.close()
    if args.once and args.json:
        emit(args, {"ticks": daemon.ticks})
    return code
