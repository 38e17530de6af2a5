"""Failover drills: "what if CA X failed now?" — a dry run, or a real switch and back.

Dry run: every check runs now; the certificates of the failing CA get an extra FAIL finding
and `policy.decide` says what would be served. Nothing is deployed.

Apply: the engine's own verified failover (`Engine.failover(site, to=...)`: deploy, TLS
handshake, rollback if wrong) to the standby the dry run chose, an independent handshake to
confirm what is served, then the same back to the certificate that was active. Each switch is
timed. Run drills before an incident, not during one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from . import policy
from .config import SiteConfig
from .engine import Engine
from .errors import CertFailoverError, InputError
from .model import Cert, CertState, Finding, Health, Severity

__all__ = ["CertView", "DrillResult", "SwitchTiming", "dry_run", "probe_served", "run_drill"]

#: (site) -> SHA-256 of the leaf the site's first endpoint serves, None if it has no endpoint
Probe = Callable[[SiteConfig], str | None]


@dataclass(frozen=True)
class CertView:
    id: str
    ca: str
    days_left: float
    health: str  # ok / warn / fail
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SwitchTiming:
    step: str  # "to standby" or "back"
    target: str
    ok: bool
    seconds: float  # deploy + handshake verification, as measured by the deploy port
    total_seconds: float  # the whole operator action (checks included)
    served_sha256: str | None  # what an independent handshake saw afterwards
    message: str


@dataclass(frozen=True)
class DrillResult:
    site: str
    fail_ca: str
    applied: bool
    ok: bool
    message: str
    active: CertView | None
    would_serve: CertView | None
    standbys: tuple[CertView, ...]
    switches: tuple[SwitchTiming, ...] = ()


def probe_served(site: SiteConfig) -> str | None:
    """A real TLS handshake with the site's first endpoint; the served leaf's SHA-256."""
    if not site.endpoints:
        return None
    from .probe import leaf_sha256, served_chain
    return leaf_sha256(served_chain(site.endpoints[0], site.sni)[0])


def _view(c: Cert, h: Health, now_days: float) -> CertView:
    return CertView(c.id, c.ca, round(now_days, 2), h.severity.value, tuple(h.reasons()))


def _plan(engine: Engine, site: SiteConfig, fail_ca: str) -> tuple[
        list[Cert], dict[str, Health], Cert | None, Cert | None, str]:
    if fail_ca not in site.cas and fail_ca not in engine.config.cas:
        raise InputError(f"--fail {fail_ca!r}: not a CA of site {site.name} "
                         f"(its CAs: {', '.join(site.cas)})")
    certs = engine.db.certs(site.name)
    if not certs:
        raise InputError(f"site {site.name} has no certificates yet: run `certfailover issue`")
    health = engine.check_site(site, certs)
    failed = Finding("drill", Severity.FAIL, f"drill: CA {fail_ca} fails")
    drilled: Mapping[str, Health] = {
        c.id: Health(c.id, health[c.id].findings + ((failed,) if c.ca == fail_ca else ()))
        for c in certs}
    now = engine.clock()
    d = policy.decide(site, certs, drilled,
                      distrusted=set(engine.db.distrusted(site.name)) | {fail_ca}, now=now)
    active = next((c for c in certs if c.state is CertState.ACTIVE), None)
    target = engine.db.cert(d.target) if d.target else None
    if active is not None and active.ca != fail_ca:
        return certs, health, active, active, (
            f"{site.name} serves {active.id} from {active.ca}: a failure of {fail_ca} "
            "would not change what is served")
    if target is None:
        return certs, health, active, None, (
            f"no healthy standby outside {fail_ca}: {site.name} would keep serving a failed "
            f"certificate ({d.reason})")
    return certs, health, active, target, (
        f"if {fail_ca} failed, {site.name} would switch to {target.id} from {target.ca}")


def dry_run(engine: Engine, site_name: str, fail_ca: str) -> DrillResult:
    site = engine.config.site(site_name)
    certs, health, active, target, message = _plan(engine, site, fail_ca)
    now = engine.clock()

    def view(c: Cert | None) -> CertView | None:
        return None if c is None else _view(c, health[c.id], c.remaining(now) / 86400)

    standbys = tuple(_view(c, health[c.id], c.remaining(now) / 86400)
                     for c in certs if c.state is CertState.STANDBY)
    return DrillResult(site.name, fail_ca, False, target is not None, message, view(active),
                       view(target), standbys)


def _switch(engine: Engine, site: SiteConfig, step: str, target: Cert, reason: str,
            probe: Probe) -> SwitchTiming:
    started = time.monotonic()
    try:
        report = engine.failover(site.name, to=target.id, reason=reason)
    except CertFailoverError as exc:
        return SwitchTiming(step, target.id, False, 0.0, time.monotonic() - started, None,
                            str(exc))
    total = time.monotonic() - started
    ev = next((e for e in report.events if e.kind == "failover"), None)
    bad = next((e for e in report.events if e.kind in ("rollback", "deploy_failed")), None)
    served = probe(site)
    ok = ev is not None and served in (None, target.sha256)
    message = ev.message if ev is not None else (bad.message if bad else "no switch happened")
    if ev is not None and served not in (None, target.sha256):
        message = f"the server serves {served}, not {target.id} ({target.sha256})"
    seconds = float(ev.data.get("seconds", total)) if ev is not None else 0.0
    return SwitchTiming(step, target.id, ok, round(seconds, 3), round(total, 3), served, message)


def run_drill(engine: Engine, site_name: str, fail_ca: str, *, probe: Probe = probe_served,
              steps: Sequence[str] = ("to standby", "back")) -> DrillResult:
    """Switch to the standby the dry run picks, verify, then back to the active one."""
    plan = dry_run(engine, site_name, fail_ca)
    if not plan.ok or plan.active is None or plan.would_serve is None \
            or plan.would_serve.id == plan.active.id:
        return replace(plan, applied=True, message=plan.message + "; nothing to switch")
    site = engine.config.site(site_name)
    original = engine.db.cert(plan.active.id)
    target = engine.db.cert(plan.would_serve.id)
    assert original is not None and target is not None
    switches = [_switch(engine, site, steps[0], target,
                        f"drill: {fail_ca} failing, switch to standby", probe)]
    if switches[0].ok:
        switches.append(_switch(engine, site, steps[1], original,
                                "drill: switch back after the drill", probe))
    ok = len(switches) == 2 and all(s.ok for s in switches)
    message = (f"switched to {target.id} in {switches[0].seconds:.2f}s and back in "
               f"{switches[1].seconds:.2f}s, both verified by handshake" if ok else
               f"drill failed: {'; '.join(s.message for s in switches if not s.ok)}")
    return replace(plan, applied=True, ok=ok, message=message, switches=tuple(switches))
