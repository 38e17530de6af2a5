"""ACME issuance against real Pebble CAs (two independent CAs, one with EAB), challtestsrv DNS."""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from certfailover.errors import IssuanceError, TransientIssuanceError
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.base import Issued, Issuer
from certfailover.issuers.challenges import StandaloneSolver, WebrootSolver
from certfailover.model import utcnow
from certfailover_lab import BLOCKED_DOMAIN, EabCredentials, KeyAndCsr
from certfailover_lab.pebble import ChallTestSrv, PebbleCA, revoke
from certfailover_lab.ports import free_port

pytestmark = pytest.mark.integration

MakeCsr = Callable[..., KeyAndCsr]


def _unique(prefix: str = "www") -> str:
    # a fresh name per test: Pebble reuses valid authorizations 50% of the time otherwise
    return f"{prefix}-{uuid.uuid4().hex[:10]}.example.test"


def _deadline(seconds: float = 20) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def _issuer(ca: PebbleCA, tmp_path: Path, port: int, **kw: Any) -> AcmeIssuer:
    return AcmeIssuer(
        kw.pop("name", ca.name),
        kw.pop("directory_url", ca.directory_url),
        email=kw.pop("email", "ops@example.test"),
        account_key_path=kw.pop("account_key_path", tmp_path / f"{ca.name}-account.pem"),
        solver=kw.pop("solver", StandaloneSolver("127.0.0.1", port)),
        ca_bundle=kw.pop("ca_bundle", ca.ca_bundle),
        **kw,
    )


def _verify(issued: Issued, root_pem: bytes, domain: str) -> list[x509.Certificate]:
    leaf = x509.load_pem_x509_certificate(issued.leaf_pem)
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    root = x509.load_pem_x509_certificate(root_pem)
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(utcnow())
        .build_server_verifier(x509.DNSName(domain))
    )
    return verifier.verify(leaf, chain)


@pytest.fixture()
def webroot_server(tmp_path: Path, http01_port: int) -> Iterator[Path]:
    """A tiny static file server for a webroot on http01_port, as a real web server would be."""
    webroot = tmp_path / "webroot"
    webroot.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", http01_port), partial(Quiet, directory=webroot))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield webroot
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("ca_fixture", ["pebble_a", "pebble_b"])
def test_standalone_issuance_chains_to_that_cas_root(
    ca_fixture: str,
    request: pytest.FixtureRequest,
    pebble_a: PebbleCA,
    pebble_b: PebbleCA,
    http01_port: int,
    make_csr: MakeCsr,
    tmp_path: Path,
) -> None:
    ca: PebbleCA = request.getfixturevalue(ca_fixture)
    other = pebble_b if ca is pebble_a else pebble_a
    domain = _unique()
    req = make_csr(domain, "example.test")
    solver = StandaloneSolver("127.0.0.1", http01_port)
    issuer = _issuer(ca, tmp_path, http01_port, solver=solver)
    assert isinstance(issuer, Issuer)

    issued = issuer.issue(req.csr_pem, deadline=_deadline())

    assert issued.ca == ca.name
    assert issued.leaf_pem.count(b"BEGIN CERTIFICATE") == 1
    leaf = x509.load_pem_x509_certificate(issued.leaf_pem)
    assert leaf.public_key() == req.key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {domain, "example.test"}
    intermediates = x509.load_pem_x509_certificates(issued.chain_pem)
    assert intermediates and all(c.subject != c.issuer for c in intermediates)  # no root
    path = _verify(issued, ca.root_pem(), domain)
    assert path[-1] == x509.load_pem_x509_certificate(ca.root_pem())
    # independent CAs: the other CA's root does not validate this chain
    with pytest.raises(x509.verification.VerificationError):
        _verify(issued, other.root_pem(), domain)
    assert not solver.running  # the standalone server ran only during issuance
    assert ca.cert_status(leaf.serial_number)["Status"] == "Valid"


def test_webroot_issuance(
    pebble_a: PebbleCA,
    http01_port: int,
    webroot_server: Path,
    make_csr: MakeCsr,
    tmp_path: Path,
) -> None:
    domain = _unique()
    solver = WebrootSolver(webroot_server)
    issuer = _issuer(pebble_a, tmp_path, http01_port, solver=solver)

    issued = issuer.issue(make_csr(domain).csr_pem, deadline=_deadline())

    _verify(issued, pebble_a.root_pem(), domain)
    # challenge files were removed after validation
    assert list(solver.challenge_dir.iterdir()) == []


def test_account_created_once_and_reused(
    pebble_b: PebbleCA,
    http01_port: int,
    make_csr: MakeCsr,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_path = tmp_path / "accounts" / "b.pem"
    caplog.set_level(logging.INFO, logger="certfailover.issuers.acme")
    first = _issuer(pebble_b, tmp_path, http01_port, account_key_path=key_path)
    first.issue(make_csr(_unique()).csr_pem, deadline=_deadline())
    first.issue(make_csr(_unique()).csr_pem, deadline=_deadline())
    key_bytes = key_path.read_bytes()
    assert key_path.stat().st_mode & 0o777 == 0o600
    registered = [r for r in caplog.records if "registered account" in r.getMessage()]
    assert len(registered) == 1

    caplog.clear()
    second = _issuer(pebble_b, tmp_path, http01_port, account_key_path=key_path)
    second.issue(make_csr(_unique()).csr_pem, deadline=_deadline())
    assert key_path.read_bytes() == key_bytes  # the key was not replaced
    assert second.account_url == first.account_url
    messages = [r.getMessage() for r in caplog.records]
    assert any("using existing account" in m for m in messages)
    assert not any("registered account" in m for m in messages)
    assert all(b"PRIVATE KEY" not in m.encode() for m in messages)


def test_eab_success(
    pebble_eab: PebbleCA,
    pebble_eab_credentials: EabCredentials,
    http01_port: int,
    make_csr: MakeCsr,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    domain = _unique()
    issuer = _issuer(
        pebble_eab,
        tmp_path,
        http01_port,
        eab_kid=pebble_eab_credentials.kid,
        eab_hmac_key=pebble_eab_credentials.hmac_key,
    )
    issued = issuer.issue(make_csr(domain).csr_pem, deadline=_deadline())
    _verify(issued, pebble_eab.root_pem(), domain)
    assert pebble_eab_credentials.hmac_key not in caplog.text
    assert pebble_eab_credentials.hmac_key not in repr(issuer)


@pytest.mark.parametrize(
    ("kid", "hmac_key", "expected"),
    [
        (None, None, "externalAccountRequired"),
        (
            "kid-certfailover",
            "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
            "",
        ),
        ("no-such-kid", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W", ""),
    ],
    ids=["missing", "wrong-hmac", "unknown-kid"],
)
def test_eab_missing_or_wrong_is_a_clear_permanent_error(
    kid: str | None,
    hmac_key: str | None,
    expected: str,
    pebble_eab: PebbleCA,
    http01_port: int,
    make_csr: MakeCsr,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = _issuer(pebble_eab, tmp_path, http01_port, eab_kid=kid, eab_hmac_key=hmac_key)
    started = time.monotonic()
    with pytest.raises(IssuanceError) as info:
        issuer.issue(make_csr(_unique()).csr_pem, deadline=_deadline(10))
    assert not isinstance(info.value, TransientIssuanceError)
    assert time.monotonic() - started < 5  # permanent: no retrying until the deadline
    msg = str(info.value)
    assert msg.startswith(f"{pebble_eab.name}: ")
    assert expected in msg
    assert "/sign-me-up" in msg  # the newAccount URL
    assert "urn:ietf:params:acme:error:" in msg
    if hmac_key is not None:
        assert hmac_key not in msg
        assert hmac_key not in caplog.text


def test_ca_down_is_transient_within_the_deadline(
    lab_dir: Path,
    http01_port: int,
    challtestsrv: ChallTestSrv,
    make_csr: MakeCsr,
    tmp_path: Path,
) -> None:
    # a CA that worked, then went away
    with PebbleCA(
        lab_dir / f"pebble-down-{uuid.uuid4().hex[:6]}",
        name="pebble-down",
        http_port=http01_port,
        dns_server=challtestsrv.dns_address,
    ) as ca:
        issuer = _issuer(ca, tmp_path, http01_port)
        issuer.issue(make_csr(_unique()).csr_pem, deadline=_deadline())
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError) as info:
        issuer.issue(make_csr(_unique()).csr_pem, deadline=_deadline(1.5))
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0, elapsed  # retried with backoff until, not past, the deadline
    assert "pebble-down" in str(info.value)
    assert f"127.0.0.1:{ca.port}" in str(info.value)

    # a CA that never answered at all
    url = f"https://127.0.0.1:{free_port()}/dir"
    never = _issuer(ca, tmp_path, http01_port, name="nowhere", directory_url=url)
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError) as info:
        never.issue(make_csr(_unique()).csr_pem, deadline=_deadline(1.0))
    assert time.monotonic() - started < 2.5
    assert url in str(info.value) and "nowhere" in str(info.value)


def test_blocked_domain_is_rejected_identifier(
    pebble_a: PebbleCA, http01_port: int, make_csr: MakeCsr, tmp_path: Path
) -> None:
    issuer = _issuer(pebble_a, tmp_path, http01_port)
    started = time.monotonic()
    with pytest.raises(IssuanceError) as info:
        issuer.issue(make_csr(BLOCKED_DOMAIN).csr_pem, deadline=_deadline(10))
    assert not isinstance(info.value, TransientIssuanceError)
    assert time.monotonic() - started < 5
    msg = str(info.value)
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in msg
    assert msg.startswith(f"{pebble_a.name}: https://127.0.0.1:{pebble_a.port}/")


def test_failed_validation_is_a_permanent_error_naming_the_authorization(
    pebble_b: PebbleCA, http01_port: int, make_csr: MakeCsr, tmp_path: Path
) -> None:
    # the webroot is not served by anything: the CA cannot fetch the challenge
    solver = WebrootSolver(tmp_path / "unserved")
    issuer = _issuer(pebble_b, tmp_path, http01_port, solver=solver)
    domain = _unique()
    with pytest.raises(IssuanceError) as info:
        issuer.issue(make_csr(domain).csr_pem, deadline=_deadline(10))
    assert not isinstance(info.value, TransientIssuanceError)
    msg = str(info.value)
    assert f"validation of {domain} failed" in msg
    assert "urn:ietf:params:acme:error:connection" in msg
    assert list(solver.challenge_dir.iterdir()) == []  # cleaned up on failure too


def test_replaces_is_accepted_when_the_ca_has_no_ari(
    pebble_a: PebbleCA, http01_port: int, make_csr: MakeCsr, tmp_path: Path
) -> None:
    # Pebble 2.4 has no renewalInfo: the issuer must not send `replaces` and must still issue
    issuer = _issuer(pebble_a, tmp_path, http01_port)
    domain = _unique()
    old = issuer.issue(make_csr(domain).csr_pem, deadline=_deadline())
    new = issuer.issue(
        make_csr(domain).csr_pem,
        deadline=_deadline(),
        replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
    )
    assert old.leaf_pem != new.leaf_pem


def test_preferred_chain_among_alternates(
    lab_dir: Path,
    http01_port: int,
    challtestsrv: ChallTestSrv,
    make_csr: MakeCsr,
    tmp_path: Path,
) -> None:
    with PebbleCA(
        lab_dir / f"pebble-alt-{uuid.uuid4().hex[:6]}",
        name="pebble-alt",
        http_port=http01_port,
        dns_server=challtestsrv.dns_address,
        alternate_roots=1,
    ) as ca:
        default_root = x509.load_pem_x509_certificate(ca.root_pem())
        alt_root_pem = ca._management_get("/roots/1").content
        alt_root = x509.load_pem_x509_certificate(alt_root_pem)
        alt_cn = alt_root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert alt_root.subject != default_root.subject
        domain = _unique()

        plain = _issuer(ca, tmp_path, http01_port).issue(
            make_csr(domain).csr_pem, deadline=_deadline()
        )
        preferred = _issuer(ca, tmp_path, http01_port, preferred_chain=alt_cn).issue(
            make_csr(domain).csr_pem, deadline=_deadline()
        )
        unknown = _issuer(ca, tmp_path, http01_port, preferred_chain="No Such Root").issue(
            make_csr(domain).csr_pem, deadline=_deadline()
        )

        top = x509.load_pem_x509_certificates(preferred.chain_pem)[-1]
        assert top.issuer == alt_root.subject
        _verify(preferred, alt_root_pem, domain)
        assert x509.load_pem_x509_certificates(plain.chain_pem)[-1].issuer == default_root.subject
        assert x509.load_pem_x509_certificates(unknown.chain_pem)[-1].issuer == (
            default_root.subject
        )


def test_revoke_helper_marks_the_certificate_revoked(
    pebble_b: PebbleCA, http01_port: int, make_csr: MakeCsr, tmp_path: Path
) -> None:
    req = make_csr(_unique())
    issued = _issuer(pebble_b, tmp_path, http01_port).issue(req.csr_pem, deadline=_deadline())
    serial = x509.load_pem_x509_certificate(issued.leaf_pem).serial_number
    assert pebble_b.cert_status(serial)["Status"] == "Valid"

    revoke(pebble_b.directory_url, pebble_b.ca_bundle, issued.leaf_pem, req.key_pem, reason=1)

    status = pebble_b.cert_status(serial)
    assert status["Status"] == "Revoked"
    assert status.get("Reason") == 1


def test_issuance_takes_well_under_a_second(
    pebble_a: PebbleCA,
    pebble_b: PebbleCA,
    http01_port: int,
    make_csr: MakeCsr,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    timings: dict[str, list[float]] = {}
    for ca in (pebble_a, pebble_b):
        issuer = _issuer(ca, tmp_path, http01_port)
        issuer.issue(make_csr(_unique()).csr_pem, deadline=_deadline())  # account registration
        for _ in range(10):
            req = make_csr(_unique(), "example.test")
            started = time.perf_counter()
            issuer.issue(req.csr_pem, deadline=_deadline())
            timings.setdefault(ca.name, []).append(time.perf_counter() - started)
    with capsys.disabled():
        for name, ts in timings.items():
            print(
                f"\n[acme timing] {name}: n={len(ts)} median={statistics.median(ts) * 1000:.0f} ms"
                f" max={max(ts) * 1000:.0f} ms"
            )
    for ts in timings.values():
        assert max(ts) < 1.5
        assert statistics.median(ts) < 1.0


def test_lab_pebble_options_reach_the_certificate(
    lab_dir: Path,
    http01_port: int,
    challtestsrv: ChallTestSrv,
    make_csr: MakeCsr,
    tmp_path: Path,
) -> None:
    ocsp = f"http://127.0.0.1:{free_port()}/ocsp"
    workdir = lab_dir / f"pebble-opts-{uuid.uuid4().hex[:6]}"
    with PebbleCA(
        workdir,
        name="pebble-opts",
        http_port=http01_port,
        dns_server=challtestsrv.dns_address,
        ocsp_url=ocsp,
        validity_seconds=3600,
        nonce_reject_percent=0,
    ) as ca:
        issued = _issuer(ca, tmp_path, http01_port).issue(
            make_csr(_unique()).csr_pem, deadline=_deadline()
        )
        leaf = x509.load_pem_x509_certificate(issued.leaf_pem)
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert timedelta(minutes=59) <= lifetime <= timedelta(minutes=61)
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [d.access_location.value for d in aia] == [ocsp]
        intermediate = x509.load_pem_x509_certificate(ca.intermediate_pem())
        assert x509.load_pem_x509_certificates(issued.chain_pem) == [intermediate]
        assert b"PRIVATE KEY" in ca.intermediate_key_pem()
        assert "Configured to reject 0% of good nonces" in (workdir / "pebble.log").read_text()
        assert (workdir / "pebble-config.json").stat().st_mode & 0o777 == 0o600
    # stopped: nothing answers on its ports any more
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ca.port), timeout=1).close()


def test_ca_tls_certificate_not_trusted_is_permanent(
    pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int, make_csr: MakeCsr, tmp_path: Path
) -> None:
    issuer = _issuer(pebble_a, tmp_path, http01_port, ca_bundle=pebble_b.ca_bundle)
    with pytest.raises(IssuanceError) as info:
        issuer.issue(make_csr(_unique()).csr_pem, deadline=_deadline(10))
    assert not isinstance(info.value, TransientIssuanceError)
    assert "TLS certificate of the CA does not verify" in str(info.value)
    assert str(pebble_b.ca_bundle) in str(info.value)
