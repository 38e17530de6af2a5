"""`certfailover issue`: obtain certificates now (fill each site to 1 active + min_standbys).

Without --ca: one tick per site, which issues what the site lacks and activates the first
certificate (verified by a handshake, rolled back if the server serves anything else).
With --no-activate: the same certificates, from every CA the site needs, but nothing is
activated. With --ca: one new certificate from that CA, stored as a standby (never activated).

Every line says what happened: each certificate issued, each activation or failover, and each
problem (an order that failed, an activation rolled back or not verified, a standby still
missing) with its reason. Exit 0 when nothing went wrong (including "nothing to issue"), 1 when
anything did, 2 for a bad site or CA name.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from .. import policy
from ..config import SiteConfig
from ..engine import OrderBook, TickReport
from ..errors import CertFailoverError
from ..events import EventKind
from ..model import Event, to_jsonable
from .common import emit, runtime

#: event kinds that mean the command did not do what was asked
PROBLEMS = {
    "rollback": "activation rolled back",
    "deploy_failed": "activation failed",
    "issuance_failed": "issuance failed",
    "standby_unusable": "new certificate unusable",
    "standby_missing": "standby still missing",
    "none_healthy": "no healthy certificate",
    "site_error": "site error",
}
#: event kinds worth a line of their own
NEWS = ("issued", "activated", "failover", "retired", "short_lifetime")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("issue", help="issue certificates now: one from --ca, or what each site lacks")
    p.add_argument("site", nargs="?", help="only this site")
    p.add_argument("--ca", help="issue one new certificate from this CA (a fresh key), "
                                "stored as a standby")
    p.add_argument("--no-activate", action="store_true",
                   help="issue what each site lacks from every CA it needs, but activate nothing")
    p.set_defaults(func=run)


def _fill_without_activating(rt: Any, site: SiteConfig, report: TickReport) -> None:
    """What a tick would order for `site`, ordered now, with no switch: the decision's CAs in
    order until it has what it needs (each order checked like the daemon's)."""
    certs = rt.db.certs(site.name)
    health = rt.engine.check_site(site, certs)
    d = policy.decide(site, certs, health, distrusted=frozenset(rt.db.distrusted(site.name)),
                      now=rt.engine.clock(),
                      expiry_margin=timedelta(seconds=rt.config.daemon.expiry_margin),
                      revoked=frozenset(rt.db.revoked(site.name)))
    report.decisions.append(d)
    if not d.need:
        return
    got = 0
    book = OrderBook()
    held: list[str] = []
    for ca in d.replenish_from:
        if got >= d.need:
            break
        why = rt.engine.hold(site, ca, book)
        if why is not None:
            held.append(f"{ca}: {why.message}")
            continue
        got += int(rt.engine.order(site, ca, report=report) is not None)
        book.orders.pop(ca, None)
    if got < d.need:
        text = "; ".join(held) if held else (
            "no CA left to ask (the others are the active one's or distrusted)"
            if not d.replenish_from else "see the failures above")
        rt.engine.record(report, site.name, EventKind.STANDBY_MISSING,
                         f"needs {d.need} new certificate(s), got {got}; {text}",
                         need=d.need, got=got, candidates=list(d.replenish_from))


def _line(ev: Event) -> str:
    if ev.kind in PROBLEMS:
        return f"FAILED {ev.site}: {PROBLEMS[ev.kind]}: {ev.message}"
    return f"{ev.site}: {ev.message}"


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    sites = [s for s in rt.config.sites if args.site in (None, s.name)]
    if args.site and not sites:
        raise CertFailoverError(f"no site named {args.site!r} in {rt.config.path}")
    if args.ca:
        for site in sites:
            if args.ca not in site.cas:
                raise CertFailoverError(f"CA {args.ca!r} is not in site {site.name}'s cas "
                                        f"({', '.join(site.cas)})")
    issued: list[Any] = []
    failed: list[dict[str, Any]] = []
    events: list[Event] = []
    for n, site in enumerate(sites, 1):
        if not args.json and len(sites) > 1:
            print(f"[{n}/{len(sites)}] {site.name}", file=sys.stderr)
        report = TickReport()
        if args.ca:
            try:
                rt.engine.issue(site, args.ca, report=report)
            except CertFailoverError as exc:
                rt.engine.record(report, site.name, EventKind.ISSUANCE_FAILED,
                                 f"could not issue from {args.ca}: {exc}", ca=args.ca)
        elif args.no_activate:
            _fill_without_activating(rt, site, report)
        else:
            report = rt.engine.tick([site.name], replenish=True)
        for ev in report.events:
            if ev.site != site.name:
                continue
            events.append(ev)
            if ev.kind == "issued":
                cert = rt.db.cert(str(ev.data.get("cert")))
                issued.append(cert if cert is not None else ev.data.get("cert"))
            elif ev.kind in PROBLEMS:
                failed.append({"site": site.name, "kind": ev.kind, "ca": ev.data.get("ca"),
                               "cert": ev.data.get("cert"), "error": ev.message})
    lines = [_line(ev) for ev in events if ev.kind in PROBLEMS or ev.kind in NEWS]
    if not issued and not failed:
        lines.append("nothing to issue: " + ("every site has" if len(sites) > 1 or not sites
                                             else f"site {sites[0].name} has")
                     + " its certificates")
    elif failed:
        lines.append(f"{len(issued)} certificate(s) issued, {len(failed)} problem(s): see the "
                     "FAILED lines")
    emit(args, {"issued": [to_jsonable(c) for c in issued], "failed": failed,
                "events": events}, "\n".join(lines))
    return 1 if failed else 0
