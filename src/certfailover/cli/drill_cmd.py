"""`certfailover drill SITE --fail CA [--apply]`: rehearse a CA failure (see drill.py)."""

from __future__ import annotations

import argparse

from ..drill import DrillResult, dry_run, run_drill
from .common import emit, runtime, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("drill", help="rehearse a CA failure: dry run, or --apply to switch to "
                                     "the standby and back, both verified by handshake")
    p.add_argument("site")
    p.add_argument("--fail", required=True, metavar="CA", help="the CA that fails in the drill")
    p.add_argument("--apply", action="store_true",
                   help="really switch to the standby and back (the site changes twice)")
    p.set_defaults(func=run)


def format_result(r: DrillResult) -> str:
    out = [f"drill {r.site}: CA {r.fail_ca} fails ({'applied' if r.applied else 'dry run'})"]
    rows = []
    for label, c in (("active", r.active), ("would serve", r.would_serve)):
        if c is not None:
            rows.append([label, c.id, c.ca, f"{c.days_left:.1f}", c.health,
                         "; ".join(c.reasons)[:60]])
    for c in r.standbys:
        rows.append(["standby", c.id, c.ca, f"{c.days_left:.1f}", c.health,
                     "; ".join(c.reasons)[:60]])
    out.append(table(rows, ["", "CERT", "CA", "DAYS", "HEALTH", "FINDINGS"]))
    for s in r.switches:
        out.append(f"switch {s.step:<10} -> {s.target}: {'ok' if s.ok else 'FAILED'} "
                   f"{s.seconds:.2f}s (total {s.total_seconds:.2f}s) {s.message}")
    out.append(("OK: " if r.ok else "PROBLEM: ") + r.message)
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    result = run_drill(rt.engine, args.site, args.fail) if args.apply else \
        dry_run(rt.engine, args.site, args.fail)
    emit(args, result, format_result(result))
    return 0 if result.ok else 1
