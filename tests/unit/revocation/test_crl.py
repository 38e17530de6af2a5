from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from revpki import NOW, PKI, make_ca, make_crl

from certfailover.revocation.crl import cdp_urls, load_crl, verify_crl
from certfailover.revocation.result import InvalidRevocationData, Status

URL = "http://crl.example/a.crl"


def test_revoked_and_good(pki: PKI) -> None:
    bad, ok = pki.leaf(serial=1001), pki.leaf(serial=1002)
    crl = verify_crl(make_crl(pki.issuer, pki.issuer_key, {1001: x509.ReasonFlags.superseded}),
                     pki.issuer, url=URL, now=NOW)
    r = crl.status(bad, NOW)
    assert (r.status, r.reason, r.source, r.url) == (Status.REVOKED, "superseded", "crl", URL)
    assert not r.key_compromise
    assert crl.status(ok, NOW).status is Status.GOOD
    assert len(crl) == 1 and 1001 in crl and 1002 not in crl


def test_entry_without_reason_is_unspecified(pki: PKI) -> None:
    crl = verify_crl(make_crl(pki.issuer, pki.issuer_key, {7: None}), pki.issuer, url=URL,
                     now=NOW)
    assert crl.status(pki.leaf(serial=7), NOW).reason == "unspecified"


def test_forged_signature_rejected(pki: PKI) -> None:
    forger = make_ca("Test Intermediate")  # same name, other key
    forged = make_crl(pki.issuer, forger[1], {1001: x509.ReasonFlags.key_compromise})
    with pytest.raises(InvalidRevocationData, match="signature"):
        verify_crl(forged, pki.issuer, url=URL, now=NOW)


def test_wrong_issuer_rejected(pki: PKI) -> None:
    other = make_ca("Other CA")
    with pytest.raises(InvalidRevocationData, match="issuer"):
        verify_crl(make_crl(other[0], other[1], {}), pki.issuer, url=URL, now=NOW)


def test_issuer_without_crl_sign_rejected(pki: PKI) -> None:
    ca = make_ca("No CRL", crl_sign=False)
    with pytest.raises(InvalidRevocationData, match="cRLSign"):
        verify_crl(make_crl(ca[0], ca[1], {}), ca[0], url=URL, now=NOW)


@pytest.mark.parametrize(("this", "nxt", "msg"), [
    (NOW - timedelta(days=3), NOW - timedelta(days=1), "stale"),
    (NOW + timedelta(hours=2), NOW + timedelta(days=1), "future"),
])
def test_time_window(pki: PKI, this: object, nxt: object, msg: str) -> None:
    crl = make_crl(pki.issuer, pki.issuer_key, {}, this_update=this,  # type: ignore[arg-type]
                   next_update=nxt)  # type: ignore[arg-type]
    with pytest.raises(InvalidRevocationData, match=msg):
        verify_crl(crl, pki.issuer, url=URL, now=NOW)


def test_cached_crl_turns_unknown_when_stale(pki: PKI) -> None:
    crl = verify_crl(make_crl(pki.issuer, pki.issuer_key, {}), pki.issuer, url=URL, now=NOW)
    later = NOW + timedelta(days=2)
    r = crl.status(pki.leaf(), later)
    assert r.status is Status.UNKNOWN and "not current" in (r.reason or "")


def test_skew_allowance(pki: PKI) -> None:
    crl = verify_crl(make_crl(pki.issuer, pki.issuer_key, {}, this_update=NOW + timedelta(
        minutes=2)), pki.issuer, url=URL, now=NOW)
    assert crl.status(pki.leaf(), NOW).status is Status.GOOD


def test_garbage_rejected() -> None:
    with pytest.raises(InvalidRevocationData, match="not a CRL"):
        load_crl(b"\x30\x03garbage", source=URL)
    with pytest.raises(InvalidRevocationData, match=URL):
        load_crl(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", source=URL)


def test_pem_and_der_load(pki: PKI) -> None:
    crl = make_crl(pki.issuer, pki.issuer_key, {5: None})
    for enc in (serialization.Encoding.PEM, serialization.Encoding.DER):
        assert load_crl(crl.public_bytes(enc), source=URL) == crl


def _idp(**kw: object) -> x509.IssuingDistributionPoint:
    args: dict[str, object] = {"full_name": None, "relative_name": None,
                                   "only_contains_user_certs": False,
                                   "only_contains_ca_certs": False, "only_some_reasons": None,
                                   "indirect_crl": False, "only_contains_attribute_certs": False}
    args.update(kw)
    return x509.IssuingDistributionPoint(**args)  # type: ignore[arg-type]


def test_idp_scope(pki: PKI) -> None:
    leaf_dp = pki.leaf(serial=55, cdp=(URL,))
    other_dp = pki.leaf(serial=56, cdp=("http://crl.example/b.crl",))
    no_dp = pki.leaf(serial=57)
    crl = verify_crl(make_crl(pki.issuer, pki.issuer_key, {}, idp=_idp(
        full_name=[x509.UniformResourceIdentifier(URL)])), pki.issuer, url=URL, now=NOW)
    assert crl.status(leaf_dp, NOW).status is Status.GOOD
    assert crl.status(other_dp, NOW).status is Status.UNKNOWN
    assert crl.status(no_dp, NOW).status is Status.GOOD  # fetched from the URL it names
    elsewhere = verify_crl(make_crl(pki.issuer, pki.issuer_key, {}, idp=_idp(
        full_name=[x509.UniformResourceIdentifier(URL)])), pki.issuer,
        url="http://mirror.example/x.crl", now=NOW)
    assert elsewhere.status(no_dp, NOW).status is Status.UNKNOWN
    ca_only = verify_crl(make_crl(pki.issuer, pki.issuer_key, {}, idp=_idp(
        only_contains_ca_certs=True)), pki.issuer, url=URL, now=NOW)
    assert ca_only.status(no_dp, NOW).status is Status.UNKNOWN
    some = verify_crl(make_crl(pki.issuer, pki.issuer_key, {57: None}, idp=_idp(
        only_some_reasons=frozenset({x509.ReasonFlags.key_compromise}))), pki.issuer,
        url=URL, now=NOW)
    assert some.status(no_dp, NOW).status is Status.REVOKED
    assert some.status(leaf_dp, NOW).status is Status.UNKNOWN


def test_indirect_crl_rejected(pki: PKI) -> None:
    with pytest.raises(InvalidRevocationData, match="indirect"):
        verify_crl(make_crl(pki.issuer, pki.issuer_key, {}, idp=_idp(indirect_crl=True)),
                   pki.issuer, url=URL, now=NOW)


def test_cdp_urls(pki: PKI) -> None:
    assert cdp_urls(pki.leaf(cdp=(URL, "ldap://x/y"))) == (URL,)
    assert cdp_urls(pki.leaf()) == ()


def test_large_crl_index(pki: PKI) -> None:
    revoked = {i: None for i in range(1, 20001)}
    crl = verify_crl(make_crl(pki.issuer, pki.issuer_key, revoked), pki.issuer, url=URL,
                     now=NOW)
    assert len(crl) == 20000
    assert crl.status(pki.leaf(serial=19999), NOW).status is Status.REVOKED
    assert crl.status(pki.leaf(serial=20001), NOW).status is Status.GOOD
