"""The controller's deploy port in a fleet: publish the switch, wait until every host proves it.

`FleetDeployer(server, switches)` is what the engine calls instead of the local deployer when
`[fleet] role = "controller"`. For one batch (a mass failover is one batch per controller: one
publish, one NOTIFY, one reload per agent server):

    1. read each target's material from the controller's vault and publish it sealed, with the
       desired rows, in a fenced transaction: under this controller's site leases
       (`ControllerShare.fenced`: a site whose lease another controller took is not written
       and is reported failed), or the leader's epoch (`Leader.fenced`);
    2. wait until every host serving each site reports the new leaf as verified
       (`fleet_served`), at most `converge_timeout` seconds;
    3. a site is switched (ok) when every host verified it; a site with a host that did not
       converge is reported failed (not rolled back: see docs/fleet.md, "Rollback policy"), and
       one `fleet_not_converged` event per host is stored.
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
from . import controller
from .coord import Leader
from .sealed import Keyring, Plain
from .share import ControllerShare

__all__ = ["FleetDeployer"]


def _material(directory: Path) -> Plain:
    d = Path(directory)
    return Plain((d / "cert.pem").read_bytes(), (d / "chain.pem").read_bytes(),
                 (d / "privkey.pem").read_bytes())


class FleetDeployer:
    def __init__(self, fence: Leader | ControllerShare, ring: Keyring, vault: Vault, *,
                 converge_timeout: float = 60.0, record: Callable[[list[Event]], None],
                 poll: float = 0.1) -> None:
        self.fence, self.ring, self.vault = fence, ring, vault
        self.converge_timeout, self.record, self.poll = converge_timeout, record, poll
        self.alerted: set[tuple[str, str, str]] = set()

    def __call__(self, server: str | None, switches: Sequence[Switch]) -> list[SwitchResult]:
        # a chain switch (same certificate, another chain directory) is not published to the
        # agents yet: the desired row names a certificate, not a chain, and the agents prove
        # the leaf only. Said as a failed switch, never as a verified one (docs/fleet.md).
        chain_switches = [sw for sw in switches if sw.previous is not None
                          and sw.previous.id == sw.target.id]
        refused = [SwitchResult(sw.site.name, False, False,
                                "a chain switch is not published to fleet agents yet: every "
                                "host keeps serving the previous chain of "
                                f"{sw.target.id}", -1.0) for sw in chain_switches]
        switches = [sw for sw in switches if sw not in chain_switches]
        if not switches:
            return refused
        return refused + self._publish(switches)

    def _publish(self, switches: Sequence[Switch]) -> list[SwitchResult]:
        t0 = time.monotonic()
        items = [controller.Desired(sw.site.name, sw.target.id, sw.target.sha256,
                                    _material(Path(sw.target.path)))
                 for sw in switches]
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
        want = {d.site: d.sha256 for d in items}
        first: dict[str, float] = {}
        while True:
            pending: dict[str, list[str]] = defaultdict(list)
            for v in controller.progress(self.fence.engine, stale_after=float("inf")):
                if v.site in want:
                    if v.served == want[v.site]:
                        first.setdefault(v.site, time.monotonic() - t0)
                    else:
                        pending[v.site].append(v.host)
            if not pending or time.monotonic() - t0 >= self.converge_timeout:
                break
            time.sleep(self.poll)
        if pending:
            lag = [x for x in controller.laggards(self.fence.engine, after=0.0)
                   if x.site in pending and x.desired == want[x.site]]
            events = controller.alerts(lag, self.alerted)
            if events:
                self.record(events)
        took = time.monotonic() - t0
        out = lost
        for d in items:
            hosts = pending.get(d.site)
            if hosts:
                out.append(SwitchResult(d.site, False, False,
                                        f"not verified on {', '.join(sorted(hosts))} after "
                                        f"{self.converge_timeout:g} s (the others serve it; "
                                        "the desired certificate stays published)", -1.0))
            else:
                out.append(SwitchResult(d.site, True, False, "verified on every host",
                                        first.get(d.site, took)))
        return out
