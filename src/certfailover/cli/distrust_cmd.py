"""`certfailover distrust CA` / `undistrust CA`: the operator's "stop using CA X now" switch,
everywhere or, with --site, for one site only (what the CT watch records when a site opts in to
`[ct] distrust_on_unexpected` and an unexpected certificate from one of its CAs appears).

Switch first: the sites move off the CA (`tick(replenish=False)`) and the result is printed
before anything else happens; then new certificates are issued where a standby is missing
(a full tick); then notifications get at most --notify-timeout seconds (they are queued per
notifier and never delay the switch) and what was not delivered is reported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import SiteConfig
from ..errors import CertFailoverError
from ..events import EventKind
from ..model import Event, utcnow
from .common import add_notify_timeout, emit, runtime, settle_notifications


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("distrust", help="mark every certificate from a CA failed now (fails over)")
    p.add_argument("ca")
    p.add_argument("--reason", default="operator distrust")
    p.add_argument("--site", help="distrust the CA for this site only")
    p.add_argument("--no-tick", action="store_true", help="only record it; the daemon acts next tick")
    add_notify_timeout(p)
    p.set_defaults(func=run_distrust)
    u = sub.add_parser("undistrust", help="take a CA off the distrust list")
    u.add_argument("ca")
    u.add_argument("--site", help="take back a distrust of this site only")
    u.set_defaults(func=run_undistrust)


def _lines(events: list[Event]) -> str:
    return "\n".join(f"{e.site} {e.kind}: {e.message}" for e in events)


def _say(args: argparse.Namespace, events: list[Event]) -> None:
    if not args.json and events:
        sys.stdout.write(_lines(events) + "\n")
        sys.stdout.flush()


def run_distrust(args: argparse.Namespace) -> int:
    rt = runtime(args)
    if args.ca not in rt.config.cas:
        raise CertFailoverError(f"{args.ca!r} is not a configured [[ca]] in {rt.config.path}")
    sites = _sites(rt, args)
    rt.db.distrust(args.ca, utcnow(), args.reason, site=args.site)
    scope = f" for site {args.site}" if args.site else ""
    events = [rt.engine.record(None, site.name, EventKind.DISTRUST,
                               f"operator distrusted {args.ca}{scope}: {args.reason}",
                               ca=args.ca, **({"only_site": True} if args.site else {}))
              for site in sites if args.ca in site.cas]
    switched: list[Event] = []
    replenished: list[Event] = []
    fleet = getattr(rt.config, "fleet", None)
    if fleet is not None and not args.no_tick:
        # the fleet's controllers share the sites by leases and act at their next tick; this
        # command's own tick would decide sites another controller holds
        args.no_tick = True
        if not args.json:
            sys.stdout.write("fleet: recorded; the controllers switch the sites at their next "
                             "tick\n")
    if not args.no_tick:
        switched = rt.engine.tick(replenish=False).events  # the switch, before anything else
        _say(args, events + switched)
        replenished = rt.engine.tick().events  # may ask CAs for new standbys
        _say(args, replenished)
    elif not args.json:
        _say(args, events)
    notifications = settle_notifications(args, rt)
    all_events = events + switched + replenished
    if args.json:
        emit(args, {"distrusted": args.ca, "site": args.site, "events": all_events,
                    "switch": switched,
                    "notifications": notifications})
    elif not all_events:
        emit(args, None, f"distrusted {args.ca}{scope}")
    return 0


def run_undistrust(args: argparse.Namespace) -> int:
    rt = runtime(args)
    _sites(rt, args)
    removed = rt.db.undistrust(args.ca, site=args.site)
    scope = f" of site {args.site}" if args.site else ""
    emit(args, {"undistrusted": args.ca, "site": args.site, "was_distrusted": removed},
         f"{args.ca} {'removed from' if removed else 'was not on'} the distrust list{scope}")
    return 0


def _sites(rt: Any, args: argparse.Namespace) -> list[SiteConfig]:
    """The sites a (un)distrust is about: all, or --site (which must be configured)."""
    if args.site is None:
        return list(rt.config.sites)
    if args.site not in {s.name for s in rt.config.sites}:
        raise CertFailoverError(f"{args.site!r} is not a configured [[site]] in {rt.config.path}")
    return [rt.config.site(args.site)]
