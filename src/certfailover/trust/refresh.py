"""Refresh the root-program snapshot from upstream on a schedule (the `[trust]` table, parsed
by config.load into config.TrustSettings).

    [trust]
    sources = ["mozilla=https://.../certdata.txt", "chrome=https://.../root_store.textproto"]
    pools = []                 # extra certificates to resolve hash-only roots
    refresh = "1d"             # how often
    snapshot = "/var/lib/certfailover/trust-snapshot.json.gz"   # default: <store>/trust-snapshot.json.gz
    allow_shrink = false       # accept a program losing more than 10% of its roots

Programs without a source are carried over from the current snapshot. A failed refresh keeps
the current snapshot and is reported; it is retried at the next interval. Incomplete upstream
data, an empty program, or a program losing more than ``MAX_SHRINK`` (10%) of its trusted
roots is a failed refresh, unless ``allow_shrink`` (set it for the one refresh that should
accept the drop, then remove it).
"""

from __future__ import annotations

from datetime import datetime

from ..config import TrustSettings
from .programs import RootProgram
from .snapshot import PACKAGED_SNAPSHOT, read_snapshot, save_snapshot
from .sources.load import update_snapshot


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
                               pools=list(self.settings.pools), now=now,
                               allow_shrink=self.settings.allow_shrink)
        return ", ".join(f"{n} {root_counts(p)}" for n, p in sorted(snap.programs.items()))


def root_counts(prog: RootProgram) -> str:
    """"121 trusted roots, 46 distrust entries": explicit distrust entries are no roots."""
    distrust = len(prog.roots) - prog.trusted_count()
    text = f"{prog.trusted_count()} trusted roots"
    return text + (f", {distrust} distrust entries" if distrust else "")
