"""`certfailover status`: per site, the active and standby certificates and their health."""

from __future__ import annotations

import argparse

from ..chains import ChainJudge
from ..errors import InputError, StoreError
from ..model import utcnow
from ..status import site_status
from .common import emit, load_config, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show certificates per site (from the last check)")
    p.add_argument("site", nargs="?", help="only this site")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..wiring import open_store
    config = load_config(args)
    db, vault = open_store(config, read_only=True)
    now = utcnow()
    sites = [s for s in config.sites if args.site in (None, s.name)]
    if args.site and not sites:
        raise InputError(f"no site named {args.site!r} in {config.path}")
    judge = ChainJudge.for_snapshot(config.trust.snapshot)
    statuses = [site_status(db, s, now, vault=vault, daemon=config.daemon, judge=judge)
                for s in sites]
    for st, site in zip(statuses, sites, strict=True):
        try:  # a broken live link is shown, not fatal: status is how the operator finds it
            vault.live_target(site.name)
        except StoreError as exc:
            st["notes"].append(str(exc))
    data = {"time": now, "sites": statuses}
    if args.json:
        emit(args, data)
        return 0
    out: list[str] = []
    for s in statuses:
        out.append(f"site {s['site']}  ({', '.join(s['domains'])})  "
                   f"healthy standbys: {s['standbys_healthy']}/{s['min_standbys']}")
        rows = []
        for c in s["certs"]:
            trust = ", ".join(f"{p}: {v}" for p, v in sorted(c["trust"].items())) or "-"
            indep = "; ".join(c["independence"]) if c["state"] != "active" else "-"
            rows.append(["*" if c["state"] == "active" else " ", c["ca"], c["serial"][:16],
                         f"{c['days_left']:.1f}", c["health"], trust,
                         (indep or "independent") if c["state"] != "active" else "-",
                         c["summary"][:60]])
        out.append(table(rows, [" ", "CA", "SERIAL", "DAYS", "HEALTH", "TRUST", "INDEPENDENCE",
                                "FINDINGS"]) if rows
                   else "  (no certificates yet: run `certfailover issue`)")
        for note in s["notes"]:
            out.append(f"  ! {note}")
        out += [f"  {line}" for line in s["chain_lines"]]  # docs/chains.md
        out.append("")
    emit(args, data, "\n".join(out) or "no sites configured")
    return 0
