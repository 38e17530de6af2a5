"""The trust findings drive the lead's policy: a lost program fails over; a forecast gets an
independent standby (and a move to it) before the date. Uses the real policy.decide."""

from __future__ import annotations

from datetime import UTC, datetime

from trustpki import Lab, make_intermediate, make_leaf

from certfailover.checks import CertMaterial, CheckContext
from certfailover.config import ChallengeConfig, SiteConfig
from certfailover.model import Action, CertState, Health, Severity
from certfailover.policy import decide
from certfailover.sitetrust import Program
from certfailover.testing.pki import material
from certfailover.trust import ProgramTrustCheck

SITE = SiteConfig(name="www", domains=("www.example.test",), cas=("a", "b"), server="web",
                  endpoints=(), challenge=ChallengeConfig(),
                  trust=(Program("chrome"), Program("microsoft"), Program("mozilla")))


def _health(check: ProgramTrustCheck, mats: list[CertMaterial], now: datetime,
            trust: tuple[str, ...]) -> dict[str, Health]:
    ctx = CheckContext(now=now, domains=SITE.domains, trust=tuple(Program(p) for p in trust),
                       forecast_days=90)
    return {m.cert.id: Health(m.cert.id, tuple(check.run(m, ctx))) for m in mats}


def test_active_that_loses_a_required_program_fails_over(lab: Lab) -> None:
    now = datetime(2024, 12, 1, tzinfo=UTC)
    ca_a, ca_b = make_intermediate(lab.entrust, "Policy A"), make_intermediate(lab.plain, "Policy B")
    issued = datetime(2024, 11, 20, tzinfo=UTC)  # SCT after Chrome's 2024-11-11 cut-off
    active = material(make_leaf(ca_a, not_before=issued, scts=[issued]), [ca_a.cert], ca="a",
                      state=CertState.ACTIVE)
    standby = material(make_leaf(ca_b, not_before=issued, scts=[issued]), [ca_b.cert], ca="b")
    health = _health(ProgramTrustCheck(lab.snap), [active, standby], now, ("chrome", "mozilla"))
    assert health[active.cert.id].severity is Severity.FAIL
    assert health[standby.cert.id].severity is Severity.OK
    d = decide(SITE, [active.cert, standby.cert], health, distrusted=set(), now=now)
    assert d.action is Action.FAILOVER and d.target == standby.cert.id


def test_issuance_forecast_asks_for_an_independent_standby(lab: Lab) -> None:
    now = datetime(2024, 9, 2, tzinfo=UTC)
    ca_a = make_intermediate(lab.entrust, "Policy A2")
    issued = datetime(2024, 9, 1, tzinfo=UTC)
    active = material(make_leaf(ca_a, not_before=issued, scts=[issued]), [ca_a.cert], ca="a",
                      state=CertState.ACTIVE)
    health = _health(ProgramTrustCheck(lab.snap), [active], now, ("chrome",))
    (finding,) = [f for f in health[active.cert.id].findings if f.check == "trust"]
    assert not [f for f in health[active.cert.id].findings if f.check == "ca_issuance"], \
        "the cut-off is ahead: a forecast, the CA can still issue"
    assert finding.severity is Severity.WARN and finding.forecast == datetime(2024, 11, 11, 23, 59, 59, tzinfo=UTC)
    d = decide(SITE, [active.cert], health, distrusted=set(), now=now)
    assert d.action is Action.KEEP and d.replenish_from == ("b",)


def test_certificate_forecast_moves_to_the_standby_before_the_date(lab: Lab) -> None:
    now = datetime(2024, 11, 1, tzinfo=UTC)  # Microsoft disables the MS test root on 2025-01-01
    ca_a, ca_b = make_intermediate(lab.ms, "Policy MS"), make_intermediate(lab.plain, "Policy B2")
    issued = datetime(2024, 5, 1, tzinfo=UTC)
    active = material(make_leaf(ca_a, not_before=issued, days=365), [ca_a.cert], ca="a",
                      state=CertState.ACTIVE)
    standby = material(make_leaf(ca_b, not_before=issued, days=365), [ca_b.cert], ca="b")
    health = _health(ProgramTrustCheck(lab.snap), [active, standby], now, ("microsoft",))
    (finding,) = [f for f in health[active.cert.id].findings if f.check == "trust"]
    # the MS root takes no certificate issued after 2024-06-01: the CA cannot replace it
    assert [f.cannot_issue_for for f in health[active.cert.id].findings
            if f.check == "ca_issuance"] == ["microsoft"]
    assert finding.detail["kind"] == "certificate" and finding.replace
    d = decide(SITE, [active.cert, standby.cert], health, distrusted=set(), now=now)
    assert d.action is Action.FAILOVER and d.target == standby.cert.id
