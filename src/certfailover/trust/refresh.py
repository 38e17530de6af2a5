"""Refresh the root-program snapshot from upstream on a schedule (the daemon's `[trust]` table).

    [trust]
    sources = ["mozilla=https://.../certdata.txt", "chrome=https://.../root_store.textproto"]
    pools = []                 # extra certificates to resolve hash-only roots
    refresh = "1d"             # how often
    snapshot = "/var/lib/certfailover/trust-snapshot.json.gz"   # default: <store>/trust-snapshot.json.gz

Programs without a source are carried over from the current snapshot. A failed refresh keeps
the current snapshot and is reported; it is retried at the next interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import _Table
from ..errors import CertFailoverError, ConfigError
from .snapshot import PACKAGED_SNAPSHOT, read_snapshot, save_snapshot
from .sources.load import SourceSpec, update_snapshot


@dataclass(frozen=True)
class TrustSettings:
    snapshot: Path | None  # None: the default snapshot ($CERTFAILOVER_TRUST_SNAPSHOT or packaged)
    sources: tuple[SourceSpec, ...] = ()
    pools: tuple[str, ...] = ()
    refresh: timedelta = timedelta(days=1)


def settings_from_config(raw: Mapping[str, Any], *, file: str, store: Path) -> TrustSettings:
    from ..schedule import parse_duration

    t = _Table(file, "[trust]", dict(raw))
    sources = t.str_list("sources", ())
    try:
        specs = tuple(SourceSpec.parse(s) for s in sources)
    except CertFailoverError as exc:
        raise t.err("sources", str(exc)) from exc
    try:
        refresh = parse_duration(t.get("refresh", (str, int, float), "1d"))
    except ValueError as exc:
        raise t.err("refresh", str(exc)) from exc
    snap = t.get("snapshot", str, None)
    pools = t.str_list("pools", ())
    t.check_unknown()
    path = Path(snap) if snap else (store / "trust-snapshot.json.gz" if specs else None)
    if refresh <= timedelta(0):
        raise ConfigError(file, "[trust].refresh", "must be positive")
    return TrustSettings(path, specs, pools, refresh)


class Refresher:
    """Runs the refresh when due; the check re-reads the file by its mtime."""

    def __init__(self, settings: TrustSettings) -> None:
        self.settings = settings
        self.next_due: datetime | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.sources) and self.settings.snapshot is not None

    def due(self, now: datetime) -> bool:
        return self.enabled and (self.next_due is None or now >= self.next_due)

    def run(self, now: datetime) -> str:
        """Rebuild the snapshot; returns a summary. Raises CertFailoverError on failure."""
        assert self.settings.snapshot is not None
        self.next_due = now + self.settings.refresh
        out = self.settings.snapshot
        if not out.exists():  # start from the packaged programs; sources replace theirs
            save_snapshot(read_snapshot(PACKAGED_SNAPSHOT), out)
        snap = update_snapshot(list(self.settings.sources), output=out,
                               pools=list(self.settings.pools), now=now)
        return ", ".join(f"{n} {len(p.roots)} roots" for n, p in sorted(snap.programs.items()))
