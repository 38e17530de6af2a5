"""Which certificate a site serves, when to fail over, when to replenish. Pure: no I/O, no clock.

Rules:
- One active certificate per site.
- A certificate is healthy when no finding FAILs. Never activate one that is not.
- The active one fails -> switch to the best healthy standby: independent CA first (not the failed
  certificate's CA), then configured CA order, then longest remaining validity.
- The active one is merely flagged (inside its renewal window, or its CA asked via ARI for it to be
  replaced) -> switch only to a standby that is not flagged and has no warning the active one does
  not also have: never to something worse.
- The active one comes within its switch margin of notAfter (`expiry_margin`, at most half its
  renewal window) -> switch to any healthy certificate that lasts longer, warnings or not: an
  expired certificate is worse than any warning.
- A revoked certificate (a recorded fact) is retired and never activated.
- No healthy certificate at all -> keep serving what is served and raise NONE_HEALTHY.
- No automatic switch back to a preferred CA unless the site sets switch_back.
- Replenish: keep `min_standbys` healthy, unflagged standbys from CAs other than the active one's,
  never from a distrusted CA.
- Chains (`choose_chain`): serve a chain that satisfies every required trust anchor, the
  shortest among those; keep the served one while it still does (no churn); when it stops,
  switch to another (same leaf, same key) before any certificate failover.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import SiteConfig
from .model import (
    Action,
    Cert,
    CertState,
    Decision,
    Health,
    PathVerdict,
    ServedChain,
    Severity,
)


def flagged(h: Health) -> bool:
    """Inside its renewal window, or a replacement was asked for (ARI, a trust forecast)."""
    return any(f.flagged for f in h.findings)


def warning_checks(h: Health) -> set[str]:
    return {f.check for f in h.findings if f.severity is Severity.WARN}


def no_new_warnings(candidate: Health, active: Health) -> bool:
    """The candidate is not worse: healthy, and every check that warns on it warns on the active
    one too (a CA that publishes no revocation data warns alike for all its certificates)."""
    return candidate.healthy and warning_checks(candidate) <= warning_checks(active)


def replace_requested(h: Health) -> bool:
    return any(f.replace for f in h.findings)


def healthy_standby(c: Cert, h: Health | None, serving: Cert | None, *,
                    distrusted: Collection[str] = frozenset(),
                    revoked: Collection[str] = frozenset()) -> bool:
    """The one rule for a healthy independent standby of `serving`: another live certificate
    from another CA, not distrusted or revoked, checked, healthy and not flagged."""
    return (serving is not None and h is not None and c.id != serving.id
            and c.ca != serving.ca and c.state is not CertState.RETIRED
            and c.ca not in distrusted and c.id not in revoked
            and bool(h.findings) and h.healthy and not flagged(h))


def healthy_standbys(certs: Iterable[Cert], health: Mapping[str, Health], *,
                     distrusted: Collection[str] = frozenset(),
                     revoked: Collection[str] = frozenset(),
                     serving: Cert | None = None) -> list[Cert]:
    """The healthy independent standbys among `certs` (one site's) of `serving` (default: the
    active certificate among them)."""
    certs = list(certs)
    if serving is None:
        serving = next((c for c in certs if c.state is CertState.ACTIVE), None)
    return [c for c in certs if healthy_standby(c, health.get(c.id), serving,
                                                distrusted=distrusted, revoked=revoked)]


def _rank(c: Cert, h: Health, site: SiteConfig, now: datetime,
          avoid_ca: str | None) -> tuple[int, int, int, int, float]:
    order = site.cas.index(c.ca) if c.ca in site.cas else len(site.cas)
    return (int(c.ca == avoid_ca), int(flagged(h)), h.severity.rank, order, -c.remaining(now))


def switch_margin(cert: Cert, site: SiteConfig, base: timedelta) -> timedelta:
    """How long before its notAfter `cert` is left at the latest: `base`, but at most half its
    renewal window (so a short-lived certificate is not abandoned the moment it is issued)."""
    return min(base, (cert.not_after - cert.not_before) * site.renew_fraction / 2)


def unprotected(cert: Cert, site: SiteConfig, *, interval: float, issue_timeout: float) -> str | None:
    """Why the schedule cannot protect `cert` (None: it can): its renewal window must hold two
    check intervals and an issuance, or a failing CA is noticed too late to replace it."""
    window = (cert.not_after - cert.not_before).total_seconds() * site.renew_fraction
    need = 2 * interval + issue_timeout
    if window < need:
        return (f"lifetime {cert.not_after - cert.not_before} gives a renewal window of "
                f"{window:.0f}s, shorter than two check intervals plus an issuance ({need:.0f}s): "
                "shorten [daemon] interval or issue_timeout, or use longer-lived certificates")
    return None


@dataclass(frozen=True)
class _Site:
    """What the three steps of `decide` share: one site's live certificates and their health."""

    config: SiteConfig
    live: list[Cert]  # not retired, with health
    health: Mapping[str, Health]
    healthy: list[Cert]  # no FAIL and not revoked
    active: Cert | None
    now: datetime

    def best(self, pool: Sequence[Cert], avoid_ca: str | None) -> Cert | None:
        return min(pool, key=lambda c: _rank(c, self.health[c.id], self.config, self.now, avoid_ca),
                   default=None)


def decide(site: SiteConfig, certs: Sequence[Cert], health: Mapping[str, Health], *,
           distrusted: frozenset[str] | set[str], now: datetime,
           expiry_margin: timedelta = timedelta(0),
           revoked: frozenset[str] | set[str] = frozenset()) -> Decision:
    live = [c for c in certs if c.state is not CertState.RETIRED and c.id in health]
    s = _Site(site, live, health, [c for c in live if health[c.id].healthy and c.id not in revoked],
              next((c for c in live if c.state is CertState.ACTIVE), None), now)
    action, target, reason = _choose(s, expiry_margin)
    serving = target or s.active
    need, candidates = _replenish(s, serving, distrusted)
    return Decision(
        site=site.name, action=action, active=s.active.id if s.active else None,
        target=target.id if target else None, reason=reason,
        replenish_from=tuple(candidates) if need else (), need=need,
        retire=_retire(s, serving, revoked),
    )


Choice = tuple[Action, Cert | None, str]


def _choose(s: _Site, expiry_margin: timedelta) -> Choice:
    """Which certificate to serve: keep, activate the first, or fail over (and why)."""
    active = s.active
    if active is None:
        return _first(s)
    ah = s.health[active.id]
    others = [c for c in s.healthy if c.id != active.id]
    if not ah.healthy:
        return _failed(s, active, ah, others)
    if active.not_after - s.now <= switch_margin(active, s.config, expiry_margin):
        return _expiring(s, active, others)
    better = [c for c in others
              if not flagged(s.health[c.id]) and no_new_warnings(s.health[c.id], ah)]
    if flagged(ah):
        return _flagged(s, active, ah, better)
    if s.config.switch_back:
        choice = s.best(better, None)
        if choice is not None and s.config.cas.index(choice.ca) < s.config.cas.index(active.ca):
            return Action.FAILOVER, choice, f"switch back to preferred CA {choice.ca}"
    return Action.KEEP, None, "active certificate is healthy"


def _first(s: _Site) -> Choice:
    choice = s.best(s.healthy, None)
    if choice is not None:
        return Action.ACTIVATE, choice, "no certificate active yet"
    if s.live:
        return Action.NONE_HEALTHY, None, "no healthy certificate to activate"
    return Action.KEEP, None, "no certificate yet"


def _failed(s: _Site, active: Cert, ah: Health, others: list[Cert]) -> Choice:
    choice = s.best(others, active.ca)
    why = "; ".join(ah.reasons(Severity.FAIL))
    if choice is not None:
        return Action.FAILOVER, choice, f"active failed: {why}"
    return Action.NONE_HEALTHY, None, f"active failed and no healthy standby: {why}"


def _expiring(s: _Site, active: Cert, others: list[Cert]) -> Choice:
    """Within its switch margin: anything healthy that lasts longer, warnings or not."""
    choice = s.best([c for c in others if c.not_after > active.not_after], None)
    when = f"{active.not_after:%Y-%m-%d %H:%M:%S}Z"
    if choice is not None:
        return Action.FAILOVER, choice, f"active expires at {when}: switching before it does"
    return Action.KEEP, None, f"active expires at {when} and no healthy certificate lasts longer"


def _flagged(s: _Site, active: Cert, ah: Health, better: list[Cert]) -> Choice:
    """To be replaced: only by something not worse (another CA first when it was asked for)."""
    choice = s.best(better, active.ca if replace_requested(ah) else None)
    why = "; ".join(f.reason for f in ah.findings if f.flagged)
    if choice is not None:
        return Action.FAILOVER, choice, f"active must be replaced: {why}"
    return Action.KEEP, None, f"active must be replaced ({why}) but no better standby yet"


def _replenish(s: _Site, serving: Cert | None,
               distrusted: frozenset[str] | set[str]) -> tuple[int, list[str]]:
    """How many new certificates the site needs, and the CAs to ask, in order."""
    site, health = s.config, s.health
    if serving is None:
        # nothing to serve: one certificate to activate plus the standbys
        have = {c.ca for c in s.healthy if c.ca not in distrusted and not flagged(health[c.id])}
        return (max(0, 1 + site.min_standbys - len(have)),
                [ca for ca in site.cas if ca not in distrusted and ca not in have])
    good = healthy_standbys(s.healthy, health, distrusted=distrusted, serving=serving)
    have_cas = {c.ca for c in good}
    need = max(0, site.min_standbys - len(good))
    candidates = [ca for ca in site.cas
                  if ca != serving.ca and ca not in distrusted and ca not in have_cas]
    # the serving certificate itself will need a successor from its CA when flagged
    if flagged(health[serving.id]) and serving.ca not in distrusted and not any(
            c.ca == serving.ca and c.id != serving.id and not flagged(health[c.id])
            and health[c.id].healthy for c in s.live):
        candidates.append(serving.ca)
        need = max(need, 1)
    return need, candidates


def _retire(s: _Site, serving: Cert | None, revoked: frozenset[str] | set[str]) -> tuple[str, ...]:
    """Certificates no longer worth keeping: expired, revoked, or flagged and superseded by a
    newer healthy, unflagged one from the same CA."""
    health = s.health

    def superseded(c: Cert) -> bool:
        return flagged(health[c.id]) and any(
            o.ca == c.ca and o.created > c.created and health[o.id].healthy
            and not flagged(health[o.id]) for o in s.live)

    return tuple(c.id for c in s.live
                 if c is not serving and c.state is not CertState.ACTIVE
                 and (c.not_after <= s.now or c.id in revoked or superseded(c)))


def choose_chain(paths: Sequence[PathVerdict], served: int | None) -> ServedChain:
    """Which stored chain of one certificate to serve. `served`: the chain served now (None:
    the certificate is not served yet). Among the chains that satisfy every required anchor:
    the served one while it still does, else the shortest (then the longest-lasting, then the
    lowest index). None when no chain satisfies them all."""
    good = [p for p in paths if p.ok]
    if not good:
        why = "; ".join(f"chain {p.index}: {', '.join(p.failed)}" for p in paths)
        return ServedChain(None, f"no chain satisfies every required anchor ({why})")
    current = next((p for p in good if p.index == served), None)
    if current is not None:
        return ServedChain(current.index, f"chain {current.index} (to {current.top}) satisfies "
                                          "every required anchor")
    best = min(good, key=lambda p: (p.length, -(p.until.timestamp() if p.until else 1e12),
                                    p.index))
    lost = next((p for p in paths if p.index == served), None)
    head = (f"chain {lost.index} fails ({'; '.join(lost.failed)}): " if lost is not None else "")
    return ServedChain(best.index, f"{head}chain {best.index} (to {best.top}) is the shortest "
                                   "that satisfies every required anchor")
