"""`certfailover issue`: obtain certificates now (fill each site to 1 active + min_standbys)."""

from __future__ import annotations

import argparse
import sys

from ..errors import CertFailoverError
from ..model import to_jsonable
from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("issue", help="issue certificates now: one from --ca, or what each site lacks")
    p.add_argument("site", nargs="?", help="only this site")
    p.add_argument("--ca", help="issue one new certificate from this CA (a fresh key)")
    p.add_argument("--no-activate", action="store_true",
                   help="do not activate the first certificate of a site")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    sites = [s for s in rt.config.sites if args.site in (None, s.name)]
    if args.site and not sites:
        raise CertFailoverError(f"no site named {args.site!r} in {rt.config.path}")
    issued, failed = [], []
    for n, site in enumerate(sites, 1):
        if not args.json and len(sites) > 1:
            print(f"[{n}/{len(sites)}] {site.name}", file=sys.stderr)
        if args.ca:
            if args.ca not in site.cas:
                raise CertFailoverError(f"CA {args.ca!r} is not in site {site.name}'s cas")
            try:
                issued.append(rt.engine.issue(site, args.ca))
            except CertFailoverError as exc:
                failed.append({"site": site.name, "ca": args.ca, "error": str(exc)})
            continue
        report = rt.engine.tick([site.name], replenish=True) if not args.no_activate else None
        if report is not None:
            for ev in report.events:
                if ev.kind == "issued":
                    issued.append(ev.data.get("cert"))
                if ev.kind == "issuance_failed":
                    failed.append({"site": site.name, "ca": ev.data.get("ca"), "error": ev.message})
    text = "\n".join([f"issued {c.id if hasattr(c, 'id') else c}" for c in issued] +
                     [f"FAILED {f['site']} from {f['ca']}: {f['error']}" for f in failed]) \
        or "nothing to issue: every site has its certificates"
    emit(args, {"issued": [to_jsonable(c) for c in issued], "failed": failed}, text)
    return 1 if failed else 0
