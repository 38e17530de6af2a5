"""`certfailover check`: run every check now; Nagios/Icinga exit codes.

0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. CRITICAL when a site serves a failing certificate or
has none; WARNING when a site lacks a healthy standby or any certificate has a warning.
`check` records its findings in the store (status and the daemon read them), so it opens the
store for writing: on a read-only or damaged store it answers UNKNOWN naming the path.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import CertFailoverError, StoreError
from ..model import CertState, Severity, to_jsonable, utcnow
from ..policy import healthy_standbys
from .common import emit, runtime

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="check every certificate now (exit 0 OK, 1 WARNING, "
                                     "2 CRITICAL, 3 UNKNOWN)")
    p.add_argument("site", nargs="?", help="only this site")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        try:
            rt = runtime(args)
        except StoreError as exc:  # e.g. a read-only store: check writes its findings
            raise StoreError(f"{exc} (`check` records its findings in the store and needs to "
                             "write it; `certfailover status` reads a read-only store)") from exc
        sites = [s for s in rt.config.sites if args.site in (None, s.name)]
        if args.site and not sites:
            raise CertFailoverError(f"no site named {args.site!r}")
        result = []
        state = "OK"
        problems: list[str] = []
        progress = sys.stderr.isatty() and len(sites) > 1  # a plugin's stdout stays one line
        for n, site in enumerate(sites, 1):
            if progress:
                print(f"[{n}/{len(sites)}] {site.name}", file=sys.stderr, flush=True)
            certs = rt.db.certs(site.name)
            health = rt.engine.check_site(site, certs)
            active = next((c for c in certs if c.state is CertState.ACTIVE), None)
            standbys = healthy_standbys(certs, health, distrusted=rt.db.distrusted(site.name).keys())
            site_state = "OK"
            if active is None or not health[active.id].healthy:
                site_state = "CRITICAL"
                problems.append(f"{site.name}: " + ("no active certificate" if active is None else
                                "; ".join(health[active.id].reasons(Severity.FAIL))))
            elif len(standbys) < site.min_standbys:
                site_state = "WARNING"
                problems.append(f"{site.name}: {len(standbys)} healthy standby(s), want {site.min_standbys}")
            elif any(h.severity is not Severity.OK for h in health.values()):
                site_state = "WARNING"
                problems.append(f"{site.name}: " + "; ".join(
                    r for h in health.values() for r in h.reasons()))
            if EXIT[site_state] > EXIT[state]:
                state = site_state
            result.append({"site": site.name, "state": site_state,
                           "active": active.id if active else None,
                           "standbys_healthy": len(standbys),
                           "certs": {cid: to_jsonable(h) for cid, h in health.items()}})
    except CertFailoverError as exc:
        state, problems, result = "UNKNOWN", [str(exc)], []
    except Exception as exc:  # noqa: BLE001 - a monitoring plugin must answer UNKNOWN
        state, problems, result = "UNKNOWN", [f"{type(exc).__name__}: {exc}"], []
    summary = f"CERTFAILOVER {state} - " + ("; ".join(problems) if problems else
                                            f"{len(result)} site(s) healthy with standbys")
    emit(args, {"state": state, "exit": EXIT[state], "summary": summary, "sites": result,
                "time": utcnow()}, summary)
    sys.stdout.flush()
    return EXIT[state]
