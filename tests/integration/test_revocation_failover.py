"""Revocation at the CA reaches certfailover through CRL, OCSP or ARI and the site fails over.

Two Pebble CAs, each with a status service that publishes its revocations (signed with the CA's
own intermediate key), a real nginx, real handshakes. A forged "revoked" never causes a failover.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certfailover.revocation import ari_cert_id
from certfailover_lab.pebble import ChallTestSrv, revoke
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.stack import RevocableCA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv,
        http01_port: int) -> Iterator[tuple[RevocableCA, RevocableCA, RevocableCA]]:
    work = tmp_path_factory.mktemp("revfail")
    a = RevocableCA(work / "a", name="rev-a", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    b = RevocableCA(work / "b", name="rev-b", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    # a CA without OCSP: its revocations are published by CRL (and ARI) only, like Let's Encrypt
    c = RevocableCA(work / "c", name="rev-crl", http_port=http01_port,
                    dns_server=challtestsrv.dns_address, ocsp=False)
    try:
        yield a, b, c
    finally:
        for x in (a, b, c):
            x.stop()


def _revoke_active(lab: Lab, ca: RevocableCA, reason: int = 1) -> None:
    active = lab.active()
    d = Path(active.path)
    revoke(ca.pebble.directory_url, ca.pebble.ca_bundle, (d / "cert.pem").read_bytes(),
           (d / "privkey.pem").read_bytes(), reason)


def _lab(tmp_path: Path, first: RevocableCA, second: RevocableCA, http01_port: int, *,
         crl: bool = True) -> Iterator[Lab]:
    return make_lab(tmp_path, [first.entry(crl=crl), second.entry()],
                    [first.pebble.root_pem(), second.pebble.root_pem()], http01_port)


def test_revocation_seen_by_ocsp_fails_over_and_replenishes(
        tmp_path: Path, cas: tuple[RevocableCA, ...], http01_port: int) -> None:
    a, b, _ = cas
    for lab in _lab(tmp_path, a, b, http01_port, crl=False):  # OCSP is A's only channel here
        lab.rt.engine.tick()
        revoked = lab.active()
        assert revoked.ca == "rev-a"
        _revoke_active(lab, a, reason=1)  # keyCompromise
        report = lab.rt.engine.tick()
        fo = next(e for e in report.events if e.kind == "failover")
        assert "revoked" in fo.message and "ocsp" in fo.message.lower()
        assert lab.active().ca == "rev-b"
        assert lab.served_sha() == lab.active().sha256
        # redundancy restored: a new standby from A with a new key
        new_a = [e for e in report.events if e.kind == "issued" and e.data["ca"] == "rev-a"]
        assert len(new_a) == 1 and new_a[0].data["cert"] != revoked.id


def test_revocation_seen_by_crl_only_fails_over(
        tmp_path: Path, cas: tuple[RevocableCA, ...], http01_port: int) -> None:
    _, b, c = cas
    for lab in _lab(tmp_path, c, b, http01_port):
        lab.rt.engine.tick()
        assert lab.active().ca == "rev-crl"
        leaf = x509.load_pem_x509_certificate((Path(lab.active().path) / "cert.pem").read_bytes())
        c.status.add_known_serial(leaf.serial_number)  # Pebble cannot list what it issued
        _revoke_active(lab, c, reason=4)  # superseded
        report = lab.rt.engine.tick()
        fo = next(e for e in report.events if e.kind == "failover")
        assert "crl" in fo.message.lower()
        assert lab.active().ca == "rev-b"
        assert lab.served_sha() == lab.active().sha256


def test_ari_window_in_the_past_fails_over_before_any_revocation(
        tmp_path: Path, cas: tuple[RevocableCA, ...], http01_port: int) -> None:
    a, b, _ = cas
    for lab in _lab(tmp_path, a, b, http01_port):
        lab.rt.engine.tick()
        old = lab.active()
        leaf = x509.load_pem_x509_certificate((Path(old.path) / "cert.pem").read_bytes())
        now = dt.datetime.now(dt.UTC)
        a.status.suggest_window(ari_cert_id(leaf), now - dt.timedelta(hours=1),
                                now + dt.timedelta(hours=1), "https://ca.example/incident")
        # ARI polls are at least a minute apart (Retry-After is clamped): move the engine's clock
        lab.rt.engine.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        report = lab.rt.engine.tick()
        fo = next(e for e in report.events if e.kind == "failover")
        assert "replace" in fo.message.lower() or "renewal" in fo.message.lower()
        assert lab.active().ca == "rev-b"
        assert lab.served_sha() == lab.active().sha256
        assert a.pebble.cert_status(leaf.serial_number)["Status"] == "Valid", "not revoked (yet)"
        # a replacement from A is issued, the old certificate is retired once it exists
        assert any(e.kind == "issued" and e.data["ca"] == "rev-a" for e in report.events)
        lab.rt.engine.tick()
        assert old.id not in {c.id for c in lab.rt.db.certs("www")}


def test_forged_revoked_answer_never_causes_a_failover(
        tmp_path: Path, cas: tuple[RevocableCA, ...], http01_port: int) -> None:
    """A responder signing 'revoked' with the wrong CA's key is unknown: warn, keep serving."""
    a, b, _ = cas
    forger = b  # B's status service signs with B's key: a forgery for A's certificates
    for lab in _lab(tmp_path, a, b, http01_port):
        lab.rt.engine.tick()
        victim = lab.active()
        # point A's CRL at B's service (B signs "revoked" for the serial: a forged CRL for A)
        leaf = x509.load_pem_x509_certificate((Path(victim.path) / "cert.pem").read_bytes())
        import dataclasses

        from certfailover.config import load
        from certfailover.wiring import build
        cfg = load(lab.config_path)
        cas_cfg = dict(cfg.cas)
        cas_cfg["rev-a"] = dataclasses.replace(cas_cfg["rev-a"], crl_urls=(forger.status.crl_url,))
        rt = build(dataclasses.replace(cfg, cas=cas_cfg))
        forger.status.add_known_serial(leaf.serial_number)
        report = rt.engine.tick()
        assert not any(e.kind == "failover" for e in report.events)
        assert next(c for c in rt.db.certs("www") if c.id == victim.id).state.value == "active"
        rev = [f for f in report.health[victim.id].findings if f.check == "revocation"]
        assert rev and all(f.severity.value != "fail" for f in rev)
