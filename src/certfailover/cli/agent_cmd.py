"""`certfailover agent` (a fleet host) and `certfailover fleet status|rotate-kek`.

    certfailover agent --host web1            run: switch on NOTIFY, poll as the fallback
    certfailover agent --host web1 --stage    before the web server's first start: write and
                                              link the desired certificates, then exit
    certfailover agent --host web1 --once     one pass (exit 1 when a site did not verify)
    certfailover fleet status [--site S]      desired vs served per host (stale: no report)
    certfailover fleet rotate-kek             re-seal every record under [fleet] kek

See docs/fleet.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from .common import emit, load_config, table

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("agent", help="fleet agent: serve the desired certificates on this host")
    p.add_argument("--host", help="this host's name in the fleet (default: [fleet] host)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit")
    mode.add_argument("--stage", action="store_true",
                      help="write and link the desired certificates of sites that have no live "
                           "link yet (before the web server first starts), then exit")
    p.set_defaults(func=run_agent)
    f = sub.add_parser("fleet", help="fleet state (desired vs served per host), KEK rotation")
    actions = f.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    st = actions.add_parser("status", help="desired vs served certificate per site and host")
    st.add_argument("--site")
    st.set_defaults(func=run_status)
    rot = actions.add_parser("rotate-kek", help="re-seal every record under [fleet] kek "
                                                "(previous_keks still read the old ones)")
    rot.set_defaults(func=run_rotate)


# the fleet modules are imported by the commands that use them: the rest of the CLI starts
# without the PostgreSQL driver (an optional dependency)


def run_agent(args: argparse.Namespace) -> int:
    from ..fleet.setup import agent_from_config, fleet_of

    config = load_config(args)
    agent = agent_from_config(config, args.host)
    try:
        for note in agent.start():
            log.warning("recovered interrupted switch: %s", note)
        if args.stage:
            n = agent.stage()
            emit(args, {"host": agent.host, "staged": n},
                 f"{agent.host}: {n} site(s) written and linked")
            return 0
        if args.once:
            r = agent.sync()
            emit(args, {"host": agent.host, "sites": r.checked, "changed": list(r.changed),
                        "failed": dict(r.failed), "prefetched": r.prefetched,
                        "prefetch_failed": dict(r.prefetch_failed)},
                 f"{agent.host}: {r.checked} site(s), {len(r.changed)} switched and verified, "
                 f"{len(r.failed)} failed" + "".join(f"\n  {s}: {m}" for s, m in r.failed.items())
                 + f"\n{agent.host}: {r.prefetched} standby certificate(s) prefetched"
                 + "".join(f"\n  {c}: {m}" for c, m in r.prefetch_failed.items()))
            return 1 if r.failed else 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        log.info("agent %s: %d site(s), database %s", agent.host, len(agent.sites),
                 agent.engine.url.render_as_string(hide_password=True))
        agent.run(fleet_of(config).database, stop, poll=fleet_of(config).poll)
        return 0
    finally:
        agent.engine.dispose()


def _short(sha: str | None) -> str:
    return sha[:16] if sha else "-"


def run_status(args: argparse.Namespace) -> int:
    from ..fleet.controller import progress
    from ..fleet.coord import make_engine
    from ..fleet.setup import fleet_of

    config = load_config(args)
    fleet = fleet_of(config)
    engine = make_engine(fleet.database, "certfailover fleet status")
    try:
        views = progress(engine, site=args.site, stale_after=fleet.stale_after)
    finally:
        engine.dispose()
    rows: list[dict[str, Any]] = [
        {"site": v.site, "host": v.host, "desired": v.desired, "served": v.served,
         "desired_chain": v.desired_chain, "served_chain": v.served_chain,
         "verified_at": v.verified_at, "reported": v.reported, "error": v.error,
         "state": "stale" if v.stale else "ok" if v.converged else
                  "error" if v.error else "switching"} for v in views]
    # a chain (docs/chains.md) by the first 12 hex digits of its digest; "-": none named/known
    text = table([[r["site"], r["host"], _short(r["desired"]), _short(r["desired_chain"])[:12],
                   _short(r["served"]), _short(r["served_chain"])[:12], r["state"],
                   r["error"][:60]] for r in rows],
                 ["SITE", "HOST", "DESIRED", "CHAIN", "SERVED", "CHAIN", "STATE", "ERROR"]) \
        if rows else "no agent has reported yet"
    emit(args, rows, text)
    return 0 if all(r["state"] == "ok" for r in rows) else 1


def run_rotate(args: argparse.Namespace) -> int:
    from ..fleet import sealed
    from ..fleet.coord import make_engine
    from ..fleet.setup import fleet_of

    config = load_config(args)
    fleet = fleet_of(config)
    engine = make_engine(fleet.database, "certfailover fleet rotate-kek")
    try:
        n = sealed.rotate(engine, fleet.keyring)
        left = sealed.kek_ids(engine)
    finally:
        engine.dispose()
    emit(args, {"resealed": n, "records_by_key_id": left},
         f"re-sealed {n} record(s) under key id {fleet.keyring.current.id}; records per key id: "
         + (", ".join(f"{k}: {c}" for k, c in sorted(left.items())) or "none"))
    return 0
