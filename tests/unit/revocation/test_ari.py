from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography import x509
from revpki import NOW, PKI

from certfailover.revocation.ari import ari_cert_id, parse_renewal_info, parse_retry_after
from certfailover.revocation.result import InvalidRevocationData


def test_rfc9773_example_identifier(pki: PKI) -> None:
    # RFC 9773 section 4.1: keyIdentifier 69:88:5B:..:D4, serial 0x87654321
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    leaf = (x509.CertificateBuilder().subject_name(pki.issuer.subject)
            .issuer_name(pki.issuer.subject).public_key(pki.issuer_key.public_key())
            .serial_number(0x87654321).not_valid_before(NOW).not_valid_after(NOW + timedelta(1))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), False)
            .sign(pki.issuer_key, __import__("cryptography.hazmat.primitives.hashes",
                                             fromlist=["SHA256"]).SHA256()))
    assert ari_cert_id(leaf) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_no_aki_is_an_error(pki: PKI) -> None:
    with pytest.raises(ValueError, match="authorityKeyIdentifier"):
        ari_cert_id(pki.leaf(aki=False))


def _doc(start: str, end: str, **extra: object) -> bytes:
    return json.dumps({"suggestedWindow": {"start": start, "end": end}, **extra}).encode()


def test_parse_window_and_explanation() -> None:
    info = parse_renewal_info(_doc("2026-02-28T00:00:00Z", "2026-03-02T00:00:00Z",
                                   explanationURL="https://ca.example/incident"),
                              ari_id="x.y", source="u", now=NOW, retry_after="120")
    assert info.started(NOW)
    assert info.explanation_url == "https://ca.example/incident"
    assert info.next_poll == NOW + timedelta(seconds=120)
    later = parse_renewal_info(_doc("2026-04-01T00:00:00+00:00", "2026-04-02T00:00:00+00:00"),
                               ari_id="x.y", source="u", now=NOW)
    assert not later.started(NOW)
    assert later.next_poll == NOW + timedelta(hours=6)


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"suggestedWindow": 1}',
    _doc("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z"),
    _doc("yesterday", "2026-03-01T00:00:00Z"),
    _doc("2026-03-01T00:00:00", "2026-03-02T00:00:00"),
    json.dumps({"suggestedWindow": {"start": "2026-03-01T00:00:00Z",
                                    "end": "2026-03-02T00:00:00Z"},
                "explanationURL": 5}).encode(),
])
def test_bad_documents(body: bytes) -> None:
    with pytest.raises(InvalidRevocationData, match="src"):
        parse_renewal_info(body, ari_id="x.y", source="src", now=NOW)


def test_retry_after_forms_and_clamp() -> None:
    assert parse_retry_after("5", NOW) == NOW + timedelta(minutes=1)
    assert parse_retry_after("999999", NOW) == NOW + timedelta(hours=6)
    assert parse_retry_after("Sun, 01 Mar 2026 14:00:00 GMT", NOW) == NOW + timedelta(hours=2)
    assert parse_retry_after("nonsense", NOW) == NOW + timedelta(hours=6)
