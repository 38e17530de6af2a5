"""certfailover.testing itself: the fakes do what their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.x509.verification import PolicyBuilder, Store

from certfailover import keys
from certfailover.errors import IssuanceError, TransientIssuanceError
from certfailover.names import cert_names
from certfailover.testing import FakeClock, FakeIssuer, pki

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def csr(*domains: str) -> bytes:
    return keys.csr_pem(keys.generate("ec-p256"), list(domains))


def verify(issued_pem: bytes, chain_pem: bytes, root: pki.Authority, at: datetime) -> None:
    leaf = x509.load_pem_x509_certificates(issued_pem)[0]
    chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
    verifier = PolicyBuilder().store(Store([root.cert])).time(at).build_server_verifier(
        x509.DNSName("www.example.test"))
    verifier.verify(leaf, chain)


def test_the_kit_imports_neither_pytest_nor_the_lab() -> None:
    code = ("import sys, certfailover.testing; "
            "bad = [m for m in sys.modules if m == 'pytest' or m.startswith('certfailover_lab')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(T0)
    assert clock() == clock.now == T0
    assert clock.advance(hours=2) == T0 + timedelta(hours=2)
    assert clock.advance(timedelta(minutes=5)) == T0 + timedelta(hours=2, minutes=5)
    clock.now += timedelta(days=1)
    assert clock() == T0 + timedelta(days=1, hours=2, minutes=5)
    clock.set(T0)
    assert clock() == T0
    with pytest.raises(ValueError, match="back"):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 1, 1))  # a naive time is refused


def test_fake_issuer_issues_a_chain_that_validates_and_records_the_order() -> None:
    clock = FakeClock(T0)
    root = pki.make_root("Root", not_before=T0 - timedelta(days=10))
    ca = FakeIssuer("a", pki.make_intermediate(root, "Issuing", not_before=T0 - timedelta(days=10)),
                    clock=clock, lifetime=timedelta(days=7))
    assert ca(object()) is ca, "its own issuer factory"
    out = ca.issue(csr("www.example.test"), deadline=datetime.now(UTC) + timedelta(seconds=5),
                   replaces="aki.serial")
    verify(out.leaf_pem, out.chain_pem, root, T0)
    leaf = x509.load_pem_x509_certificate(out.leaf_pem)
    assert leaf.not_valid_after_utc == T0 - timedelta(hours=1) + timedelta(days=7)
    [order] = ca.orders
    assert (order.domains, order.replaces, order.outcome, order.serial) == \
        (("www.example.test",), "aki.serial", "issued", leaf.serial_number)


def test_fake_issuer_failures_and_unusable_certificates() -> None:
    clock = FakeClock(T0)
    root = pki.make_root("Root", not_before=T0 - timedelta(days=10))
    ca = FakeIssuer("a", pki.make_intermediate(root, "Issuing", not_before=T0 - timedelta(days=10)),
                    clock=clock)
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    ca.fail()
    with pytest.raises(TransientIssuanceError, match="CA a: connection refused"):
        ca.issue(csr("www.example.test"), deadline=deadline)
    ca.fail("account deactivated", transient=False)
    with pytest.raises(IssuanceError) as info:
        ca.issue(csr("www.example.test"), deadline=deadline)
    assert not isinstance(info.value, TransientIssuanceError)
    ca.heal()
    ca.make_unusable("names")
    out = ca.issue(csr("www.example.test"), deadline=deadline)
    assert cert_names(x509.load_pem_x509_certificate(out.leaf_pem)) == ["unrelated.invalid"]
    ca.make_unusable("untrusted")
    out = ca.issue(csr("www.example.test"), deadline=deadline)
    with pytest.raises(x509.verification.VerificationError):
        verify(out.leaf_pem, out.chain_pem, root, T0)
    ca.make_unusable("expired")
    out = ca.issue(csr("www.example.test"), deadline=deadline)
    assert x509.load_pem_x509_certificate(out.leaf_pem).not_valid_after_utc < T0
    assert [o.outcome for o in ca.orders] == ["failed", "failed", "unusable", "unusable", "unusable"]


def test_a_hung_fake_issuer_gives_up_at_the_deadline() -> None:
    ca = FakeIssuer("slow", pki.make_intermediate(pki.make_root("Root"), "Issuing"))
    ca.hang()
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError, match="deadline"):
        ca.issue(csr("www.example.test"), deadline=datetime.now(UTC) + timedelta(seconds=0.2))
    assert 0.15 < time.monotonic() - started < 2
    assert [o.outcome for o in ca.orders] == ["hung"]


def test_crl_and_ocsp_builders() -> None:
    root = pki.make_root("Root", not_before=T0 - timedelta(days=10))
    inter = pki.make_intermediate(root, "Issuing", not_before=T0 - timedelta(days=10))
    leaf, _ = pki.make_leaf(inter, ["www.example.test"], not_before=T0 - timedelta(days=1),
                            crl_urls=["http://crl.test/a.crl"], ocsp_url="http://ocsp.test/")
    crl = pki.make_crl(inter, {leaf.serial_number: x509.ReasonFlags.key_compromise}, now=T0)
    assert crl.is_signature_valid(inter.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert crl.next_update_utc == T0 + timedelta(days=1)
    der = pki.make_ocsp(leaf, inter.cert, inter.cert, inter.key, status=ocsp.OCSPCertStatus.REVOKED,
                        reason=x509.ReasonFlags.key_compromise, now=T0)
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.serial_number == leaf.serial_number
    m = pki.material(leaf, inter.chain(), ca="b")
    assert m.cert.id == f"www/b/{leaf.serial_number:x}" and m.chain == (inter.cert,)
    assert inter.root is root and inter.chain() == [inter.cert] and root.chain() == []
