"""The whole loop on real parts: two Pebble CAs, a real nginx, real TLS handshakes.

Pebble's default 5% nonce rejection stays on throughout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certfailover import config as config_mod
from certfailover.lab.pebble import PebbleCA
from certfailover.lab.ports import free_port
from certfailover.lab.sites import LabCAEntry, write_config
from certfailover.lab.webservers import VHost, WebServer, start_nginx
from certfailover.model import CertState
from certfailover.probe import leaf_sha256, served_chain
from certfailover.wiring import Runtime, build

pytestmark = pytest.mark.integration
DOMAIN = "www.example.test"


@dataclass
class Lab:
    rt: Runtime
    nginx: WebServer
    bundle: Path
    config_path: Path

    def served_sha(self) -> str:
        return leaf_sha256(served_chain(self.nginx.endpoint, DOMAIN)[0])

    def active(self):  # type: ignore[no-untyped-def]
        return next(c for c in self.rt.db.certs("www") if c.state is CertState.ACTIVE)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.rt.db.events(site="www")]


class Gate:
    """A TCP forwarder in front of a CA that can be shut, to make the CA 'down' for real."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.open = True
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            if not self.open:
                client.close()  # connection reset: the CA is unreachable
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


def make_lab(
    tmp_path: Path,
    cas: list[LabCAEntry],
    roots: list[bytes],
    http01_port: int,
    *,
    reload: list[str] | None = None,
    daemon: dict[str, float] | None = None,
) -> Iterator[Lab]:
    daemon = daemon or {"verify_timeout": 5}
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(b"".join(roots))
    store = tmp_path / "store"
    live = store / "live" / "www"
    cfg_path = tmp_path / "certfailover.toml"
    site = {
        "name": "www",
        "domains": [DOMAIN],
        "cas": [c.name for c in cas],
        "server": "web",
        "endpoints": ["127.0.0.1:1"],
        "trust": [str(bundle)],
    }
    challenge = {"type": "http-01-standalone", "listen": f"127.0.0.1:{http01_port}"}
    write_config(
        cfg_path,
        store=store,
        cas=cas,
        server=None,
        site={**site, "server": None},
        challenge=challenge,
        daemon=daemon,
    )
    # bootstrap: nginx needs a certificate file to start; issue the first one without a server
    rt0 = build(config_mod.load(cfg_path))
    first = rt0.engine.issue(rt0.config.site("www"), cas[0].name)
    rt0.vault.point_live("www", Path(first.path))
    nginx = start_nginx(tmp_path / "nginx", [VHost(DOMAIN, (live,))])
    spec = {**nginx.spec, "name": "web"}
    if reload is not None:
        spec["reload"] = reload
    site["endpoints"] = [str(nginx.endpoint)]
    write_config(
        cfg_path,
        store=store,
        cas=cas,
        server=spec,
        site=site,
        challenge=challenge,
        daemon=daemon,
    )
    try:
        yield Lab(build(config_mod.load(cfg_path)), nginx, bundle, cfg_path)
    finally:
        nginx.stop()


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
    tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int
) -> None:
    for lab in make_lab(
        tmp_path,
        entries(pebble_a, pebble_b),
        [pebble_a.root_pem(), pebble_b.root_pem()],
        http01_port,
        reload=["true"],
    ):
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
            daemon={"verify_timeout": 5, "issue_timeout": 3},
        ):
            gate.open = False  # CA A is down when the standby is due
            report = lab.rt.engine.tick()
            kinds = [e.kind for e in report.events]
            assert "activated" in kinds and lab.active().ca == "pebble-b"
            assert "issuance_failed" in kinds and "standby_missing" in kinds
            fail = next(e for e in report.events if e.kind == "issuance_failed")
            assert "pebble-a" in fail.message
            assert lab.served_sha() == lab.active().sha256, "the site keeps serving"
            gate.open = True  # A is back: the next tick restores redundancy
            report = lab.rt.engine.tick()
            assert any(e.kind == "issued" and e.data["ca"] == "pebble-a" for e in report.events)
            assert lab.active().ca == "pebble-b"
    finally:
        gate.close()
