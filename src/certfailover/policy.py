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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from .config import SiteConfig
from .model import Action, Cert, CertState, Decision, Health, Severity


def flagged(h: Health) -> bool:
    """Inside its renewal window, or its CA asked for it to be replaced (ARI)."""
    return any(f.detail.get("renew") or f.detail.get("replace") for f in h.findings)


def warning_checks(h: Health) -> set[str]:
    return {f.check for f in h.findings if f.severity is Severity.WARN}


def no_new_warnings(candidate: Health, active: Health) -> bool:
    """The candidate is not worse: healthy, and every check that warns on it warns on the active
    one too (a CA that publishes no revocation data warns alike for all its certificates)."""
    return candidate.healthy and warning_checks(candidate) <= warning_checks(active)


def replace_requested(h: Health) -> bool:
    return any(f.detail.get("replace") for f in h.findings)


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


def decide(site: SiteConfig, certs: Sequence[Cert], health: Mapping[str, Health], *,
           distrusted: frozenset[str] | set[str], now: datetime,
           expiry_margin: timedelta = timedelta(0),
           revoked: frozenset[str] | set[str] = frozenset()) -> Decision:
    live = [c for c in certs if c.state is not CertState.RETIRED and c.id in health]
    active = next((c for c in live if c.state is CertState.ACTIVE), None)
    healthy = [c for c in live if health[c.id].healthy and c.id not in revoked]

    def best(pool: Sequence[Cert], avoid_ca: str | None) -> Cert | None:
        return min(pool, key=lambda c: _rank(c, health[c.id], site, now, avoid_ca), default=None)

    action, target, reason = Action.KEEP, None, "active certificate is healthy"
    if active is None:
        choice = best(healthy, None)
        if choice is not None:
            action, target, reason = Action.ACTIVATE, choice, "no certificate active yet"
        elif live:
            action, reason = Action.NONE_HEALTHY, "no healthy certificate to activate"
        else:
            reason = "no certificate yet"
    else:
        ah = health[active.id]
        others = [c for c in healthy if c.id != active.id]
        if not ah.healthy:
            choice = best(others, active.ca)
            why = "; ".join(ah.reasons(Severity.FAIL))
            if choice is not None:
                action, target, reason = Action.FAILOVER, choice, f"active failed: {why}"
            else:
                action, reason = Action.NONE_HEALTHY, f"active failed and no healthy standby: {why}"
        elif active.not_after - now <= switch_margin(active, site, expiry_margin):
            lasting = [c for c in others if c.not_after > active.not_after]
            choice = best(lasting, None)
            when = f"{active.not_after:%Y-%m-%d %H:%M:%S}Z"
            if choice is not None:
                action, target, reason = Action.FAILOVER, choice, \
                    f"active expires at {when}: switching before it does"
            else:
                reason = f"active expires at {when} and no healthy certificate lasts longer"
        elif flagged(ah):
            better = [c for c in others
                      if not flagged(health[c.id]) and no_new_warnings(health[c.id], ah)]
            choice = best(better, active.ca if replace_requested(ah) else None)
            why = "; ".join(f.reason for f in ah.findings if f.detail.get("renew") or f.detail.get("replace"))
            if choice is not None:
                action, target, reason = Action.FAILOVER, choice, f"active must be replaced: {why}"
            else:
                reason = f"active must be replaced ({why}) but no better standby yet"
        elif site.switch_back:
            choice = best([c for c in others if not flagged(health[c.id])
                           and no_new_warnings(health[c.id], ah)], None)
            if choice is not None and site.cas.index(choice.ca) < site.cas.index(active.ca):
                action, target, reason = Action.FAILOVER, choice, f"switch back to preferred CA {choice.ca}"

    serving = target or active
    good_standbys = [
        c for c in healthy
        if serving is not None and c.id != serving.id and c.ca != serving.ca
        and c.ca not in distrusted and not flagged(health[c.id])
    ]
    have_cas = {c.ca for c in good_standbys}
    if serving is None:
        # nothing to serve: one certificate to activate plus the standbys
        have_ok = [c for c in healthy if c.ca not in distrusted and not flagged(health[c.id])]
        need = max(0, 1 + site.min_standbys - len({c.ca for c in have_ok}))
        candidates = [ca for ca in site.cas if ca not in distrusted and ca not in {c.ca for c in have_ok}]
    else:
        need = max(0, site.min_standbys - len(good_standbys))
        candidates = [ca for ca in site.cas
                      if ca != serving.ca and ca not in distrusted and ca not in have_cas]
        # the serving certificate itself will need a successor from its CA when flagged
        if flagged(health[serving.id]) and serving.ca not in distrusted and not any(
                c.ca == serving.ca and c.id != serving.id and not flagged(health[c.id])
                and health[c.id].healthy for c in live):
            candidates.append(serving.ca)
            need = max(need, 1)

    retire = tuple(
        c.id for c in live
        if c is not serving and c.state is not CertState.ACTIVE and (
            c.not_after <= now or c.id in revoked
            or (flagged(health[c.id]) and any(
                o.ca == c.ca and o.created > c.created and health[o.id].healthy
                and not flagged(health[o.id]) for o in live))
        )
    )
    return Decision(
        site=site.name, action=action, active=active.id if active else None,
        target=target.id if target else None, reason=reason,
        replenish_from=tuple(candidates) if need else (), need=need, retire=retire,
    )
