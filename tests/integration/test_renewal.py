"""Renewal inside the window, for real: two Pebble CAs issuing 15-second certificates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certfailover import keys
from certfailover_lab.pebble import ChallTestSrv, PebbleCA
from certfailover_lab.sitelab import make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration
LIFETIME = 15  # seconds; the renewal window is the last third


@pytest.fixture(scope="module")
def short_cas(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv,
              http01_port: int) -> Iterator[list[PebbleCA]]:
    work = tmp_path_factory.mktemp("short")
    cas = [PebbleCA(work / n, name=n, http_port=http01_port, dns_server=challtestsrv.dns_address,
                    validity_seconds=LIFETIME) for n in ("short-a", "short-b")]
    try:
        yield cas
    finally:
        for c in cas:
            c.stop()


def test_certificates_in_their_renewal_window_are_replaced_with_new_keys(
        tmp_path: Path, short_cas: list[PebbleCA], http01_port: int) -> None:
    a, b = short_cas
    entries = [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in short_cas]
    for lab in make_lab(tmp_path, entries, [a.root_pem(), b.root_pem()], http01_port):
        lab.rt.engine.tick()
        first = {c.id: c for c in lab.rt.db.certs("www")}
        old_active = lab.active()
        assert len(first) == 2
        # wait until both certificates are inside their renewal window (the last third)
        time.sleep(max(0.0, (old_active.not_before.timestamp() + LIFETIME * 2 / 3 + 0.5)
                       - time.time()))
        report = lab.rt.engine.tick()
        renewal = [f for f in report.health[old_active.id].findings if f.renew]
        assert renewal, "the active certificate is flagged for renewal"
        ticks = 0
        while lab.active().id in first and ticks < 4:  # a fresh certificate takes over
            lab.rt.engine.tick()
            ticks += 1
        new_active = lab.active()
        assert new_active.id not in first
        assert lab.served_sha() == new_active.sha256
        # new certificates carry new keys, never a key of the ones they replace
        def spki(path: str) -> str:
            cert = x509.load_pem_x509_certificate((Path(path) / "cert.pem").read_bytes())
            return keys.spki_sha256(cert.public_key())

        old_keys = {spki(c.path) for c in first.values()}
        assert spki(new_active.path) not in old_keys
        lab.rt.engine.tick()
        live_ids = {c.id for c in lab.rt.db.certs("www")}
        assert not (live_ids & set(first)) or all(
            c.state.value == "active" for c in lab.rt.db.certs("www") if c.id in first), \
            "superseded certificates are retired"
        assert any(e.kind == "retired" for e in lab.rt.db.events(site="www"))
