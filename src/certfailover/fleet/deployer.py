"""The controller's deploy port in a fleet: publish the switch, wait until every host proves it.

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
    2. wait until every host serving each site reports the desired leaf AND chain as verified
       (`fleet_served`), at most `converge_timeout` seconds; a host that has not reported for
       `stale_after` seconds (cut off, stopped) does not hold the wait;
    3. a site is switched (ok) when every host verified it; a site with a host that did not
       converge (stale ones included) is reported failed (not rolled back: see docs/fleet.md,
       "Rollback policy"), and one `fleet_not_converged` event per host is stored.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from ..engine import Switch, SwitchResult
from ..errors import CertFailoverError
from ..model import Event
from ..store.vault import Vault
from . import controller, coord, sealed
from .coord import Leader
from .sealed import Keyring
from .share import ControllerShare

__all__ = ["FleetDeployer"]


def _desired(sw: Switch) -> controller.Desired:
    """What to publish for one switch: the target's certificate with all its chains, and the
    digest of the chain its directory serves. OSError/ValueError when unreadable."""
    where = Path(sw.target.path)
    return controller.Desired(sw.site.name, sw.target.id, sw.target.sha256,
                              sealed.material(where),
                              sealed.chain_digest((where / "chain.pem").read_bytes()))


class FleetDeployer:
    def __init__(self, fence: Leader | ControllerShare, ring: Keyring, vault: Vault, *,
                 converge_timeout: float = 60.0, record: Callable[[list[Event]], None],
                 poll: float = 0.1, stale_after: float = 120.0) -> None:
        self.fence, self.ring, self.vault = fence, ring, vault
        self.converge_timeout, self.record, self.poll = converge_timeout, record, poll
        self.stale_after = stale_after  # a host silent this long does not hold the wait
        self.alerted: set[tuple[str, str, str]] = set()

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

    def _publish(self, items: Sequence[controller.Desired]) -> list[SwitchResult]:
        t0 = time.monotonic()
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
        want = {d.site: (d.sha256, d.chain) for d in items}
        done: dict[str, float] = {}  # site -> when its LAST host proved it
        pending: dict[str, list[str]] = {}  # hosts waited for
        stale: dict[str, list[str]] = {}  # hosts silent: not waited for
        while True:
            # only the sites not done yet: a mass failover's rows shrink as hosts converge
            todo = [s for s in want if s not in done]
            waiting: dict[str, list[str]] = defaultdict(list)
            quiet: dict[str, list[str]] = defaultdict(list)
            for part in coord.chunks(todo, 5000):
                for v in controller.progress(self.fence.engine, stale_after=self.stale_after,
                                             sites=part):
                    sha, chain = want[v.site]
                    if controller.matches(sha, chain, v.served, v.served_chain):
                        continue
                    (quiet if v.stale else waiting)[v.site].append(v.host)
            now = time.monotonic() - t0
            for s in todo:
                if s not in waiting and s not in quiet:
                    done[s] = now
            pending = {s: waiting[s] for s in waiting}
            stale = {s: quiet[s] for s in quiet if s not in waiting}
            if not pending or time.monotonic() - t0 >= self.converge_timeout:
                break
            time.sleep(self.poll if len(pending) < 100 else max(self.poll, 0.5))
        if pending or stale:
            lag = [x for x in controller.laggards(self.fence.engine, after=0.0)
                   if (x.site in pending or x.site in stale)
                   and (x.desired, x.desired_chain) == want[x.site]]
            events = controller.alerts(lag, self.alerted)
            if events:
                self.record(events)
        took = time.monotonic() - t0
        out = lost
        for d in items:
            hosts, silent = pending.get(d.site, []), stale.get(d.site, [])
            if hosts or silent:
                why = []
                if hosts:
                    why.append(f"not verified on {', '.join(sorted(hosts))} after "
                               f"{self.converge_timeout:g} s")
                if silent:
                    why.append(f"not verified on {', '.join(sorted(silent))} (stale: no "
                               f"report for over {self.stale_after:g} s; not waited for)")
                out.append(SwitchResult(d.site, False, False,
                                        "; ".join(why) + " (the others serve it; the desired "
                                        "certificate stays published)", -1.0))
            else:
                out.append(SwitchResult(d.site, True, False, "verified on every host",
                                        done.get(d.site, took)))
        return out
