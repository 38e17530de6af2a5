from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from revpki import NOW, PKI, make_ca, make_ocsp

from certfailover.revocation.ocsp import aia_ocsp_urls, build_request, get_url, verify_response
from certfailover.revocation.result import InvalidRevocationData, Status

SRC = "http://ocsp.example"


def _verify(pki: PKI, leaf: x509.Certificate, der: bytes) -> Status:
    return verify_response(der, leaf=leaf, issuer=pki.issuer, request=build_request(
        leaf, pki.issuer), now=NOW, source=SRC).result.status


def test_signed_by_issuer_good_and_revoked(pki: PKI) -> None:
    leaf = pki.leaf()
    assert _verify(pki, leaf, make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key)) \
        is Status.GOOD
    der = make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key,
                    status=ocsp.OCSPCertStatus.REVOKED, reason=x509.ReasonFlags.key_compromise)
    ans = verify_response(der, leaf=leaf, issuer=pki.issuer,
                          request=build_request(leaf, pki.issuer), now=NOW, source=SRC)
    assert ans.result.status is Status.REVOKED
    assert ans.result.key_compromise and ans.result.source == "ocsp"
    assert ans.result.revoked_at is not None


def test_responder_unknown_status(pki: PKI) -> None:
    leaf = pki.leaf()
    der = make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key,
                    status=ocsp.OCSPCertStatus.UNKNOWN)
    assert _verify(pki, leaf, der) is Status.UNKNOWN


def test_cache_until_half_validity(pki: PKI) -> None:
    leaf = pki.leaf()
    der = make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key,
                    this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(hours=11))
    ans = verify_response(der, leaf=leaf, issuer=pki.issuer,
                          request=build_request(leaf, pki.issuer), now=NOW, source=SRC)
    assert ans.cache_until == NOW + timedelta(hours=5)


def test_delegated_responder_accepted(pki: PKI) -> None:
    leaf = pki.leaf()
    rc, rk = pki.responder()
    der = make_ocsp(leaf, pki.issuer, rc, rk, status=ocsp.OCSPCertStatus.REVOKED)
    assert _verify(pki, leaf, der) is Status.REVOKED


@pytest.mark.parametrize("kind", ["no_eku", "other_issuer", "expired", "absent"])
def test_bad_delegated_responder_rejected(pki: PKI, kind: str) -> None:
    leaf = pki.leaf()
    if kind == "no_eku":
        rc, rk = pki.responder(eku=False)
    elif kind == "other_issuer":
        rc, rk = pki.responder(by=make_ca("Test Intermediate"))  # same name, other key
    elif kind == "expired":
        rc, rk = pki.responder(expired=True)
    else:
        rc, rk = pki.responder()
    der = make_ocsp(leaf, pki.issuer, rc, rk, status=ocsp.OCSPCertStatus.REVOKED,
                    include_signer=kind != "absent")
    with pytest.raises(InvalidRevocationData):
        _verify(pki, leaf, der)


def test_forged_signature_rejected(pki: PKI) -> None:
    """A 'revoked' signed by a key claiming to be the issuer (same name) is not trusted."""
    leaf = pki.leaf()
    forger = make_ca("Test Intermediate")
    der = make_ocsp(leaf, pki.issuer, forger[0], forger[1],
                    status=ocsp.OCSPCertStatus.REVOKED, include_signer=False)
    with pytest.raises(InvalidRevocationData):
        _verify(pki, leaf, der)
    # responder id by name: the forger's certificate carries the issuer's name
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=pki.issuer, algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED, this_update=NOW, next_update=NOW
        + timedelta(hours=1), revocation_time=NOW, revocation_reason=None).responder_id(
        ocsp.OCSPResponderEncoding.NAME, forger[0])
    forged = b.sign(forger[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(InvalidRevocationData, match="signature"):
        _verify(pki, leaf, forged)


def test_certid_mismatch_rejected(pki: PKI) -> None:
    leaf, other = pki.leaf(), pki.leaf()
    der = make_ocsp(other, pki.issuer, pki.issuer, pki.issuer_key)
    with pytest.raises(InvalidRevocationData, match="CertID"):
        _verify(pki, leaf, der)


@pytest.mark.parametrize(("this", "nxt", "msg"), [
    (NOW - timedelta(days=2), NOW - timedelta(days=1), "stale"),
    (NOW + timedelta(hours=1), NOW + timedelta(days=1), "future"),
    (NOW - timedelta(hours=3), None, "stale"),
])
def test_time_window(pki: PKI, this: object, nxt: object, msg: str) -> None:
    leaf = pki.leaf()
    der = make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key,
                    this_update=this, next_update=nxt)  # type: ignore[arg-type]
    with pytest.raises(InvalidRevocationData, match=msg):
        _verify(pki, leaf, der)


def test_within_skew_accepted(pki: PKI) -> None:
    leaf = pki.leaf()
    der = make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key,
                    this_update=NOW + timedelta(minutes=3))
    assert _verify(pki, leaf, der) is Status.GOOD


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x03\x0a\x01\x06",
                                  b"\x30\x82\xff\xff" + b"\x00" * 10])
def test_garbage_rejected(pki: PKI, body: bytes) -> None:
    with pytest.raises(InvalidRevocationData):
        _verify(pki, pki.leaf(), body)


def test_get_url_and_aia(pki: PKI) -> None:
    leaf = pki.leaf(ocsp_urls=("http://ocsp.example/a",))
    assert aia_ocsp_urls(leaf) == ("http://ocsp.example/a",)
    url = get_url("http://ocsp.example/a/", b"\xfb\xff")
    assert url == "http://ocsp.example/a/%2B%2F8%3D"
