"""Pure parts of AcmeIssuer: messages, account key files, error classification, retry loop.

The protocol itself is tested against a real Pebble in tests/integration/test_acme.py.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfailover import keys
from certfailover.errors import InputError, IssuanceError, TransientIssuanceError
from certfailover.issuers.acme import (
    AcmeIssuer,
    NewOrderWithReplaces,
    _identifiers,
    _is_base64url,
    _top_issuer_cn,
)
from certfailover.issuers.base import Issued, Issuer
from certfailover.issuers.challenges import WebrootSolver

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
URL = "https://ca.example.test/acme/new-order"


@dataclass
class FakeTime:
    """A clock and a sleep that move together."""

    now: datetime = T0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def _issuer(tmp_path: Path, ft: FakeTime | None = None, **kw: object) -> AcmeIssuer:
    ft = ft or FakeTime()
    return AcmeIssuer(
        "ca1",
        "https://ca.example.test/dir",
        email=None,
        account_key_path=tmp_path / "acct.pem",
        solver=WebrootSolver(tmp_path / "www"),
        clock=ft.clock,
        sleep=ft.sleep,
        **kw,  # type: ignore[arg-type]
    )


def _response(status: int, body: bytes = b"oops") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    return resp


def test_new_order_carries_replaces_only_when_given() -> None:
    ident = messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="www.example.test")
    with_ari = json.loads(
        NewOrderWithReplaces(identifiers=[ident], replaces="AAA.BBB").json_dumps()
    )
    assert with_ari == {
        "identifiers": [{"type": "dns", "value": "www.example.test"}],
        "replaces": "AAA.BBB",
    }
    without = json.loads(NewOrderWithReplaces(identifiers=[ident]).json_dumps())
    assert "replaces" not in without
    assert isinstance(NewOrderWithReplaces(identifiers=[ident]), messages.NewOrder)


def test_identifiers_from_san_and_cn_fallback() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("a.example.test"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    assert [(i.typ.name, i.value) for i in _identifiers(csr)] == [
        ("dns", "a.example.test"),
        ("ip", "192.0.2.7"),
    ]
    cn_only = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn.example.test")]))
        .sign(key, hashes.SHA256())
    )
    assert [i.value for i in _identifiers(cn_only)] == ["cn.example.test"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W", True),
        ("c2VjcmV0", True),
        ("c2VjcmV0IQ==", True),
        ("not base64 at all!", False),
        ("abc+/def", False),  # standard alphabet, not base64url
        ("", False),
        ("a", False),
    ],
)
def test_base64url_check_is_strict(value: str, ok: bool) -> None:
    assert _is_base64url(value) is ok


def test_eab_configuration_errors_are_clear_and_hide_the_key(tmp_path: Path) -> None:
    with pytest.raises(IssuanceError, match="ca1: eab_kid and eab_hmac_key must be given together"):
        _issuer(tmp_path, eab_kid="kid-1")
    secret = "not base64 at all!"
    with pytest.raises(IssuanceError, match="eab_hmac_key is not valid base64url") as info:
        _issuer(tmp_path, eab_kid="kid-1", eab_hmac_key=secret)
    assert secret not in str(info.value)
    good = _issuer(tmp_path, eab_kid="kid-1", eab_hmac_key="c2VjcmV0")
    assert "c2VjcmV0" not in repr(good)
    assert isinstance(good, Issuer)


def test_issue_rejects_naive_deadline_and_bad_csr(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    key = keys.generate("ec-p256")
    csr = keys.csr_pem(key, ["www.example.test"])
    with pytest.raises(ValueError, match="timezone-aware"):
        issuer.issue(csr, deadline=datetime(2026, 5, 1))
    with pytest.raises(InputError, match="ca1: the CSR to issue is not a PEM CSR"):
        issuer.issue(b"garbage", deadline=T0 + timedelta(seconds=5))
    assert not (tmp_path / "acct.pem").exists()  # nothing touched before the input is valid


def test_account_key_created_0600_p256_and_reused(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    _, _, existed = issuer._load_or_create_key()
    assert existed is False
    path = tmp_path / "acct.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    data = path.read_bytes()
    _, _, existed = _issuer(tmp_path)._load_or_create_key()
    assert existed is True and path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_account_key_never_overwritten_by_a_concurrent_creator(tmp_path: Path) -> None:
    path = tmp_path / "acct.pem"
    first = AcmeIssuer._create_key(path)
    second = AcmeIssuer._create_key(path)  # lost the race: must return the winner's key
    assert second == first == path.read_bytes()


def test_bad_account_key_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "acct.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n")
    with pytest.raises(InputError, match=str(tmp_path / "acct.pem")):
        _issuer(tmp_path)._load_or_create_key()


@pytest.mark.parametrize(
    ("exc", "transient", "needle"),
    [
        (messages.Error.with_code("badNonce", detail="JWS has an invalid anti-replay nonce"),
         True, "urn:ietf:params:acme:error:badNonce"),
        (messages.Error.with_code("serverInternal", detail="boom"), True, "serverInternal"),
        (messages.Error.with_code("rateLimited", detail="slow down"), True, "rateLimited"),
        (messages.Error.with_code("rejectedIdentifier", detail="policy forbids"), False,
         "urn:ietf:params:acme:error:rejectedIdentifier: policy forbids"),
        (messages.Error.with_code("caa", detail="CAA forbids"), False, "caa"),
        (messages.Error.with_code("externalAccountRequired", detail="need EAB"), False,
         "configure eab_kid and eab_hmac_key"),
        (messages.Error.with_code("unauthorized", detail="bad EAB"), False, "unauthorized"),
        (requests.ConnectionError("Connection refused"), True, "Connection refused"),
        (requests.Timeout("read timed out"), True, "read timed out"),
        (acme_errors.ClientError(_response(503)), True, "HTTP 503"),
        (acme_errors.ClientError(_response(404)), False, "HTTP 404"),
        (acme_errors.BadNonce("x", ValueError("y")), True, "BadNonce"),
    ],
)  # fmt: skip
def test_errors_are_classified_and_name_ca_url_problem(
    tmp_path: Path, exc: Exception, transient: bool, needle: str
) -> None:
    issuer = _issuer(tmp_path)
    with pytest.raises(IssuanceError) as info, issuer._step(URL, T0 + timedelta(seconds=5)):
        raise exc
    assert isinstance(info.value, TransientIssuanceError) is transient
    assert str(info.value).startswith(f"ca1: {URL}: ")
    assert needle in str(info.value)
    assert info.value.__cause__ is exc


def test_step_after_the_deadline_is_transient(tmp_path: Path) -> None:
    ft = FakeTime()
    issuer = _issuer(tmp_path, ft)
    with (
        pytest.raises(TransientIssuanceError, match="deadline"),
        issuer._step(URL, T0 - timedelta(seconds=1)),
    ):
        pass


class Flaky(AcmeIssuer):
    """A fake protocol run: fails transiently `failures` times, then issues."""

    failures = 0
    calls = 0

    def _issue_once(self, csr: object, csr_pem: bytes, deadline: datetime, r: object) -> Issued:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientIssuanceError(f"ca1: {URL}: urn:ietf:params:acme:error:serverInternal")
        return Issued(leaf_pem=b"LEAF", chain_pem=b"CHAIN", ca=self.name)


def _flaky(tmp_path: Path, ft: FakeTime, failures: int) -> Flaky:
    issuer = Flaky(
        "ca1",
        "https://ca.example.test/dir",
        email=None,
        account_key_path=tmp_path / "acct.pem",
        solver=WebrootSolver(tmp_path),
        clock=ft.clock,
        sleep=ft.sleep,
    )
    issuer.failures = failures
    return issuer


def test_transient_errors_retry_with_exponential_backoff(tmp_path: Path) -> None:
    ft = FakeTime()
    issuer = _flaky(tmp_path, ft, failures=3)
    csr = keys.csr_pem(keys.generate("ec-p256"), ["www.example.test"])
    assert issuer._issue_with_retries(x509.load_pem_x509_csr(csr), csr, T0 + timedelta(60), None)
    assert issuer.calls == 4
    assert ft.slept == [0.1, 0.2, 0.4]


def test_rate_limited_is_transient_but_not_retried_within_the_issuance(tmp_path: Path) -> None:
    ft = FakeTime()

    class Limited(Flaky):
        def _issue_once(self, csr: object, pem: bytes, deadline: datetime, r: object) -> Issued:
            self.calls += 1
            with self._step(URL, deadline):
                raise messages.Error.with_code("rateLimited", detail="too many new orders")

    issuer = Limited(
        "ca1",
        "https://ca.example.test/dir",
        email=None,
        account_key_path=tmp_path / "acct.pem",
        solver=WebrootSolver(tmp_path),
        clock=ft.clock,
        sleep=ft.sleep,
    )
    csr = keys.csr_pem(keys.generate("ec-p256"), ["www.example.test"])
    with pytest.raises(TransientIssuanceError, match="rateLimited: too many new orders"):
        issuer._issue_with_retries(x509.load_pem_x509_csr(csr), csr, T0 + timedelta(60), None)
    assert issuer.calls == 1 and ft.slept == []


def test_transient_errors_give_up_at_the_deadline_with_the_cause(tmp_path: Path) -> None:
    ft = FakeTime()
    issuer = _flaky(tmp_path, ft, failures=10**6)
    csr = keys.csr_pem(keys.generate("ec-p256"), ["www.example.test"])
    deadline = T0 + timedelta(seconds=3)
    with pytest.raises(TransientIssuanceError) as info:
        issuer._issue_with_retries(x509.load_pem_x509_csr(csr), csr, deadline, None)
    assert ft.now == deadline  # slept exactly up to the deadline, never past it
    assert sum(ft.slept) == pytest.approx(3.0)
    assert "serverInternal" in str(info.value) and "gave up at the deadline" in str(info.value)


def test_top_issuer_cn() -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, issuer: str) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(T0)
            .not_valid_after(T0 + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )

    chain = [cert("Intermediate A", "Cross Root"), cert("Cross Root", "Old Root")]
    assert _top_issuer_cn(chain) == "Old Root"
    assert _top_issuer_cn([]) is None
