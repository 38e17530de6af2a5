"""Real CRLs (NIST PKITS) and OCSP responses from the cryptography-vectors package."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certfailover.revocation.crl import load_crl, verify_crl
from certfailover.revocation.ocsp import build_request, verify_response
from certfailover.revocation.result import InvalidRevocationData, Status

BASE = os.path.join(os.path.dirname(cryptography_vectors.__file__), "x509")
PKITS = os.path.join(BASE, "PKITS_data")
NOW = datetime(2026, 3, 1, tzinfo=UTC)  # PKITS CRLs: 2010 .. 2030


def cert(name: str) -> x509.Certificate:
    with open(os.path.join(PKITS, "certs", name + ".crt"), "rb") as f:
        return x509.load_der_x509_certificate(f.read())


def crl_file(name: str) -> x509.CertificateRevocationList:
    with open(os.path.join(PKITS, "crls", name + ".crl"), "rb") as f:
        return load_crl(f.read(), source=name)


@pytest.mark.parametrize(("ee", "ca", "crl", "expected"), [
    ("ValidCertificatePathTest1EE", "GoodCACert", "GoodCACRL", Status.GOOD),
    ("InvalidRevokedEETest3EE", "GoodCACert", "GoodCACRL", Status.REVOKED),
    ("InvalidonlyContainsCACertsTest12EE", "onlyContainsCACertsCACert",
     "onlyContainsCACertsCACRL", Status.UNKNOWN),
    ("InvalidonlyContainsAttributeCertsTest14EE", "onlyContainsAttributeCertsCACert",
     "onlyContainsAttributeCertsCACRL", Status.UNKNOWN),
    ("InvalidonlySomeReasonsTest15EE", "onlySomeReasonsCA1Cert",
     "onlySomeReasonsCA1compromiseCRL", Status.REVOKED),
    ("ValidonlySomeReasonsTest18EE", "onlySomeReasonsCA3Cert",
     "onlySomeReasonsCA3compromiseCRL", Status.UNKNOWN),
])
def test_pkits_crl_verdicts(ee: str, ca: str, crl: str, expected: Status) -> None:
    verified = verify_crl(crl_file(crl), cert(ca), url="http://pkits.invalid/" + crl, now=NOW)
    assert verified.status(cert(ee), NOW).status is expected


def test_pkits_revoked_reason_is_key_compromise() -> None:
    verified = verify_crl(crl_file("GoodCACRL"), cert("GoodCACert"), url="u", now=NOW)
    r = verified.status(cert("InvalidRevokedEETest3EE"), NOW)
    assert r.status is Status.REVOKED
    assert r.reason == "key_compromise"
    assert r.key_compromise


@pytest.mark.parametrize(("ca", "crl", "message"), [
    ("BadCRLSignatureCACert", "BadCRLSignatureCACRL", "signature"),
    ("BadCRLIssuerNameCACert", "BadCRLIssuerNameCACRL", "issuer"),
    ("WrongCRLCACert", "WrongCRLCACRL", "issuer"),
    ("OldCRLnextUpdateCACert", "OldCRLnextUpdateCACRL", "stale"),
    ("deltaCRLCA1Cert", "deltaCRLCA1deltaCRL", "delta"),
    ("GoodCACert", "TrustAnchorRootCRL", "issuer"),
])
def test_pkits_bad_crls_are_rejected(ca: str, crl: str, message: str) -> None:
    with pytest.raises(InvalidRevocationData, match=message):
        verify_crl(crl_file(crl), cert(ca), url="http://pkits.invalid/" + crl, now=NOW)


def test_pkits_every_crl_parses() -> None:
    names = [n[:-4] for n in os.listdir(os.path.join(PKITS, "crls")) if n.endswith(".crl")]
    assert len(names) > 150
    for n in names:
        assert crl_file(n).issuer is not None


def _vec(path: str) -> bytes:
    with open(os.path.join(BASE, path), "rb") as f:
        return f.read()


def test_real_lets_encrypt_ocsp_response_verifies() -> None:
    leaf = x509.load_pem_x509_certificate(_vec("cryptography.io.precert.pem"))
    issuer = x509.load_pem_x509_certificate(_vec("letsencryptx3.pem"))
    req = build_request(leaf, issuer)  # the response's CertID uses SHA-1 (signature: SHA-256)
    at = datetime(2018, 9, 1, tzinfo=UTC)
    ans = verify_response(_vec("ocsp/resp-sha256.der"), leaf=leaf, issuer=issuer, request=req,
                          now=at, source="vector")
    assert ans.result.status is Status.GOOD
    assert ans.cache_until == ans.this_update + (ans.next_update - ans.this_update) / 2  # type: ignore[operator]
    # a week later the same response is stale
    with pytest.raises(InvalidRevocationData, match="stale"):
        verify_response(_vec("ocsp/resp-sha256.der"), leaf=leaf, issuer=issuer, request=req,
                        now=datetime(2018, 9, 8, tzinfo=UTC), source="vector")
    # a SHA-256 CertID request does not match the SHA-1 CertID of the response
    with pytest.raises(InvalidRevocationData, match="CertID"):
        verify_response(_vec("ocsp/resp-sha256.der"), leaf=leaf, issuer=issuer,
                        request=build_request(leaf, issuer, hashes.SHA256()), now=at,
                        source="vector")


@pytest.mark.parametrize("name", [
    "ocsp/resp-invalid-signature-oid.der", "ocsp/resp-unauthorized.der",
    "ocsp/resp-unknown-response-status.der", "ocsp/resp-successful-no-response-bytes.der",
    "ocsp/resp-invalid-version.der", "ocsp/resp-revoked-reason.der", "ocsp/resp-revoked.der",
])
def test_real_ocsp_responses_not_for_this_issuer_are_rejected(name: str) -> None:
    leaf = x509.load_pem_x509_certificate(_vec("cryptography.io.precert.pem"))
    issuer = x509.load_pem_x509_certificate(_vec("letsencryptx3.pem"))
    with pytest.raises(InvalidRevocationData):
        verify_response(_vec(name), leaf=leaf, issuer=issuer,
                        request=build_request(leaf, issuer),
                        now=datetime(2018, 9, 1, tzinfo=UTC), source=name)
