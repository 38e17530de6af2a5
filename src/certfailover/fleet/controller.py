"""The controller's side of a fleet: publish the desired certificate, watch every host converge.

`publish()` runs in the leader's fenced transaction (`Leader.fenced()`): the sealed material,
the `fleet_desired` rows and ONE notice to the agents commit together or not at all, and a
stale leader's publish is refused. A mass failover publishes all its sites in one call.

A site's switch is done when every host serving it (a `fleet_served` row per host and site)
reports the desired leaf as verified. `laggards()` lists the hosts that have not converged
`after` seconds after the switch was published; `alerts()` turns each into one
`fleet_not_converged` event (once per site, host and desired leaf).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..events import EventKind
from ..model import Event
from ..store.db import fleet_desired, fleet_served
from . import coord, sealed
from .sealed import Keyring, Plain

__all__ = ["Desired", "HostView", "Laggard", "alerts", "laggards", "progress", "publish"]


@dataclass(frozen=True)
class Desired:
    site: str
    cert_id: str
    sha256: str
    plain: Plain


@dataclass(frozen=True)
class HostView:
    """One site on one host: what the controllers want, what the host proved it serves."""

    site: str
    host: str
    desired: str | None
    served: str | None
    verified_at: datetime | None
    reported: datetime
    error: str
    stale: bool  # the host has not reported for longer than `stale_after`

    @property
    def converged(self) -> bool:
        return self.desired is not None and self.served == self.desired


@dataclass(frozen=True)
class Laggard:
    site: str
    host: str
    desired: str
    served: str | None
    since: datetime  # when the desired certificate was published
    error: str


def publish(conn: sa.Connection, ring: Keyring, items: Sequence[Desired], *,
            epoch: int = 0) -> int:
    """Seal and record the desired certificate of every item, and notify the agents once (at
    commit). Run it in `Leader.fenced()`; returns how many sites changed."""
    if not items:
        return 0
    now = datetime.now(UTC)
    current: dict[str, str] = {}
    for names in coord.chunks([d.site for d in items]):
        current.update((r.site, r.cert_id) for r in conn.execute(
            sa.select(fleet_desired.c.site, fleet_desired.c.cert_id)
            .where(fleet_desired.c.site.in_(names))))
    todo = [d for d in items if current.get(d.site) != d.cert_id]
    if not todo:
        return 0
    sealed.seal_many(conn, ring, [(d.cert_id, d.site, d.plain) for d in todo])
    desired = [{"site": d.site, "cert_id": d.cert_id, "sha256": d.sha256, "epoch": epoch,
                "since": now} for d in todo]
    for part in coord.chunks(desired):
        ins = pg_insert(fleet_desired).values(part)
        conn.execute(ins.on_conflict_do_update(index_elements=["site"], set_={
            "cert_id": ins.excluded.cert_id, "sha256": ins.excluded.sha256,
            "epoch": ins.excluded.epoch, "since": ins.excluded.since}))
    coord.notify(conn, todo[0].site if len(todo) == 1 else f"{len(todo)} sites")
    return len(todo)


def progress(engine: sa.Engine, *, site: str | None = None,
             stale_after: float = 120.0) -> list[HostView]:
    """Desired vs served for every (site, host) pair, sorted by site and host."""
    q = (sa.select(fleet_served, fleet_desired.c.sha256.label("want"))
         .select_from(fleet_served.outerjoin(fleet_desired,
                                             fleet_desired.c.site == fleet_served.c.site))
         .order_by(fleet_served.c.site, fleet_served.c.host))
    if site is not None:
        q = q.where(fleet_served.c.site == site)
    now = datetime.now(UTC)
    with engine.connect() as conn:
        return [HostView(r.site, r.host, r.want, r.sha256, r.verified_at, r.reported, r.error,
                         (now - r.reported).total_seconds() > stale_after)
                for r in conn.execute(q)]


def laggards(engine: sa.Engine, *, after: float, now: datetime | None = None) -> list[Laggard]:
    """Hosts that do not report the desired leaf `after` seconds after it was published."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=after)
    q = (sa.select(fleet_served.c.site, fleet_served.c.host, fleet_desired.c.sha256,
                   fleet_served.c.sha256.label("served"), fleet_desired.c.since,
                   fleet_served.c.error)
         .select_from(fleet_served.join(fleet_desired,
                                        fleet_desired.c.site == fleet_served.c.site))
         .where(fleet_desired.c.since <= cutoff,
                sa.or_(fleet_served.c.sha256.is_(None),
                       fleet_served.c.sha256 != fleet_desired.c.sha256))
         .order_by(fleet_served.c.site, fleet_served.c.host))
    with engine.connect() as conn:
        return [Laggard(r.site, r.host, r.sha256, r.served, r.since, r.error)
                for r in conn.execute(q)]


def alerts(items: Iterable[Laggard], seen: set[tuple[str, str, str]],
           now: datetime | None = None) -> list[Event]:
    """One `fleet_not_converged` event per (site, host, desired leaf) not alerted yet; `seen`
    remembers them (the caller keeps it across passes)."""
    out: list[Event] = []
    at = now or datetime.now(UTC)
    for lag in items:
        key = (lag.site, lag.host, lag.desired)
        if key in seen:
            continue
        seen.add(key)
        waited = int((at - lag.since).total_seconds())
        out.append(Event(at, lag.site, EventKind.FLEET_NOT_CONVERGED,
                         f"host {lag.host} does not serve the new certificate of {lag.site} "
                         f"{waited} s after the switch; it serves "
                         f"{(lag.served or 'nothing verified')[:16]}"
                         + (f" ({lag.error})" if lag.error else ""),
                         {"host": lag.host, "desired": lag.desired, "served": lag.served,
                          "error": lag.error}))
    return out
