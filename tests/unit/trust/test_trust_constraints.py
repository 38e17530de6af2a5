"""Evaluation on test PKIs: every constraint type, cross-signed paths, time travel.

The test program data is written in the upstream formats (certdata.txt, root_store.textproto,
authroot.stl, PEM bundle) and goes through the real importers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from trustpki import Lab, make_intermediate, make_leaf

from certfailover.trust.evaluate import ForecastKind, Reason, TrustEngine, shares_root
from certfailover.trust.snapshot import read_snapshot, save_snapshot

CUT = datetime(2024, 11, 11, 23, 59, 59, tzinfo=UTC)  # Entrust-style SCT cut-off


def _at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 12, tzinfo=UTC)


def test_unconstrained_root_trusted_everywhere(lab: Lab) -> None:
    ica = make_intermediate(lab.plain, "Plain CA")
    leaf = make_leaf(ica, scts=[_at(2024, 1, 1)])
    ev = lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 2, 1), name="www.example.test")
    assert {v.program: v.trusted for v in ev.verdicts} == {
        "apple": True, "chrome": True, "microsoft": True, "mozilla": True}
    v = ev.verdict("mozilla")
    assert [p.sha256 for p in v.path] == [ev.leaf_sha256, ica.sha256, lab.plain.sha256]
    assert v.forecasts == ()


def test_no_path_without_intermediate(lab: Lab) -> None:
    ica = make_intermediate(lab.plain, "Plain CA 2")
    ev = lab.engine.evaluate(make_leaf(ica), [], at=_at(2024, 2, 1))
    assert all(v.reason is Reason.NO_PATH and not v.trusted for v in ev.verdicts)


def test_root_not_included(lab: Lab) -> None:
    ica = make_intermediate(lab.allafter, "AllAfter CA")
    leaf = make_leaf(ica, not_before=_at(2024, 12, 1), scts=[_at(2024, 12, 1)])
    ev = lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 12, 2), programs=["mozilla", "chrome"])
    assert ev.verdict("mozilla").reason is Reason.ROOT_NOT_INCLUDED
    assert ev.verdict("chrome").trusted


def test_chrome_sct_constraint_before_and_after_cutoff(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Entrust-like CA")
    before = make_leaf(ica, not_before=_at(2024, 11, 1), scts=[_at(2024, 11, 1)])
    after = make_leaf(ica, not_before=_at(2024, 11, 20), scts=[_at(2024, 11, 20)])
    at = _at(2024, 12, 1)  # Chrome 131 is stable
    assert lab.engine.evaluate(before, [ica.cert], at=at, programs=["chrome"]).verdict("chrome").trusted
    v = lab.engine.evaluate(after, [ica.cert], at=at, programs=["chrome"]).verdict("chrome")
    assert not v.trusted and v.reason is Reason.SCT_CONSTRAINT
    assert "2024-11-20" in v.detail and "2024-11-11T23:59:59Z" in v.detail
    # the same certificate under Chrome 130: the version-gated set does not apply yet
    v130 = lab.engine.evaluate(after, [ica.cert], at=at, programs=["chrome"], chrome_version=130)
    c = v130.verdict("chrome")
    assert c.trusted
    fc = [f for f in c.forecasts if f.kind is ForecastKind.CERTIFICATE]
    assert fc and fc[0].reason is Reason.SCT_CONSTRAINT and "Chrome 131" in fc[0].detail


def test_chrome_sct_missing_fails_the_sct_set(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Entrust-like CA 2")
    leaf = make_leaf(ica, not_before=_at(2024, 11, 1), scts=None)
    v = lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 12, 1), programs=["chrome"]).verdict("chrome")
    assert v.reason is Reason.SCT_CONSTRAINT and "no embedded SCT" in v.detail


def test_forecast_before_the_entrust_cutoff(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Entrust-like CA 3")
    leaf = make_leaf(ica, not_before=_at(2024, 9, 1), scts=[_at(2024, 9, 1)])
    ev = lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 9, 2), programs=["chrome", "mozilla"])
    chrome, moz = ev.verdict("chrome"), ev.verdict("mozilla")
    assert chrome.trusted and moz.trusted
    iss = [f for f in chrome.forecasts if f.kind is ForecastKind.ISSUANCE]
    assert iss and iss[0].date == CUT
    assert not [f for f in chrome.forecasts if f.kind is ForecastKind.CERTIFICATE]
    m = [f for f in moz.forecasts if f.kind is ForecastKind.ISSUANCE]
    assert m and m[0].date == datetime(2024, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert m[0].reason is Reason.DISTRUST_AFTER


def test_chrome_sct_all_after(lab: Lab) -> None:
    ica = make_intermediate(lab.allafter, "AllAfter CA 2")
    mixed = make_leaf(ica, not_before=_at(2024, 12, 1), scts=[_at(2024, 11, 1), _at(2024, 12, 1)])
    good = make_leaf(ica, not_before=_at(2024, 12, 1), scts=[_at(2024, 12, 1), _at(2024, 12, 1)])
    at = _at(2024, 12, 2)
    assert lab.engine.evaluate(good, [ica.cert], at=at, programs=["chrome"]).verdict("chrome").trusted
    v = lab.engine.evaluate(mixed, [ica.cert], at=at, programs=["chrome"]).verdict("chrome")
    assert v.reason is Reason.SCT_CONSTRAINT


@pytest.mark.parametrize(
    ("not_before", "trusted"),
    [((2024, 6, 1), True), ((2024, 9, 1), False), ((2025, 2, 1), True)],
)
def test_chrome_validity_window(lab: Lab, not_before: tuple[int, int, int], trusted: bool) -> None:
    ica = make_intermediate(lab.validity, "Validity CA")
    leaf = make_leaf(ica, not_before=_at(*not_before))
    v = lab.engine.evaluate(leaf, [ica.cert], at=_at(*not_before) + timedelta(days=1),
                            programs=["chrome"]).verdict("chrome")
    assert v.trusted is trusted
    if not trusted:
        assert v.reason is Reason.VALIDITY_CONSTRAINT


def test_chrome_permitted_dns_names(lab: Lab) -> None:
    ica = make_intermediate(lab.names, "Names CA")
    inside = make_leaf(ica, ["a.example.test", "*.b.example.test"])
    outside = make_leaf(ica, ["a.example.test", "www.other.test"])
    at = _at(2024, 1, 2)
    assert lab.engine.evaluate(inside, [ica.cert], at=at, programs=["chrome"]).verdict("chrome").trusted
    v = lab.engine.evaluate(outside, [ica.cert], at=at, programs=["chrome"]).verdict("chrome")
    assert v.reason is Reason.NAME_CONSTRAINT and "www.other.test" in v.detail


def test_mozilla_distrust_after_on_cert_and_trust_object(lab: Lab) -> None:
    for root, cut in ((lab.entrust, datetime(2024, 11, 30, 23, 59, 59, tzinfo=UTC)),
                      (lab.trustobj, datetime(2024, 6, 1, tzinfo=UTC))):
        ica = make_intermediate(root, f"{root.cert.subject.rfc4514_string()} CA")
        early = make_leaf(ica, not_before=cut - timedelta(days=10))
        late = make_leaf(ica, not_before=cut + timedelta(days=1))
        at = cut + timedelta(days=2)
        assert lab.engine.evaluate(early, [ica.cert], at=at, programs=["mozilla"]).verdict("mozilla").trusted
        v = lab.engine.evaluate(late, [ica.cert], at=at, programs=["mozilla"]).verdict("mozilla")
        assert v.reason is Reason.DISTRUST_AFTER


def test_mozilla_explicit_distrust(lab: Lab) -> None:
    ica = make_intermediate(lab.blocked, "Blocked CA")
    v = lab.engine.evaluate(make_leaf(ica), [ica.cert], at=_at(2024, 1, 2), programs=["mozilla"]).verdict("mozilla")
    assert v.reason is Reason.ROOT_REMOVED


def test_microsoft_notbefore_cutoff_and_disallowed_date(lab: Lab) -> None:
    ica = make_intermediate(lab.ms, "MS CA")
    early = make_leaf(ica, not_before=_at(2024, 5, 1), days=398)
    late = make_leaf(ica, not_before=_at(2024, 7, 1), days=398)
    v = lab.engine.evaluate(early, [ica.cert], at=_at(2024, 7, 2), programs=["microsoft"]).verdict("microsoft")
    assert v.trusted
    assert [f.date for f in v.forecasts if f.kind is ForecastKind.CERTIFICATE] == [datetime(2025, 1, 1, tzinfo=UTC)]
    assert lab.engine.evaluate(late, [ica.cert], at=_at(2024, 7, 2),
                               programs=["microsoft"]).verdict("microsoft").reason is Reason.DISTRUST_AFTER
    # time travel past the disallowed date: removed for every certificate
    gone = lab.engine.evaluate(early, [ica.cert], at=_at(2025, 1, 2), programs=["microsoft"]).verdict("microsoft")
    assert gone.reason is Reason.ROOT_REMOVED


def test_microsoft_eku_restriction(lab: Lab) -> None:
    ica = make_intermediate(lab.ms_eku, "MS ClientOnly CA")
    v = lab.engine.evaluate(make_leaf(ica), [ica.cert], at=_at(2024, 1, 2), programs=["microsoft"]).verdict("microsoft")
    assert v.reason is Reason.EKU


def test_intermediate_eku_and_name_mismatch(lab: Lab) -> None:
    ica = make_intermediate(lab.plain, "Client CA", ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
    v = lab.engine.evaluate(make_leaf(ica), [ica.cert], at=_at(2024, 1, 2), programs=["apple"]).verdict("apple")
    assert v.reason is Reason.EKU
    ica2 = make_intermediate(lab.plain, "Plain CA 3")
    v2 = lab.engine.evaluate(make_leaf(ica2, ["www.example.test"]), [ica2.cert], at=_at(2024, 1, 2),
                             programs=["apple"], name="other.example.test").verdict("apple")
    assert v2.reason is Reason.NAME_MISMATCH


def test_time_travel_expiry_and_not_yet_valid(lab: Lab) -> None:
    ica = make_intermediate(lab.plain, "Plain CA 4")
    leaf = make_leaf(ica, not_before=_at(2024, 3, 1), days=90)
    progs = ["apple"]
    assert lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 2, 1), programs=progs).verdict("apple").reason is Reason.NOT_YET_VALID
    assert lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 4, 1), programs=progs).verdict("apple").trusted
    assert lab.engine.evaluate(leaf, [ica.cert], at=_at(2024, 7, 1), programs=progs).verdict("apple").reason is Reason.EXPIRED


def test_cross_signed_alternate_paths(lab: Lab) -> None:
    # Root B is distrusted-after 2023 in Mozilla but cross-signed by Root A (plain in Mozilla).
    cross = make_intermediate(lab.root_a, "Root B", key_label="Root B")
    ica = make_intermediate(lab.root_b, "B Issuing CA")
    leaf = make_leaf(ica, not_before=_at(2024, 1, 1))
    at = _at(2024, 1, 2)
    # served without the cross-sign: only the path to Root B exists
    only_b = lab.engine.evaluate(leaf, [ica.cert], at=at, programs=["mozilla", "chrome", "apple"])
    assert only_b.verdict("mozilla").reason is Reason.DISTRUST_AFTER
    assert only_b.verdict("chrome").trusted
    assert only_b.verdict("apple").reason is Reason.ROOT_NOT_INCLUDED
    # with the cross-sign: Mozilla and Apple trust it via Root A, Chrome still via Root B
    ev = lab.engine.evaluate(leaf, [ica.cert, cross.cert], at=at, programs=["mozilla", "chrome", "apple"])
    assert ev.paths == 3  # leaf>ica>RootB(self-signed), leaf>ica>cross(=Root B key), leaf>ica>cross>RootA
    moz = ev.verdict("mozilla")
    assert moz.trusted and moz.path[-1].sha256 == lab.root_a.sha256
    assert ev.verdict("apple").trusted and ev.verdict("chrome").trusted
    assert ev.verdict("chrome").root == lab.root_b.sha256


def test_shares_root(lab: Lab) -> None:
    ica1 = make_intermediate(lab.plain, "Plain CA 5")
    ica2 = make_intermediate(lab.plain, "Plain CA 6")
    other = make_intermediate(lab.root_a, "A Issuing CA")
    a = [make_leaf(ica1), ica1.cert]
    b = [make_leaf(ica2), ica2.cert]
    c = [make_leaf(other), other.cert]
    progs = ["mozilla", "chrome", "apple", "microsoft"]
    assert shares_root(a, b, progs, snapshot=lab.snap) == progs
    assert shares_root(a, c, progs, snapshot=lab.snap) == []


def test_snapshot_round_trip(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "snap.json.gz"
    save_snapshot(lab.snap, path)
    again = read_snapshot(path)
    assert again.programs == lab.snap.programs and again.certs == lab.snap.certs
    ica = make_intermediate(lab.entrust, "Entrust-like CA 9")
    leaf = make_leaf(ica, not_before=_at(2024, 11, 20), scts=[_at(2024, 11, 20)])
    v = TrustEngine(again).evaluate(leaf, [ica.cert], at=_at(2024, 12, 1), programs=["chrome"])
    assert v.verdict("chrome").reason is Reason.SCT_CONSTRAINT
