"""The controller's side of a fleet: publish the desired certificate, watch every host converge.

`publish()` runs in the leader's fenced transaction (`Leader.fenced()`): the sealed material,
the `fleet_desired` rows and ONE notice to the agents commit together or not at all, and a
stale leader's publish is refused. A mass failover publishes all its sites in one call.

A site's switch is done when every host serving it (a `fleet_served` row per host and site)
reports the desired leaf as verified, with the desired chain when one is named (`chain`:
`sealed.chain_digest` of the chain to serve; a chain switch keeps the leaf and changes only
it, so a host on the right leaf with another chain has not converged). `laggards()` lists the hosts that have not converged
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
from ..store.db import fleet_desired, fleet_sealed, fleet_served
from . import coord, sealed
from .sealed import Keyring, Plain

__all__ = ["Desired", "HostView", "Laggard", "alerts", "failed_attempt", "laggards",
           "matches", "progress", "publish"]


@dataclass(frozen=True)
class Desired:
    site: str
    cert_id: str
    sha256: str
    plain: Plain  # the certificate with every stored chain (the agents serve `chain` of them)
    chain: str | None = None  # sealed.chain_digest of the chain to serve (None: any)


def matches(want_sha: str | None, want_chain: str | None, served_sha: str | None,
            served_chain: str | None) -> bool:
    """A host serves what is desired: the leaf, and the chain when one is named."""
    return want_sha is not None and served_sha == want_sha and \
        (want_chain is None or served_chain == want_chain)


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
    desired_chain: str | None = None  # chain digest desired (None: any chain)
    served_chain: str | None = None  # chain digest the host proved with `served`
    desired_cert: str | None = None  # the desired certificate's id
    since: datetime | None = None  # when it was published (the controller's clock)

    @property
    def converged(self) -> bool:
        return matches(self.desired, self.desired_chain, self.served, self.served_chain)

    def laggard(self) -> Laggard | None:
        """This host as a laggard of the desired certificate (None: converged, or nothing
        desired)."""
        if self.converged or self.desired is None or self.since is None:
            return None
        return Laggard(self.site, self.host, self.desired, self.served, self.since, self.error,
                       self.desired_chain, self.served_chain)


def failed_attempt(v: HostView) -> bool:
    """The host reported an error from an attempt at the certificate desired now, after it
    was published: its error names that attempt, and its report is not older than the publish
    (an error kept from an earlier desired certificate, or from before the publish, is not)."""
    if not v.error or v.desired_cert is None or v.since is None or v.reported < v.since:
        return False
    return coord.attempt_failed(coord.attempt(v.desired_cert, v.desired_chain)) in v.error


@dataclass(frozen=True)
class Laggard:
    site: str
    host: str
    desired: str
    served: str | None
    since: datetime  # when the desired certificate was published
    error: str
    desired_chain: str | None = None
    served_chain: str | None = None


def publish(conn: sa.Connection, ring: Keyring, items: Sequence[Desired], *,
            epoch: int = 0) -> int:
    """Seal and record the desired certificate (and chain) of every item, and notify the agents
    once (at commit). Run it in `Leader.fenced()`; returns how many sites changed. A site whose
    desired certificate and chain are already these is left alone; a chain switch (the same
    certificate, another chain) is a change: the record is sealed again with every chain. A
    certificate whose record exists (sealed when it was stored) is not sealed again."""
    if not items:
        return 0
    now = datetime.now(UTC)
    current: dict[str, tuple[str, str | None]] = {}
    for names in coord.chunks([d.site for d in items]):
        current.update((r.site, (r.cert_id, r.chain)) for r in conn.execute(
            sa.select(fleet_desired.c.site, fleet_desired.c.cert_id, fleet_desired.c.chain)
            .where(fleet_desired.c.site.in_(names))))
    todo = [d for d in items if current.get(d.site) != (d.cert_id, d.chain)]
    if not todo:
        return 0
    # controllers seal every certificate (with every chain) when they store it: a record that
    # exists is sealed again only for a chain other than chain 0 (to be sure it has it)
    have: set[str] = set()
    for ids in coord.chunks(sorted({d.cert_id for d in todo})):
        have.update(str(r) for r in conn.execute(
            sa.select(fleet_sealed.c.cert_id).where(fleet_sealed.c.cert_id.in_(ids))).scalars())
    reseal = [d for d in todo if d.cert_id not in have or (
        d.chain is not None and d.chain != sealed.chain_digest(d.plain.chain_pem))]
    sealed.seal_many(conn, ring, list({d.cert_id: (d.cert_id, d.site, d.plain)
                                       for d in reseal}.values()))
    desired = [{"site": d.site, "cert_id": d.cert_id, "sha256": d.sha256, "chain": d.chain,
                "epoch": epoch, "since": now} for d in todo]
    for part in coord.chunks(desired):
        ins = pg_insert(fleet_desired).values(part)
        conn.execute(ins.on_conflict_do_update(index_elements=["site"], set_={
            "cert_id": ins.excluded.cert_id, "sha256": ins.excluded.sha256,
            "chain": ins.excluded.chain, "epoch": ins.excluded.epoch,
            "since": ins.excluded.since}))
    coord.notify(conn, todo[0].site if len(todo) == 1 else f"{len(todo)} sites")
    return len(todo)


def progress(engine: sa.Engine, *, site: str | None = None,
             stale_after: float = 120.0,
             sites: Sequence[str] | None = None) -> list[HostView]:
    """Desired vs served for every (site, host) pair (of `site`, or of `sites`), sorted by site
    and host."""
    q = (sa.select(fleet_served, fleet_desired.c.sha256.label("want"),
                   fleet_desired.c.chain.label("want_chain"),
                   fleet_desired.c.cert_id.label("want_cert"), fleet_desired.c.since)
         .select_from(fleet_served.outerjoin(fleet_desired,
                                             fleet_desired.c.site == fleet_served.c.site))
         .order_by(fleet_served.c.site, fleet_served.c.host))
    if site is not None:
        q = q.where(fleet_served.c.site == site)
    if sites is not None:
        q = q.where(fleet_served.c.site == sa.func.any(
            sa.cast(sa.bindparam("sites", list(sites)), sa.ARRAY(sa.Text))))
    now = datetime.now(UTC)
    with engine.connect() as conn:
        return [HostView(r.site, r.host, r.want, r.sha256, r.verified_at, r.reported, r.error,
                         (now - r.reported).total_seconds() > stale_after, r.want_chain,
                         r.chain, r.want_cert, r.since)
                for r in conn.execute(q)]


def laggards(engine: sa.Engine, *, after: float, now: datetime | None = None,
             since_after: datetime | None = None, sites: Sequence[str] = ()) -> list[Laggard]:
    """Hosts that do not report the desired leaf (and chain, when one is named) `after` seconds
    after it was published. With `since_after`: only switches published after it, and those of
    `sites` whenever they were published (one query either way)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=after)
    q = (sa.select(fleet_served.c.site, fleet_served.c.host, fleet_desired.c.sha256,
                   fleet_served.c.sha256.label("served"), fleet_desired.c.since,
                   fleet_served.c.error, fleet_desired.c.chain,
                   fleet_served.c.chain.label("served_chain"))
         .select_from(fleet_served.join(fleet_desired,
                                        fleet_desired.c.site == fleet_served.c.site))
         .where(fleet_desired.c.since <= cutoff,
                sa.or_(fleet_served.c.sha256.is_(None),
                       fleet_served.c.sha256 != fleet_desired.c.sha256,
                       sa.and_(fleet_desired.c.chain.is_not(None),
                               sa.or_(fleet_served.c.chain.is_(None),
                                      fleet_served.c.chain != fleet_desired.c.chain))))
         .order_by(fleet_served.c.site, fleet_served.c.host))
    if since_after is not None:
        recent = fleet_desired.c.since > since_after
        q = q.where(sa.or_(recent, fleet_desired.c.site == sa.func.any(
            sa.cast(sa.bindparam("sites", list(sites)), sa.ARRAY(sa.Text)))) if sites else recent)
    with engine.connect() as conn:
        return [Laggard(r.site, r.host, r.sha256, r.served, r.since, r.error, r.chain,
                        r.served_chain)
                for r in conn.execute(q)]


def alerts(items: Iterable[Laggard], seen: set[tuple[str, str, str]],
           now: datetime | None = None) -> list[Event]:
    """One `fleet_not_converged` event per (site, host, desired leaf and chain) not alerted
    yet; `seen` remembers them (the caller keeps it across passes)."""
    out: list[Event] = []
    at = now or datetime.now(UTC)
    for lag in items:
        key = (lag.site, lag.host,
               lag.desired + (f" chain {lag.desired_chain}" if lag.desired_chain else ""))
        if key in seen:
            continue
        seen.add(key)
        waited = int((at - lag.since).total_seconds())
        if lag.served == lag.desired and lag.desired_chain is not None:  # a chain switch
            what = (f"the new chain ({lag.desired_chain[:16]}) of {lag.site}'s certificate "
                    f"{waited} s after the switch; it serves the same leaf with chain "
                    f"{(lag.served_chain or 'unknown')[:16]}")
        else:
            what = (f"the new certificate of {lag.site} {waited} s after the switch; it "
                    f"serves {(lag.served or 'nothing verified')[:16]}")
        out.append(Event(at, lag.site, EventKind.FLEET_NOT_CONVERGED,
                         f"host {lag.host} does not serve {what}"
                         + (f" ({lag.error})" if lag.error else ""),
                         {"host": lag.host, "desired": lag.desired, "served": lag.served,
                          "desired_chain": lag.desired_chain,
                          "served_chain": lag.served_chain, "error": lag.error}))
    return out
