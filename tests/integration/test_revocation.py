"""Revocation through real channels: a real Pebble CA, its status service (OCSP, CRL, ARI),
certificates issued over ACME and revoked with ACME revokeCert."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certfailover import keys
from certfailover.checks import CertMaterial, CheckContext
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.model import Cert, CertState, Severity, utcnow
from certfailover.revocation import CASources, RevocationCheck, RevocationConfig, ari_cert_id
from certfailover_lab.pebble import ChallTestSrv, PebbleCA, revoke
from certfailover_lab.ports import free_port
from certfailover_lab.status import StatusService, ocsp_url_at

pytestmark = pytest.mark.integration

CA = "pebble-rev"


@dataclass(frozen=True)
class RevLab:
    ca: PebbleCA
    status: StatusService
    issuer: AcmeIssuer


@pytest.fixture(scope="module")
def rev_lab(
    tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv, http01_port: int
) -> Iterator[RevLab]:
    work = tmp_path_factory.mktemp("revocation")
    port = free_port()  # the status service's port first: Pebble writes the OCSP URL
    ca = PebbleCA(
        work / "pebble",
        name=CA,
        http_port=http01_port,
        dns_server=challtestsrv.dns_address,
        ocsp_url=ocsp_url_at(port),
        nonce_reject_percent=0,
    )
    try:
        with StatusService(CA, ca.management_url, ca.ca_bundle, port=port) as status:
            issuer = AcmeIssuer(
                CA,
                ca.directory_url,
                email="ops@example.test",
                account_key_path=work / "account.pem",
                solver=StandaloneSolver("127.0.0.1", http01_port),
                ca_bundle=ca.ca_bundle,
            )
            yield RevLab(ca, status, issuer)
    finally:
        ca.stop()


@dataclass(frozen=True)
class IssuedCert:
    material: CertMaterial
    cert_pem: bytes
    key_pem: bytes


def _issue(lab: RevLab) -> IssuedCert:
    domain = f"rev-{uuid.uuid4().hex[:10]}.example.test"
    key = keys.generate("ec-p256")
    issued = lab.issuer.issue(
        keys.csr_pem(key, [domain]), deadline=utcnow() + timedelta(seconds=30)
    )
    leaf = x509.load_pem_x509_certificate(issued.leaf_pem)
    chain = tuple(x509.load_pem_x509_certificates(issued.chain_pem))
    serial = format(leaf.serial_number, "x")
    cert = Cert(
        id=f"{domain}/{CA}/{serial}",
        site=domain,
        ca=CA,
        serial=serial,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        key_type="ec-p256",
        issuer_dn=leaf.issuer.rfc4514_string(),
        state=CertState.ACTIVE,
        created=utcnow(),
        path="/unused",
    )
    return IssuedCert(CertMaterial(cert, leaf, chain, True), issued.leaf_pem, keys.key_pem(key))


def _ctx(now: datetime | None = None) -> CheckContext:
    return CheckContext(now=now or utcnow(), domains=(), trust=())


@pytest.mark.parametrize("get_max", [255, 0], ids=["get", "post"])
def test_revoked_at_pebble_is_seen_through_ocsp(rev_lab: RevLab, get_max: int) -> None:
    cert = _issue(rev_lab)
    cfg = RevocationConfig(ocsp_get_max=get_max)
    assert cert.material.leaf.extensions.get_extension_for_class(
        x509.AuthorityInformationAccess
    )  # Pebble wrote the status service's OCSP URL
    before = rev_lab.status.requests_served
    [good] = RevocationCheck(cfg).run(cert.material, _ctx())
    assert good.severity is Severity.OK and good.detail["source"] == "ocsp"
    assert rev_lab.status.requests_served == before + 1
    method, path = rev_lab.status.request_log[-1]
    assert (method, path.startswith("/ocsp/")) == (("GET", True) if get_max else ("POST", False))

    revoke(rev_lab.ca.directory_url, rev_lab.ca.ca_bundle, cert.cert_pem, cert.key_pem, 1)
    assert rev_lab.ca.cert_status(cert.material.leaf.serial_number)["Status"] == "Revoked"
    [bad] = RevocationCheck(cfg).run(cert.material, _ctx())
    assert bad.severity is Severity.FAIL
    assert bad.revoked and bad.detail["source"] == "ocsp"
    assert bad.detail["reason"] == "key_compromise" and bad.detail["key_compromise"] is True


def test_revoked_at_pebble_is_seen_through_crl(rev_lab: RevLab) -> None:
    cert, other = _issue(rev_lab), _issue(rev_lab)
    for c in (cert, other):
        rev_lab.status.add_known_serial(c.material.leaf.serial_number)
    cfg = RevocationConfig(
        cas={CA: CASources(crl_urls=(rev_lab.status.crl_url,), require_crl_sign=False)},
        use_ocsp=False,
        crl_max_age=timedelta(0),
    )  # Pebble's intermediate lacks cRLSign
    chk = RevocationCheck(cfg)
    [good] = chk.run(cert.material, _ctx())
    assert good.severity is Severity.OK and good.detail["source"] == "crl"

    revoke(rev_lab.ca.directory_url, rev_lab.ca.ca_bundle, cert.cert_pem, cert.key_pem, 4)
    [bad] = chk.run(cert.material, _ctx())  # same check, cached CRL refreshed
    assert bad.severity is Severity.FAIL and bad.detail["source"] == "crl"
    assert bad.detail["reason"] == "superseded" and bad.detail["key_compromise"] is False
    [still_good] = chk.run(other.material, _ctx())
    assert still_good.severity is Severity.OK


def test_pebble_intermediate_without_crl_sign_is_refused_by_default(rev_lab: RevLab) -> None:
    cert = _issue(rev_lab)
    cfg = RevocationConfig(cas={CA: CASources(crl_urls=(rev_lab.status.crl_url,))}, use_ocsp=False)
    [f] = RevocationCheck(cfg).run(cert.material, _ctx())
    assert f.severity is Severity.WARN and "cRLSign" in f.reason


def test_crl_conditional_request_gets_304(rev_lab: RevLab) -> None:
    first = requests.get(rev_lab.status.crl_url, timeout=5)
    again = requests.get(
        rev_lab.status.crl_url, timeout=5, headers={"If-None-Match": first.headers["ETag"]}
    )
    assert first.status_code == 200 and again.status_code == 304


def test_ari_window_in_the_past_asks_for_replacement(rev_lab: RevLab) -> None:
    cert = _issue(rev_lab)
    cfg = RevocationConfig(cas={CA: CASources(ari_url=rev_lab.status.ari_url)})
    findings = {f.check: f for f in RevocationCheck(cfg).run(cert.material, _ctx())}
    assert findings["ari"].severity is Severity.OK
    assert not findings["ari"].replace  # default: 2/3 into the lifetime

    aid = ari_cert_id(cert.material.leaf)
    now = utcnow()
    rev_lab.status.suggest_window(
        aid, now - timedelta(hours=2), now - timedelta(hours=1), "https://ca.example/incident-42"
    )
    findings = {f.check: f for f in RevocationCheck(cfg).run(cert.material, _ctx())}
    ari = findings["ari"]
    assert ari.severity is Severity.WARN and ari.replace
    assert ari.ari_id == aid
    assert ari.detail["explanation_url"] == "https://ca.example/incident-42"
    assert findings["revocation"].severity is Severity.OK  # before any revocation


def test_crl_of_another_ca_is_unknown_not_revoked(
    rev_lab: RevLab, pebble_b: PebbleCA, tmp_path: Path
) -> None:
    """A CRL signed by another CA's key never revokes (nor clears) this CA's certificate."""
    cert = _issue(rev_lab)
    with StatusService("forger", pebble_b.management_url, pebble_b.ca_bundle) as forger:
        cfg = RevocationConfig(
            cas={CA: CASources(crl_urls=(forger.crl_url,))}, use_ocsp=False, require_crl_sign=False
        )
        [f] = RevocationCheck(cfg).run(cert.material, _ctx())
    assert f.severity is Severity.WARN and not f.known and not f.revoked
    assert "issuer" in f.reason

