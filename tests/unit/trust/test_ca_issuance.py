"""A CA past a distrust-after date is dead for new certificates (issue: Symantec / Entrust /
TrustCor pattern): the certificate issued before the cut-off stays trusted, the CA is judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trustpki import Lab, make_intermediate, make_leaf

from certfailover.checks import CheckContext
from certfailover.model import Severity
from certfailover.sitetrust import Program
from certfailover.testing.pki import material
from certfailover.trust.check import ProgramTrustCheck
from certfailover.trust.evaluate import Reason

CUT = datetime(2024, 11, 30, 23, 59, 59, tzinfo=UTC)  # lab.entrust's Mozilla distrust-after


def test_a_ca_past_its_cutoff_cannot_issue_though_its_old_certificate_is_trusted(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Entrust-like CA")
    early = make_leaf(ica, not_before=CUT - timedelta(days=10))
    at = CUT + timedelta(days=2)
    assert lab.engine.evaluate(early, [ica.cert], at=at, programs=["mozilla"]).verdict(
        "mozilla").trusted
    v = lab.engine.issuable(early, [ica.cert], at=at, programs=["mozilla"])[0]
    assert not v.trusted and v.reason is Reason.DISTRUST_AFTER and "Entrust-like" in v.detail
    before = lab.engine.issuable(early, [ica.cert], at=CUT - timedelta(days=1),
                                 programs=["mozilla"])[0]
    assert before.trusted and before.forecasts, "the cut-off ahead is forecast"


def test_the_trust_check_warns_that_the_ca_cannot_replace_the_certificate(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Entrust-like CA")
    early = make_leaf(ica, not_before=CUT - timedelta(days=10))
    check = ProgramTrustCheck(lab.snap)
    ctx = CheckContext(now=CUT + timedelta(days=2), domains=("www.example.test",),
                       trust=(Program("mozilla"),))
    found = check.run(material(early, [ica.cert], ca="entrust"), ctx)
    trust = [f for f in found if f.check == "trust"]
    dead = [f for f in found if f.check == "ca_issuance"]
    assert trust and all(f.severity is Severity.OK for f in trust), "the certificate is trusted"
    assert len(dead) == 1 and dead[0].severity is Severity.WARN
    assert dead[0].cannot_issue_for == "mozilla" and dead[0].detail["ca"] == "entrust"
    assert "can no longer issue" in dead[0].reason
    plain_ica = make_intermediate(lab.plain, "Plain CA")
    fine = check.run(material(make_leaf(plain_ica), [plain_ica.cert], ca="plain"), ctx)
    assert not [f for f in fine if f.check == "ca_issuance"]
