"""`certfailover distrust CA` / `undistrust CA`: the operator's "stop using CA X now" switch."""

from __future__ import annotations

import argparse

from ..errors import CertFailoverError
from ..model import utcnow
from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("distrust", help="mark every certificate from a CA failed now (fails over)")
    p.add_argument("ca")
    p.add_argument("--reason", default="operator distrust")
    p.add_argument("--no-tick", action="store_true", help="only record it; the daemon acts next tick")
    p.set_defaults(func=run_distrust)
    u = sub.add_parser("undistrust", help="take a CA off the distrust list")
    u.add_argument("ca")
    u.set_defaults(func=run_undistrust)


def run_distrust(args: argparse.Namespace) -> int:
    rt = runtime(args)
    if args.ca not in rt.config.cas:
        raise CertFailoverError(f"{args.ca!r} is not a configured [[ca]] in {rt.config.path}")
    rt.db.distrust(args.ca, utcnow(), args.reason)
    events = []
    for site in rt.config.sites:
        if args.ca in site.cas:
            events.append(rt.engine.record(None, site.name, "distrust", f"operator distrusted {args.ca}: "
                                           f"{args.reason}", ca=args.ca))
    if not args.no_tick:
        events += rt.engine.tick().events
    emit(args, {"distrusted": args.ca, "events": events},
         "\n".join(f"{e.site} {e.kind}: {e.message}" for e in events) or f"distrusted {args.ca}")
    return 0


def run_undistrust(args: argparse.Namespace) -> int:
    rt = runtime(args)
    removed = rt.db.undistrust(args.ca)
    emit(args, {"undistrusted": args.ca, "was_distrusted": removed},
         f"{args.ca} {'removed from' if removed else 'was not on'} the distrust list")
    return 0
