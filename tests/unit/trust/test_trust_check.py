"""ProgramTrustCheck: the Findings the lead's health and policy code consume."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from trustpki import Lab, make_intermediate, make_leaf

from certfailover.checks import Check, CheckContext
from certfailover.config import SYSTEM
from certfailover.model import Severity, Signal
from certfailover.sitetrust import PemBundle, Program
from certfailover.testing.pki import material
from certfailover.trust import KNOWN_PROGRAMS, ProgramTrustCheck


def _ctx(now: datetime, names: tuple[str, ...], days: int | None = None) -> CheckContext:
    trust = tuple(PemBundle(Path(n)) if "/" in n else SYSTEM if n == "system" else Program(n)
                  for n in names)
    if days is None:
        return CheckContext(now=now, domains=("www.example.test",), trust=trust)
    return CheckContext(now=now, domains=("www.example.test",), trust=trust, forecast_days=days)


def test_is_a_check_and_names_known_programs() -> None:
    assert isinstance(ProgramTrustCheck(), Check)
    assert ProgramTrustCheck.name == "trust"
    assert {"mozilla", "chrome", "apple", "microsoft", "android", "java", "openjdk"} <= KNOWN_PROGRAMS
    assert "system" not in KNOWN_PROGRAMS


def test_ok_fail_and_unknown_names(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Check CA 1")
    leaf = make_leaf(ica, not_before=datetime(2024, 11, 20, tzinfo=UTC), scts=[datetime(2024, 11, 20, tzinfo=UTC)])
    check = ProgramTrustCheck(lab.snap)
    found = check.run(material(leaf, [ica.cert]),
                      _ctx(datetime(2024, 12, 1, tzinfo=UTC), ("chrome", "mozilla", "system", "/etc/b.pem")))
    by = {f.program: f for f in found if f.check == "trust"}
    assert set(by) == {"chrome", "mozilla"}  # "system" and bundle paths are left to other checks
    # trusted by Mozilla (issued before 2024-11-30), but its CA cannot issue one trusted now
    assert [(f.cannot_issue_for, f.program, f.severity) for f in found
            if f.check == "ca_issuance"] == [("mozilla", None, Severity.WARN)]
    assert by["chrome"].severity is Severity.FAIL and by["chrome"].check == "trust"
    assert by["chrome"].detail["reason"] == "sct_constraint" and "chrome" in by["chrome"].reason
    assert by["mozilla"].severity is Severity.OK  # notBefore before Mozilla's 2024-11-30 date
    assert check.run(material(leaf, [ica.cert]), _ctx(datetime(2024, 12, 1, tzinfo=UTC), ("system",))) == []


def test_forecast_inside_horizon_warns_with_date(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Check CA 2")
    leaf = make_leaf(ica, not_before=datetime(2024, 9, 1, tzinfo=UTC), scts=[datetime(2024, 9, 1, tzinfo=UTC)])
    check = ProgramTrustCheck(lab.snap)
    mat = material(leaf, [ica.cert])
    near = check.run(mat, _ctx(datetime(2024, 9, 2, tzinfo=UTC), ("chrome",)))  # 70 days ahead
    assert [f.severity for f in near] == [Severity.WARN]
    cutoff = datetime(2024, 11, 11, 23, 59, 59, tzinfo=UTC)
    assert near[0].forecast == cutoff and near[0].detail["kind"] == "issuance"
    assert near[0].next_due == {Signal.TRUST: cutoff} and not near[0].replace
    far = check.run(mat, _ctx(datetime(2024, 9, 2, tzinfo=UTC), ("chrome",), days=30))
    assert [f.severity for f in far] == [Severity.OK]


def test_program_missing_from_snapshot_warns(lab: Lab) -> None:
    ica = make_intermediate(lab.plain, "Check CA 3")
    found = ProgramTrustCheck(lab.snap).run(material(make_leaf(ica), [ica.cert]),
                                            _ctx(datetime(2024, 1, 2, tzinfo=UTC), ("android",)))
    assert [f.severity for f in found] == [Severity.WARN] and found[0].detail["reason"] == "no_data"
    assert not found[0].known and found[0].program == "android"
