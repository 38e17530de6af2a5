"""`certfailover ct`: the Certificate Transparency watch by hand.

`ct poll` runs one pass over the `[ct]` log list now (what the daemon does every `[ct]
interval`): events and notifications as the daemon records them. Exit 0 when every log
verified and nothing unexpected was found, 1 when a log could not be read, 2 when a log is
inconsistent or a certificate certfailover did not obtain was found.
`ct status` shows the stored position in each log.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import CertFailoverError
from .common import add_notify_timeout, emit, load_config, runtime, settle_notifications, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ct", help="Certificate Transparency watch: poll the logs now, or show "
                                  "the position in each")
    csub = p.add_subparsers(dest="ct_command", required=True)
    poll = csub.add_parser("poll", help="one pass over the [ct] log list now (exit 0 clean, "
                                        "1 a log unreadable, 2 unexpected certificate or "
                                        "inconsistent log)")
    add_notify_timeout(poll)
    poll.set_defaults(func=run_poll)
    st = csub.add_parser("status", help="the verified position in each log")
    st.set_defaults(func=run_status)


def run_poll(args: argparse.Namespace) -> int:
    from ..ct.watch import Watch
    rt = runtime(args)
    settings = rt.config.ct
    if settings is None:
        raise CertFailoverError(f"{rt.config.path}: no [ct] table: the CT watch is not "
                                "configured (see docs/ct.md)")

    def record(site: str, kind: Any, message: str, data: dict[str, Any]) -> None:
        rt.engine.record(None, site, kind, message, **data)

    watch = Watch(settings, rt.db, {s.name: s.domains for s in rt.config.sites}, record=record,
                  site_cas={s.name: s.cas for s in rt.config.sites})
    results = watch.poll()
    deliveries = settle_notifications(args, rt)
    code = 0
    for r in results:
        if r.unexpected or r.inconsistent:
            code = 2
        elif r.problem and code == 0:
            code = 1
    rows = [[r.log, f"{r.from_size}->{r.to_size}", str(r.entries), str(r.matched),
             str(len(r.unexpected)), f"{r.seconds:.1f}s", r.problem or "ok"] for r in results]
    text = table(rows, ["log", "tree", "entries", "matched", "unexpected", "time", "state"])
    for r in results:
        for u in r.unexpected:
            text += (f"\nUNEXPECTED {u.site}: {'precert' if u.precert else 'cert'} "
                     f"{', '.join(u.names)} from {u.issuer} serial {u.serial} ({u.log} #{u.index})")
    emit(args, {"logs": results, "exit": code, "notifications": deliveries}, text)
    return code


def run_status(args: argparse.Namespace) -> int:
    from ..ct import positions
    from ..wiring import open_store
    db, _ = open_store(load_config(args), read_only=True)
    pos = positions.all_positions(db)
    rows = [[p.url, str(p.tree_size), f"{p.updated:%Y-%m-%d %H:%M:%S}Z", p.problem or "ok"]
            for p in pos]
    emit(args, {"logs": [{"log": p.url, "log_id": p.log_id, "tree_size": p.tree_size,
                          "updated": p.updated, "problem": p.problem} for p in pos]},
         table(rows, ["log", "verified size", "updated", "state"]) if rows else "no CT log polled yet")
    return 0
