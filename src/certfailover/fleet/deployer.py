"""The controller's deploy port in a fleet: publish the switch, wait until its outcome is known.

`FleetDeployer(server, switches)` is what the engine calls instead of the local deployer when
`[fleet] role = "controller"`. For one batch (a mass failover is one batch per controller: one
publish, one NOTIFY, one reload per agent server):

    1. read each target's material from the controller's vault (the certificate with every
       stored chain) and publish it sealed, with the desired rows (leaf and the chain of the
       target directory, `sealed.chain_digest`), in a fenced transaction: under this
       controller's site leases (`ControllerShare.fenced`: a site whose lease another
       controller took is not written and is reported failed), or the leader's epoch
       (`Leader.fenced`). A chain switch (docs/chains.md: the same certificate, another of its
       chain directories) is published like any switch: the desired leaf stays, the chain
       changes;
    2. watch what the hosts serving each site report (`fleet_served`) until the site's outcome
       is known. A host holds a site's wait while it is live (reported within `stale_after`),
       has not verified the desired leaf AND chain, and has not reported an error from an
       attempt at it since the publish (`controller.failed_attempt`). A site is settled when
       no host holds it; or `lag_grace` seconds after a first host verified it; or
       `converge_timeout` seconds after the publish;
    3. a site verified by at least one host is switched (ok: the engine records it and does
       not decide it again), the message naming the hosts not verified yet; a site no host
       verified is failed (fast when every live host reported an error). Nothing is rolled back
       (docs/fleet.md, "Rollback policy"): the desired certificate stays published.

Hosts not verified are tracked after the switch, not inside it: `track()` (each daemon tick,
one query) raises one `fleet_not_converged` event per (site, host, desired certificate) for
hosts still not converged `converge_timeout` after the publish; a stale host, or a host of a
site that failed at `converge_timeout`, is alerted when the wait ends. One dedup set
(`alerted`) serves both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ..engine import Switch, SwitchResult
from ..errors import CertFailoverError
from ..model import Event
from ..store.vault import Vault
from . import controller, coord, sealed
from .controller import HostView, Laggard
from .coord import Leader
from .sealed import Keyring
from .share import ControllerShare

__all__ = ["FleetDeployer"]

log = logging.getLogger(__name__)

LOOKBACK = 3600.0  # a controller's first track() covers the switches of the last hour
RETRY = 10.0  # a track() the database refused is tried again this much later


def _desired(sw: Switch) -> controller.Desired:
    """What to publish for one switch: the target's certificate with all its chains, and the
    digest of the chain its directory serves. OSError/ValueError when unreadable."""
    where = Path(sw.target.path)
    return controller.Desired(sw.site.name, sw.target.id, sw.target.sha256,
                              sealed.material(where),
                              sealed.chain_digest((where / "chain.pem").read_bytes()))


def _few(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


@dataclass
class _Site:
    """What the wait knows of one site: its hosts by state at the last poll."""

    first: float | None = None  # when a host first verified it (seconds after the publish)
    last: float = 0.0  # when the last host seen verified proved it
    seen: int = 0  # how many hosts had verified it then
    settled: bool = False
    verified: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # live, not verified, no error yet
    failed: dict[str, str] = field(default_factory=dict)  # host -> its error for this switch
    stale: list[str] = field(default_factory=list)  # silent for stale_after: not waited for
    behind: list[HostView] = field(default_factory=list)  # every host not verified

    def read(self, views: Sequence[HostView], want: tuple[str, str | None], now: float) -> None:
        self.verified, self.waiting, self.failed, self.stale, self.behind = [], [], {}, [], []
        for v in views:
            if controller.matches(want[0], want[1], v.served, v.served_chain):
                self.verified.append(v.host)
                continue
            self.behind.append(v)
            if v.stale:
                self.stale.append(v.host)
            elif controller.failed_attempt(v):
                line = v.error.splitlines()[0]
                self.failed[v.host] = line if len(line) <= 300 else line[:300] + "..."
            else:
                self.waiting.append(v.host)
        if self.verified and self.first is None:
            self.first = now
        if len(self.verified) > self.seen:
            self.seen, self.last = len(self.verified), now

    def deadline(self, grace: float, timeout: float) -> float:
        """Seconds after the publish at which this site stops waiting."""
        return timeout if self.first is None else min(timeout, self.first + grace)


class FleetDeployer:
    def __init__(self, fence: Leader | ControllerShare, ring: Keyring, vault: Vault, *,
                 converge_timeout: float = 60.0, record: Callable[[list[Event]], None],
                 poll: float = 0.1, stale_after: float = 120.0,
                 lag_grace: float = 10.0) -> None:
        self.fence, self.ring, self.vault = fence, ring, vault
        self.converge_timeout, self.record, self.poll = converge_timeout, record, poll
        self.stale_after = stale_after  # a host silent this long does not hold the wait
        self.lag_grace = lag_grace  # how long the others may lag once one host verified
        self.alerted: set[tuple[str, str, str]] = set()  # (site, host, desired): said once
        self._watch: dict[str, float] = {}  # site -> when (monotonic) to look at it again
        self._tracked: datetime | None = None  # the publish time track() covered up to
        self._raised: list[Event] = []  # alerts recorded in a switch, for track() to hand on

    def __call__(self, server: str | None, switches: Sequence[Switch]) -> list[SwitchResult]:
        unread: list[SwitchResult] = []
        items: list[controller.Desired] = []
        for sw in switches:
            try:
                items.append(_desired(sw))
            except (OSError, ValueError) as exc:  # this site alone: nothing published for it
                unread.append(SwitchResult(sw.site.name, False, False,
                                           f"not published: cannot read the material of "
                                           f"{sw.target.id} at {sw.target.path}: {exc}", -1.0))
        if not items:
            return unread
        return unread + self._publish(items)

    # -- one switch ----------------------------------------------------------------------------
    def _publish(self, items: Sequence[controller.Desired]) -> list[SwitchResult]:
        started = time.monotonic()
        lost: list[SwitchResult] = []
        if isinstance(self.fence, ControllerShare):
            with self.fence.fenced([d.site for d in items]) as (conn, held, others):
                controller.publish(conn, self.ring, [d for d in items if d.site in held])
            lost = [SwitchResult(d.site, False, False, f"not published: controller "
                                 f"{others.get(d.site, '?')} holds this site's lease and "
                                 "decides it", -1.0)
                    for d in items if d.site not in held]
            items = [d for d in items if d.site in held]
            if not items:
                return lost
        else:
            if not self.fence.try_lead():
                raise CertFailoverError("this controller is not the fleet leader: switch not "
                                        "published")
            with self.fence.fenced() as conn:
                controller.publish(conn, self.ring, items, epoch=self.fence.epoch or 0)
        t0 = time.monotonic()  # after the commit: no later than the rows' `since`
        sites = self._wait({d.site: (d.sha256, d.chain) for d in items}, t0)
        self._after(sites, t0)
        return lost + [self._result(d.site, sites[d.site], t0 - started) for d in items]

    def _wait(self, want: dict[str, tuple[str, str | None]], t0: float) -> dict[str, _Site]:
        """Poll the hosts' reports of the sites not settled yet until every site is."""
        sites = {s: _Site() for s in want}
        grace, timeout = self.lag_grace, self.converge_timeout
        while True:
            todo = [s for s, st in sites.items() if not st.settled]
            views: dict[str, list[HostView]] = {s: [] for s in todo}
            for part in coord.chunks(todo, 5000):
                for v in controller.progress(self.fence.engine, stale_after=self.stale_after,
                                             sites=part):
                    views[v.site].append(v)
            now = time.monotonic() - t0
            for s in todo:
                st = sites[s]
                st.read(views[s], want[s], now)
                st.settled = not st.waiting or now >= st.deadline(grace, timeout)
            left = [st for st in sites.values() if not st.settled]
            if not left:
                return sites
            cadence = self.poll if len(left) < 100 else max(self.poll, 0.5)
            until = min(st.deadline(grace, timeout) for st in left) - (time.monotonic() - t0)
            time.sleep(max(0.01, min(cadence, until)))

    def _result(self, site: str, st: _Site, took: float) -> SwitchResult:
        if not st.behind:
            return SwitchResult(site, True, False, "verified on every host" if st.verified
                                else "published; no host serves this site yet", took + st.last)
        why = []
        if st.waiting and st.verified:
            why.append(f"{_few(st.waiting)} not yet verified")
        elif st.waiting:
            why.append(f"not verified on {_few(st.waiting)} after {self.converge_timeout:g} s")
        why += [f"{h} failed: {st.failed[h]}" for h in sorted(st.failed)]
        if st.stale:
            why.append(f"{_few(st.stale)} stale (no report for over {self.stale_after:g} s; "
                       "not waited for)")
        if st.verified:
            return SwitchResult(site, True, False,
                                f"verified on {_few(st.verified)}; {'; '.join(why)} (tracked: "
                                f"alert if not verified {self.converge_timeout:g} s after the "
                                "publish)", took + st.last)
        return SwitchResult(site, False, False,
                            "no host verified it: " + "; ".join(why) +
                            " (the desired certificate stays published)", -1.0)

    def _after(self, sites: dict[str, _Site], t0: float) -> None:
        """Alert now the stale hosts, and the hosts of a site that failed at converge_timeout;
        watch the other hosts not verified, for track() at converge_timeout."""
        now: list[Laggard] = []
        lagging: list[str] = []
        for s, st in sites.items():
            if not st.behind:
                continue
            out = not st.verified and bool(st.waiting)  # failed at converge_timeout
            now += [lag for v in st.behind if (v.stale or out)
                    and (lag := v.laggard()) is not None]
            self._watch[s] = t0 + self.converge_timeout + 0.1
            if st.verified:
                lagging.append(f"{s} ({_few(h.host for h in st.behind)})")
        try:
            self._raised += self._alert(now)
        except (sa.exc.SQLAlchemyError, CertFailoverError) as exc:  # track() says them later
            log.warning("%d fleet_not_converged alert(s) not recorded: %s", len(now),
                        str(exc).splitlines()[0])
        if lagging:
            log.warning("%d site(s) switched, not verified on every host yet (tracked: alert "
                        "after %g s): %s%s", len(lagging), self.converge_timeout,
                        ", ".join(lagging[:10]), " ..." if len(lagging) > 10 else "")

    # -- after the switch ------------------------------------------------------------------------
    def _alert(self, lag: Sequence[Laggard]) -> list[Event]:
        """One event per (site, host, desired) not alerted yet, recorded. Raises what the
        record raises; nothing is marked alerted then (it is said at the next try)."""
        seen = set(self.alerted)
        events = controller.alerts(lag, seen)
        if events:
            self.record(events)
            self.alerted |= seen
        return events

    def track(self, sites: Collection[str] | None = None) -> list[Event]:
        """Alert (once each) the hosts still not converged `converge_timeout` after a switch
        was published: the switches published since the last call (by any controller) and the
        sites this deployer left unconverged, in ONE query. Only `sites` (None: all) are
        alerted: a controller alerts for the sites it holds. Returns the alerts recorded since
        the last call (those of switches too). A database fault is logged, never raised: the
        same switches are looked at again (the watched sites RETRY seconds later)."""
        raised, self._raised = self._raised, []
        mono, now = time.monotonic(), datetime.now(UTC)
        ct = timedelta(seconds=self.converge_timeout)
        due = [s for s, at in self._watch.items() if at <= mono]
        covered = self._tracked or now - ct - timedelta(seconds=LOOKBACK)
        try:
            lag = controller.laggards(self.fence.engine, after=self.converge_timeout, now=now,
                                      since_after=covered - ct, sites=due)
            events = self._alert([x for x in lag if sites is None or x.site in sites])
        except (sa.exc.SQLAlchemyError, CertFailoverError) as exc:
            log.warning("fleet convergence not checked or not recorded (tried again in %g s): "
                        "%s", RETRY, str(exc).splitlines()[0])
            for s in due:
                self._watch[s] = mono + RETRY
            return raised
        self._tracked = now - ct
        for s in due:
            del self._watch[s]
        return raised + events

    def next_track(self) -> float | None:
        """Seconds until a site this deployer left unconverged is due for track() (None:
        none is watched)."""
        if not self._watch:
            return None
        return max(0.0, min(self._watch.values()) - time.monotonic())
