from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from certfailover.config import ChallengeConfig, SiteConfig
from certfailover.model import Action, Cert, CertState, Finding, Health, Severity
from certfailover.policy import decide, healthy_standby, healthy_standbys

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SITE = SiteConfig(name="www", domains=("www.example.test",), cas=("a", "b", "c"), server="web",
                  endpoints=(), challenge=ChallengeConfig())


def cert(ca: str, state: CertState = CertState.STANDBY, *, days_left: float = 60, n: int = 1,
         age: float = 0) -> Cert:
    return Cert(id=f"www/{ca}/{n}", site="www", ca=ca, serial=str(n),
                not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=days_left),
                sha256="00", key_type="ec-p256", issuer_dn="CN=x", state=state,
                created=NOW - timedelta(days=age), path="/x")


def h(c: Cert, sev: Severity = Severity.OK, **signals: Any) -> Health:
    """One finding with the typed signals given (renew=True, replace=True, known=False...)."""
    return Health(c.id, (Finding("t", sev, f"{sev.value} reason", **signals),))


def test_keeps_a_healthy_active_and_asks_for_nothing() -> None:
    a, b = cert("a", CertState.ACTIVE), cert("b")
    d = decide(SITE, [a, b], {a.id: h(a), b.id: h(b)}, distrusted=set(), now=NOW)
    assert d.action is Action.KEEP and d.target is None and d.need == 0


def test_fails_over_to_independent_ca_then_order_then_validity() -> None:
    a = cert("a", CertState.ACTIVE)
    a2 = cert("a", n=2)  # same CA as the failed one: last choice
    b = cert("b", days_left=10)
    c = cert("c", days_left=80)
    health = {a.id: h(a, Severity.FAIL), a2.id: h(a2), b.id: h(b), c.id: h(c)}
    d = decide(SITE, [a, a2, b, c], health, distrusted=set(), now=NOW)
    assert d.action is Action.FAILOVER and d.target == b.id, "configured CA order before validity"
    assert "active failed" in d.reason


def test_never_fails_over_to_an_unhealthy_certificate() -> None:
    a, b = cert("a", CertState.ACTIVE), cert("b")
    d = decide(SITE, [a, b], {a.id: h(a, Severity.FAIL), b.id: h(b, Severity.FAIL)},
               distrusted=set(), now=NOW)
    assert d.action is Action.NONE_HEALTHY and d.target is None


def test_warning_active_is_not_switched_to_a_warning_standby() -> None:
    a, b = cert("a", CertState.ACTIVE), cert("b")
    health = {a.id: hw(a, ("validity", Severity.WARN, {"renew": True})),
              b.id: hw(b, ("revocation", Severity.WARN, {"known": False}))}
    d = decide(SITE, [a, b], health, distrusted=set(), now=NOW)
    assert d.action is Action.KEEP, "never fail over to something worse (or no better)"


def test_renewal_window_switches_to_fresh_ok_standby() -> None:
    a, b = cert("a", CertState.ACTIVE, days_left=5), cert("b")
    d = decide(SITE, [a, b], {a.id: h(a, Severity.WARN, renew=True), b.id: h(b)},
               distrusted=set(), now=NOW)
    assert d.action is Action.FAILOVER and d.target == b.id


def test_ari_replace_prefers_another_ca() -> None:
    a, a2, b = cert("a", CertState.ACTIVE), cert("a", n=2), cert("b")
    d = decide(SITE, [a, a2, b], {a.id: h(a, Severity.WARN, replace=True), a2.id: h(a2), b.id: h(b)},
               distrusted=set(), now=NOW)
    assert d.target == b.id


def test_no_switch_back_unless_configured() -> None:
    a, b = cert("a"), cert("b", CertState.ACTIVE)
    health = {a.id: h(a), b.id: h(b)}
    assert decide(SITE, [a, b], health, distrusted=set(), now=NOW).action is Action.KEEP
    from dataclasses import replace
    d = decide(replace(SITE, switch_back=True), [a, b], health, distrusted=set(), now=NOW)
    assert d.action is Action.FAILOVER and d.target == a.id


def test_first_run_activates_best_and_asks_for_standbys() -> None:
    d = decide(SITE, [], {}, distrusted=set(), now=NOW)
    assert d.action is Action.KEEP and d.need == 2 and d.replenish_from == ("a", "b", "c")
    b = cert("b")
    d = decide(SITE, [b], {b.id: h(b)}, distrusted=set(), now=NOW)
    assert d.action is Action.ACTIVATE and d.target == b.id
    assert d.need == 1 and d.replenish_from == ("a", "c")


def test_replenish_skips_active_ca_and_distrusted() -> None:
    a, b = cert("a", CertState.ACTIVE), cert("b")
    d = decide(SITE, [a, b], {a.id: h(a, Severity.FAIL), b.id: h(b)}, distrusted={"c"}, now=NOW)
    # after failing over to b, a standby is needed from a CA other than b's, not distrusted c
    assert d.target == b.id and d.need == 1 and d.replenish_from == ("a",)


def test_retires_expired_and_superseded_standbys_never_the_active() -> None:
    a = cert("a", CertState.ACTIVE)
    old_b = cert("b", days_left=3, n=1, age=60)
    new_b = cert("b", n=2, age=0)
    expired = cert("c", days_left=-1)
    health = {a.id: h(a), old_b.id: h(old_b, Severity.WARN, renew=True), new_b.id: h(new_b),
              expired.id: h(expired, Severity.FAIL)}
    d = decide(SITE, [a, old_b, new_b, expired], health, distrusted=set(), now=NOW)
    assert set(d.retire) == {old_b.id, expired.id}
    assert a.id not in d.retire


def hw(c: Cert, *findings: tuple[str, Severity, dict[str, Any]]) -> Health:
    return Health(c.id, tuple(Finding(check, sev, "r", **d) for check, sev, d in findings))


def test_renewal_switches_despite_a_warning_every_certificate_shares() -> None:
    """A CA that publishes no revocation data: every certificate warns "unknown" alike."""
    a, b = cert("a", CertState.ACTIVE, days_left=2), cert("b")
    unknown = ("revocation", Severity.WARN, {"known": False})
    health = {a.id: hw(a, ("validity", Severity.WARN, {"renew": True}), unknown),
              b.id: hw(b, ("validity", Severity.OK, {}), unknown)}
    d = decide(SITE, [a, b], health, distrusted=set(), now=NOW)
    assert d.action is Action.FAILOVER and d.target == b.id


def test_renewal_never_switches_to_a_standby_with_a_new_warning() -> None:
    a, b = cert("a", CertState.ACTIVE, days_left=2), cert("b")
    health = {a.id: hw(a, ("validity", Severity.WARN, {"renew": True})),
              b.id: hw(b, ("trust", Severity.WARN, {"program": "chrome", "forecast": datetime(2027, 1, 1, tzinfo=UTC)}))}
    d = decide(SITE, [a, b], health, distrusted=set(), now=NOW)
    assert d.action is Action.KEEP


def test_active_near_expiry_switches_even_to_a_warning_standby() -> None:
    # the active is inside its renewal window (flagged); the only standby carries a warning the
    # active lacks: "never worse" keeps the active, until its switch margin before notAfter
    a = cert("a", CertState.ACTIVE, days_left=2)
    b = cert("b", days_left=60)
    health = {a.id: h(a, Severity.WARN, renew=True), b.id: Health(b.id, (
        Finding("revocation", Severity.WARN, "unknown", known=False),))}
    margin = timedelta(minutes=10)
    d = decide(SITE, [a, b], health, distrusted=set(), now=NOW, expiry_margin=margin)
    assert d.action is Action.KEEP, "two days left: not yet"
    late = a.not_after - timedelta(minutes=9)
    d = decide(SITE, [a, b], health, distrusted=set(), now=late, expiry_margin=margin)
    assert d.action is Action.FAILOVER and d.target == b.id and "expires" in d.reason


def test_near_expiry_never_switches_to_something_that_expires_sooner() -> None:
    a = cert("a", CertState.ACTIVE, days_left=1)
    b = cert("b", days_left=0.5)
    late = a.not_after - timedelta(minutes=5)
    d = decide(SITE, [a, b], {a.id: h(a), b.id: h(b)}, distrusted=set(), now=late,
               expiry_margin=timedelta(minutes=10))
    assert d.action is Action.KEEP and "no healthy certificate lasts longer" in d.reason


def test_the_margin_is_at_most_half_the_renewal_window() -> None:
    # a 15-second certificate with a 10-minute margin would be left the moment it is issued
    a = Cert(id="www/a/1", site="www", ca="a", serial="1", not_before=NOW,
             not_after=NOW + timedelta(seconds=15), sha256="00", key_type="ec-p256",
             issuer_dn="CN=x", state=CertState.ACTIVE, created=NOW, path="/x")
    b = cert("b")
    d = decide(SITE, [a, b], {a.id: h(a), b.id: h(b)}, distrusted=set(),
               now=NOW + timedelta(seconds=1), expiry_margin=timedelta(minutes=10))
    assert d.action is Action.KEEP
    d = decide(SITE, [a, b], {a.id: h(a), b.id: h(b)}, distrusted=set(),
               now=NOW + timedelta(seconds=13), expiry_margin=timedelta(minutes=10))
    assert d.action is Action.FAILOVER and d.target == b.id


def test_a_revoked_standby_is_never_activated_and_is_retired() -> None:
    a, b, c = cert("a", CertState.ACTIVE), cert("b"), cert("c")
    # b's revocation data went dark: its fresh findings say nothing bad, but it is revoked
    health = {a.id: h(a, Severity.FAIL), b.id: h(b), c.id: h(c)}
    d = decide(SITE, [a, b, c], health, distrusted=set(), now=NOW, revoked={b.id})
    assert d.target == c.id and b.id in d.retire
    d = decide(SITE, [a, b], {a.id: h(a, Severity.FAIL), b.id: h(b)}, distrusted=set(), now=NOW,
               revoked={b.id})
    assert d.action is Action.NONE_HEALTHY and d.target is None


def test_one_rule_for_a_healthy_independent_standby() -> None:
    a, b, a2 = cert("a", CertState.ACTIVE), cert("b"), cert("a", n=2)
    c, retired = cert("c"), cert("c", CertState.RETIRED, n=2)
    ok = {x.id: h(x) for x in (a, b, a2, c, retired)}
    assert healthy_standbys([a, b, a2, c, retired], ok) == [b, c], "other CAs, live"
    assert healthy_standbys([a, b, c], ok, distrusted={"b"}) == [c]
    assert healthy_standbys([a, b, c], ok, revoked={c.id}) == [b]
    assert healthy_standbys([a, b, c], {**ok, b.id: h(b, Severity.FAIL)}) == [c]
    assert healthy_standbys([a, b, c], {**ok, b.id: h(b, Severity.WARN, replace=True)}) == [c]
    assert healthy_standbys([a, b, c], {**ok, b.id: Health(b.id, ())}) == [c], "unchecked"
    assert healthy_standbys([a, b, c], {a.id: ok[a.id], c.id: ok[c.id]}) == [c], "no health"
    assert healthy_standbys([b, c], ok) == [], "no active: nothing to stand by for"
    assert healthy_standbys([a, b, c], ok, serving=b) == [a, c], "the active stands by for b"
    assert not healthy_standby(a, ok[a.id], a)
