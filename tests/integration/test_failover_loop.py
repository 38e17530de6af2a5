"""The whole loop on real parts: two Pebble CAs, a real nginx, real TLS handshakes.

Pebble's default 5% nonce rejection stays on throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certfailover.cli.main import main
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import Gate, Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration


def entries(*cas: PebbleCA) -> list[LabCAEntry]:
    return [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in cas]


@pytest.fixture()
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(
        tmp_path,
        entries(pebble_a, pebble_b),
        [pebble_a.root_pem(), pebble_b.root_pem()],
        http01_port,
    )


def test_issues_from_both_cas_and_activates_with_a_handshake(lab: Lab) -> None:
    report = lab.rt.engine.tick()
    certs = lab.rt.db.certs("www")
    assert sorted(c.ca for c in certs) == ["pebble-a", "pebble-b"]
    active = lab.active()
    assert active.ca == "pebble-a", "first CA in the configured order is preferred"
    assert lab.served_sha() == active.sha256
    assert "activated" in [e.kind for e in report.events]
    # each certificate has its own key
    keys = {
        x509.load_pem_x509_certificate((Path(c.path) / "cert.pem").read_bytes())
        .public_key()
        .public_numbers()
        for c in certs
    }  # type: ignore[union-attr]
    assert len(keys) == 2
    # a second tick changes nothing
    assert [e.kind for e in lab.rt.engine.tick().events] == []


def test_operator_distrust_fails_over_and_undistrust_restores(lab: Lab) -> None:
    lab.rt.engine.tick()
    before = lab.active()
    lab.rt.db.distrust("pebble-a", before.created, "CA in the news")
    report = lab.rt.engine.tick()
    after = lab.active()
    assert after.ca == "pebble-b"
    assert lab.served_sha() == after.sha256
    kinds = [e.kind for e in report.events]
    assert "failover" in kinds
    # no standby can come from a distrusted CA, and there is no third CA: say so
    assert "standby_missing" in kinds
    assert not any(e.kind == "issued" and e.data.get("ca") == "pebble-a" for e in report.events)
    lab.rt.db.undistrust("pebble-a")
    report = lab.rt.engine.tick()
    assert lab.active().id == after.id, "no automatic switch back"
    h = report.health[before.id]
    assert h.healthy


def test_root_leaving_the_trust_bundle_fails_over(lab: Lab, pebble_b: PebbleCA) -> None:
    import os

    lab.rt.engine.tick()
    assert lab.active().ca == "pebble-a"
    lab.bundle.write_bytes(pebble_b.root_pem())  # clients stop trusting CA A's root
    st = lab.bundle.stat()
    os.utime(lab.bundle, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    report = lab.rt.engine.tick()
    assert lab.active().ca == "pebble-b"
    assert lab.served_sha() == lab.active().sha256
    fo = next(e for e in report.events if e.kind == "failover")
    assert "does not validate" in fo.message


def test_rollback_when_the_server_keeps_serving_the_old_certificate(
    tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for lab in make_lab(
        tmp_path,
        entries(pebble_a, pebble_b),
        [pebble_a.root_pem(), pebble_b.root_pem()],
        http01_port,
        reload=["sh", "-c", f"echo reload >> {tmp_path / 'reloads'}"],  # nginx never reloads
        daemon={"verify_timeout": 2, "switch_backoff": 1.5},
    ):
        reloads = tmp_path / "reloads"
        lab.rt.engine.tick()  # activation of the bootstrap cert verifies: it is already served
        old = lab.active()
        live_before = lab.rt.vault.live_target("www")
        lab.rt.db.distrust("pebble-a", old.created, "test")
        report = lab.rt.engine.tick()
        kinds = [e.kind for e in report.events]
        assert "rollback" in kinds and "failover" not in kinds
        assert lab.active().id == old.id, "the store still names what is served"
        assert lab.rt.vault.live_target("www") == live_before
        assert lab.served_sha() == old.sha256
        # tried again after [daemon] switch_backoff, not at every tick: no reload meanwhile
        n = len(reloads.read_text().splitlines())
        report = lab.rt.engine.tick()
        assert "rollback" not in [e.kind for e in report.events]
        assert len(reloads.read_text().splitlines()) == n, "a held switch reloads nothing"
        time.sleep(1.6)
        report = lab.rt.engine.tick()
        again = [e for e in report.events if e.kind == "rollback"]
        assert len(again) == 1 and "failure 2 in a row; tried again in 3s" in again[0].message
        capsys.readouterr()
        assert main(["--config", str(lab.config_path), "--json", "status", "www"]) == 0
        notes = json.loads(capsys.readouterr().out)["sites"][0]["notes"]
        assert any("failed 2 time(s) in a row" in n and "tries again at" in n for n in notes)
        assert len(reloads.read_text().splitlines()) > n
        assert lab.served_sha() == old.sha256 and lab.active().id == old.id


def test_ca_down_during_replenishment_keeps_serving_and_retries(
    tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int
) -> None:
    port = int(pebble_a.directory_url.split(":")[2].split("/")[0])
    path = pebble_a.directory_url.split("/", 3)[3]
    gate = Gate(port)  # CA A is reached through a gate we can shut
    a = LabCAEntry("pebble-a", f"https://127.0.0.1:{gate.port}/{path}", pebble_a.ca_bundle)
    try:
        # B first in order: the bootstrap certificate comes from B, the standby must come from A
        for lab in make_lab(
            tmp_path,
            [*entries(pebble_b), a],
            [pebble_a.root_pem(), pebble_b.root_pem()],
            http01_port,
            daemon={"verify_timeout": 5, "issue_timeout": 3, "order_backoff": 2},
        ):
            gate.open = False  # CA A is down when the standby is due
            report = lab.rt.engine.tick()
            kinds = [e.kind for e in report.events]
            assert "activated" in kinds and lab.active().ca == "pebble-b"
            assert "issuance_failed" in kinds and "standby_missing" in kinds
            fail = next(e for e in report.events if e.kind == "issuance_failed")
            assert "pebble-a" in fail.message
            assert lab.served_sha() == lab.active().sha256, "the site keeps serving"
            gate.open = True  # A is back, but it is backed off from when the failure was known
            report = lab.rt.engine.tick()
            assert not any(e.kind in ("issued", "issuance_failed") for e in report.events)
            assert [o.outcome for o in lab.rt.db.orders(ca="pebble-a")] == ["failed"]
            time.sleep(2.1)  # order_backoff: the first tick after it restores redundancy
            report = lab.rt.engine.tick()
            assert any(e.kind == "issued" and e.data["ca"] == "pebble-a" for e in report.events)
            assert lab.active().ca == "pebble-b"
    finally:
        gate.close()


def test_restart_after_a_crash_makes_the_store_agree_with_what_is_served(lab: Lab) -> None:
    """Killed after the server took the new certificate but before the store recorded it:
    on restart the store repairs itself from the live link the server serves."""
    import subprocess

    lab.rt.engine.tick()
    old = lab.active()
    standby = next(c for c in lab.rt.db.certs("www") if c.id != old.id)
    lab.rt.vault.point_live("www", Path(standby.path))  # the switch happened...
    subprocess.run(lab.nginx.spec["reload"], check=True)
    assert lab.wait_served(standby.sha256)
    assert lab.active().id == old.id  # ...but the store never heard of it
    lab.rt.startup()
    assert lab.active().id == standby.id
    assert lab.served_sha() == standby.sha256
    assert lab.kinds()[-1] == "reconciled"
