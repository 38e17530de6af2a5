"""`certfailover events`: the audit log as a timeline."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ..errors import InputError
from .common import emit, load_config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("events", help="show the event timeline")
    p.add_argument("--site")
    p.add_argument("--since", help="ISO 8601 time (UTC if no offset)")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..wiring import open_store
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError as exc:
            raise InputError(f"--since {args.since!r} is not an ISO 8601 time") from exc
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    db, _ = open_store(load_config(args), read_only=True)
    events = db.events(site=args.site, since=since, limit=args.limit)
    emit(args, {"events": events}, "\n".join(
        f"{e.time:%Y-%m-%d %H:%M:%S}Z  {e.site:<16} {e.kind:<16} {e.message}" for e in events)
        or "no events")
    return 0
