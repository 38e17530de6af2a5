"""`certfailover failover SITE`: switch now to the best healthy standby (verified, rolled back if wrong).

The switch result is printed first; then notifications get at most --notify-timeout seconds
(queued per notifier, they never delay the switch) and what was not delivered is reported.
"""

from __future__ import annotations

import argparse
import sys

from .common import add_notify_timeout, emit, runtime, settle_notifications


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("failover", help="switch a site to its best healthy standby now")
    p.add_argument("site")
    p.add_argument("--to", metavar="CERT_ID", help="a specific certificate (must be healthy)")
    add_notify_timeout(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    report = rt.engine.failover(args.site, to=args.to)
    ok = any(e.kind == "failover" for e in report.events)
    if not args.json:
        sys.stdout.write("".join(f"{e.kind}: {e.message}\n" for e in report.events))
        sys.stdout.flush()
    notifications = settle_notifications(args, rt)
    if args.json:
        emit(args, {"ok": ok, "events": report.events, "notifications": notifications})
    return 0 if ok else 1
