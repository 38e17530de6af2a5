"""`certfailover run`: the daemon (or one tick with --once, for cron)."""

from __future__ import annotations

import argparse
import contextlib
import socket

from ..errors import InputError
from ..metrics import ListenError, parse_listen
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
    p.add_argument("--web", metavar="HOST:PORT",
                   help="serve the read-only status page at http://HOST:PORT/ (default: [web] "
                        "listen; off when neither is set; not with --once); docs/web.md")
    p.set_defaults(func=run)


def check_listen(listen: tuple[str, int] | None) -> None:
    """Before the lock, crash recovery and the first tick: a metrics address that cannot be
    bound (in use) is a clean error naming it, not a traceback after startup work."""
    if listen is None:
        return
    host, port = listen
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
            s.bind((host, port))
    except OSError as exc:
        raise ListenError(exc.errno, f"metrics: cannot listen on {host}:{port}: {exc.strerror} "
                          "(is another process using it? choose another --metrics-listen or "
                          "[metrics] listen)") from None


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
    check_listen(listen or config.metrics.listen)
    from ..web.server import check_bind
    from ..web.settings import with_listen
    web = with_listen(config.web, args.web, file=str(config.path)) if args.web else config.web
    if not args.once:
        check_bind(web.listen)
    # one daemon per store: taken before anything acts (even the schema migration and crash
    # recovery), held for the daemon's life; a cron tick (--once) is refused the same way.
    # Fleet controllers share one store on purpose: they split the sites by leases instead
    # (fleet/share.py), and the database refuses a second pending order for a site and CA.
    fleet = getattr(config, "fleet", None)
    shared = fleet is not None and fleet.role == "controller"
    with (contextlib.nullcontext(None) if shared else acquire_daemon_lock(config)) as lock:
        from ..wiring import build, build_daemon  # the CLI imports the runtime only when it runs
        rt = build(config)
        rt.startup()
        # --once (cron) has no memory of earlier runs: every check is due
        daemon = build_daemon(rt.engine, rt.config, interval=interval, metrics_listen=listen,
                              scheduled=not args.once)
        daemon.lock = lock  # checked before every tick: a lost PostgreSQL lock stops it
        daemon.install_signals()
        from ..web.server import start
        page = None if args.once else start(web, rt.config, rt.db, rt.vault)
        try:
            code = daemon.run(once=args.once)
        finally:
            if page is not None:
                page.stop()
            daemon.close()
    if args.once and args.json:
        emit(args, {"ticks": daemon.ticks})
    return code
