"""`certfailover failover SITE`: switch now to the best healthy standby (verified, rolled back if wrong)."""

from __future__ import annotations

import argparse

from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("failover", help="switch a site to its best healthy standby now")
    p.add_argument("site")
    p.add_argument("--to", metavar="CERT_ID", help="a specific certificate (must be healthy)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    report = rt.engine.failover(args.site, to=args.to)
    ok = any(e.kind == "failover" for e in report.events)
    emit(args, {"ok": ok, "events": report.events},
         "\n".join(f"{e.kind}: {e.message}" for e in report.events))
    return 0 if ok else 1
