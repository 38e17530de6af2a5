"""A CA's bad day, on the real parts: Pebble CAs behind fault proxies, the status service that
publishes their revocations, nginx, real handshakes, the real daemon.

Each test asserts what the operator cares about: the switch happens within interval + 2 s
whatever a CA does, nothing revoked or expired is served while a healthy standby exists, the
orders sent to a CA stay within the issuance budget, and an alert is said once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfailover import config as config_mod
from certfailover.daemon import Daemon
from certfailover.model import CertState
from certfailover.probe import served_chain
from certfailover.wiring import build, build_daemon
from certfailover_lab.faults import FaultProxy, Mode
from certfailover_lab.pebble import ChallTestSrv, PebbleCA, revoke
from certfailover_lab.sitelab import DOMAIN, Lab, make_lab
from certfailover_lab.sites import LabCAEntry
from certfailover_lab.stack import RevocableCA

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "certfailover.cli.main"]
lab_of = contextmanager(make_lab)


@pytest.fixture(scope="module")
def pebble_c(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv,
             http01_port: int) -> Iterator[PebbleCA]:
    ca = PebbleCA(tmp_path_factory.mktemp("pebble-c"), name="pebble-c", http_port=http01_port,
                  dns_server=challtestsrv.dns_address, nonce_reject_percent=0)
    try:
        yield ca
    finally:
        ca.stop()


def _acme_port(ca: PebbleCA) -> int:
    return int(ca.directory_url.split(":")[2].split("/")[0])


def _behind(proxy: FaultProxy, ca: PebbleCA) -> LabCAEntry:
    path = ca.directory_url.split("/", 3)[3]
    return LabCAEntry(ca.name, f"https://127.0.0.1:{proxy.port}/{path}", ca.ca_bundle)


def _until(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _event(lab: Lab, kind: str) -> Any:
    return next((e for e in lab.rt.db.events(site="www") if e.kind == kind), None)


class Watcher:
    """A client loop: handshakes with the site until stopped; keeps every leaf it was shown."""

    def __init__(self, lab: Lab) -> None:
        self.lab, self.stop = lab, threading.Event()
        self.seen: list[tuple[datetime, x509.Certificate]] = []
        self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                leaf = served_chain(self.lab.nginx.endpoint, DOMAIN, timeout=2)[0]
                self.seen.append((datetime.now(UTC), leaf))
            except Exception:  # noqa: BLE001 - counted: a failed handshake is what we assert on
                self.failed += 1
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def expired_served(self) -> int:
        return sum(1 for at, leaf in self.seen if at >= leaf.not_valid_after_utc)


def _run_daemon(lab: Lab) -> tuple[Daemon, threading.Thread]:
    rt = build(config_mod.load(lab.config_path))
    daemon = build_daemon(rt.engine, rt.config, interval=rt.config.daemon.interval)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    return daemon, t


def _stop_daemon(daemon: Daemon, t: threading.Thread) -> None:
    daemon.stop_event.set()
    daemon._wake.set()
    t.join(10)
    daemon.close(5)


# -- a CA that is down, hangs, drips, answers 500 or HTML never delays a switch ------------------

def test_distrust_switches_on_time_while_one_ca_hangs_and_another_drips(
        tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, pebble_c: PebbleCA,
        http01_port: int) -> None:
    """The issue's case, with the real daemon process: three CAs, min_standbys = 2,
    issue_timeout = 60, interval 1 s; C hangs (connection accepted, no answer), B drips."""
    b_proxy, c_proxy = FaultProxy(_acme_port(pebble_b)), FaultProxy(_acme_port(pebble_c),
                                                                     mode="hang")
    entries = [LabCAEntry(pebble_a.name, pebble_a.directory_url, pebble_a.ca_bundle),
               _behind(b_proxy, pebble_b), _behind(c_proxy, pebble_c)]
    roots = [pebble_a.root_pem(), pebble_b.root_pem(), pebble_c.root_pem()]
    try:
        with lab_of(tmp_path, entries, roots, http01_port,
                            daemon={"verify_timeout": 5, "issue_timeout": 60, "interval": 1},
                            site_extra={"min_standbys": 2}) as lab:
            site = lab.rt.config.site("www")
            assert lab.rt.engine.order(site, pebble_b.name) is not None  # B's standby, then:
            b_proxy.mode = "drip"
            env = {**os.environ, "CERTFAILOVER_CONFIG": str(lab.config_path)}
            proc = subprocess.Popen([*CLI, "run"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                _until(lambda: any(c.state is CertState.ACTIVE for c in lab.rt.db.certs("www")),
                       "the daemon to activate A")
                _until(lambda: c_proxy.accepted > 0, "the order to C (which hangs)")
                out = subprocess.run([*CLI, "distrust", pebble_a.name, "--no-tick"], env=env,
                                     capture_output=True, text=True, timeout=30, check=False)
                assert out.returncode == 0, out.stderr
                _until(lambda: _event(lab, "failover") is not None, "the daemon's failover", 10)
                distrusted, failover = _event(lab, "distrust"), _event(lab, "failover")
                took = (failover.time - distrusted.time).total_seconds()
                assert took <= 1 + 2, f"distrust -> verified switch took {took:.2f}s"
                assert "/pebble-b/" in failover.data["cert"]
                assert lab.wait_served(lab.active().sha256)
                # SIGTERM while C's order is stuck: the daemon stops within a few seconds
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=30)
                stopped = time.monotonic() - started
                assert proc.returncode == 0, err
                assert stopped < 5, f"SIGTERM took {stopped:.1f}s with an order in flight"
                print(f"\ndistrust -> verified switch: {took:.2f}s; SIGTERM -> exit {stopped:.2f}s")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    finally:
        b_proxy.close()
        c_proxy.close()


@pytest.mark.parametrize("mode", ["refuse", "reset", "hang", "drip", "http500", "html"])
def test_a_failing_ca_never_delays_a_failover(
        tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, pebble_c: PebbleCA,
        http01_port: int, mode: Mode) -> None:
    tls = ((pebble_c.workdir / "listener-cert.pem").read_bytes(),
           (pebble_c.workdir / "listener-key.pem").read_bytes())
    c_proxy = FaultProxy(_acme_port(pebble_c), mode=mode, drip_interval=2.0, tls=tls)
    entries = [LabCAEntry(pebble_a.name, pebble_a.directory_url, pebble_a.ca_bundle),
               LabCAEntry(pebble_b.name, pebble_b.directory_url, pebble_b.ca_bundle),
               _behind(c_proxy, pebble_c)]
    roots = [pebble_a.root_pem(), pebble_b.root_pem(), pebble_c.root_pem()]
    try:
        with lab_of(tmp_path, entries, roots, http01_port,
                            daemon={"verify_timeout": 5, "issue_timeout": 30, "interval": 1},
                            site_extra={"min_standbys": 2}) as lab:
            assert lab.rt.engine.order(lab.rt.config.site("www"), pebble_b.name) is not None
            daemon, t = _run_daemon(lab)
            try:
                _until(lambda: any(c.state is CertState.ACTIVE for c in lab.rt.db.certs("www")),
                       "activation")
                # C is asked for the second standby; whatever it does, the switch is on time
                _until(lambda: c_proxy.accepted > 0 or mode == "refuse", "an order to C", 10)
                lab.rt.engine.record(None, "www", "distrust", "test distrusts A", ca="pebble-a")
                lab.rt.db.distrust(pebble_a.name, lab.rt.engine.clock(), "test")
                _until(lambda: _event(lab, "failover") is not None, "the failover", 10)
                took = (_event(lab, "failover").time
                        - _event(lab, "distrust").time).total_seconds()
                assert took <= 3, f"{mode}: distrust -> verified switch took {took:.2f}s"
                assert lab.wait_served(lab.active().sha256)
                orders = lab.rt.db.orders(ca=pebble_c.name)
                assert len(orders) <= 2, [o.outcome for o in orders]
            finally:
                _stop_daemon(daemon, t)
    finally:
        c_proxy.close()


# -- revocation is permanent ---------------------------------------------------------------------

def test_a_revoked_certificate_is_never_served_after_its_ca_goes_dark(
        tmp_path: Path, challtestsrv: ChallTestSrv, http01_port: int) -> None:
    a = RevocableCA(tmp_path / "ca-a", name="dark-a", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    b = RevocableCA(tmp_path / "ca-b", name="dark-b", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    try:
        with lab_of(tmp_path, [a.entry(), b.entry()],
                            [a.pebble.root_pem(), b.pebble.root_pem()], http01_port) as lab:
            lab.rt.engine.tick()
            victim = lab.active()
            assert victim.ca == "dark-a"
            d = Path(victim.path)
            revoke(a.pebble.directory_url, a.pebble.ca_bundle, (d / "cert.pem").read_bytes(),
                   (d / "privkey.pem").read_bytes(), 1)  # keyCompromise
            lab.rt.engine.tick()  # failover to B, and a new standby from A (a new key)
            assert lab.active().ca == "dark-b" and "revoked" in lab.kinds()
            a.status.stop()  # A's CRL, OCSP and ARI go dark
            watcher = Watcher(lab)
            try:
                lab.rt.engine.tick()
                st = next(c for c in lab.rt.db.certs("www", include_retired=True)
                          if c.id == victim.id)
                assert st.state is CertState.RETIRED
                code = subprocess.run(
                    [*CLI, "--config", str(lab.config_path), "failover", "www", "--to", victim.id],
                    capture_output=True, text=True, timeout=60, check=False)
                assert code.returncode != 0 and "revoked" in code.stderr, code.stderr
                # a later incident on B: the failover goes to A's new certificate, never back
                lab.rt.db.distrust("dark-b", lab.rt.engine.clock(), "incident")
                lab.rt.engine.tick()
                assert lab.active().ca == "dark-a" and lab.active().id != victim.id
                assert lab.wait_served(lab.active().sha256)
            finally:
                watcher.close()
            assert watcher.seen and all(
                leaf.serial_number != int(victim.serial, 16) for _, leaf in watcher.seen)
    finally:
        a.stop()
        b.stop()


# -- expiry is scheduled on the certificate's own times -----------------------------------------

@pytest.mark.parametrize("standby", ["healthy", "warning"])
def test_both_cas_down_before_renewal_the_site_leaves_before_notafter(
        tmp_path: Path, challtestsrv: ChallTestSrv, http01_port: int, standby: str) -> None:
    """A issues 24-second certificates (renewal point at 16 s, switch margin 4 s: half the
    8-second renewal window, which holds two ticks and the 3-second issue_timeout). Both CAs
    go down before it.
    With a healthy standby the site switches at the renewal point; with a standby that carries a
    warning the active lacks ("never worse" keeps the active), at the switch margin before
    notAfter. A client loop never sees an expired certificate."""
    a = RevocableCA(tmp_path / "ca-a", name="short-a", http_port=http01_port,
                    dns_server=challtestsrv.dns_address, validity_seconds=24)
    b = RevocableCA(tmp_path / "ca-b", name="long-b", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    a_gate = FaultProxy(_acme_port(a.pebble))
    b_gate = FaultProxy(_acme_port(b.pebble))
    b_entry = _behind(b_gate, b.pebble)
    if standby == "warning":  # B publishes no revocation data: its certificates warn "unknown"
        b_entry = LabCAEntry(b_entry.name, b_entry.directory, b_entry.ca_bundle,
                             crl_urls=("http://127.0.0.1:1/crl",), crl_sign_required=False)
    else:
        b_entry = LabCAEntry(b_entry.name, b_entry.directory, b_entry.ca_bundle,
                             crl_urls=(b.status.crl_url,), ari_url=b.status.ari_url,
                             crl_sign_required=False)
    a_entry = a.entry()
    a_entry = LabCAEntry(a_entry.name, f"https://127.0.0.1:{a_gate.port}/"
                         f"{a.pebble.directory_url.split('/', 3)[3]}", a_entry.ca_bundle,
                         a_entry.crl_urls, a_entry.ari_url, False)
    try:
        with lab_of(tmp_path, [a_entry, b_entry],
                            [a.pebble.root_pem(), b.pebble.root_pem()], http01_port,
                            daemon={"verify_timeout": 5, "issue_timeout": 3, "interval": 1}) as lab:
            lab.rt.engine.tick()
            first = lab.active()
            assert first.ca == "short-a" and len(lab.rt.db.certs("www")) == 2
            a_gate.mode = b_gate.mode = "reset"  # both CAs down well before the renewal point
            watcher = Watcher(lab)
            daemon, t = _run_daemon(lab)
            try:
                _until(lambda: lab.active().ca == "long-b", "the switch to B", 40)
                switched_at = datetime.now(UTC)
                assert lab.wait_served(lab.active().sha256)
                time.sleep(max(0.0, (first.not_after - datetime.now(UTC)).total_seconds()) + 1)
            finally:
                _stop_daemon(daemon, t)
                watcher.close()
            life = (first.not_after - first.not_before).total_seconds()
            renew_at = first.not_after.timestamp() - life / 3
            left = (first.not_after - switched_at).total_seconds()
            assert left > 0, "switched only after notAfter"
            if standby == "healthy":
                assert switched_at.timestamp() < renew_at + 3, "at the renewal point"
            else:
                assert switched_at.timestamp() > renew_at, "not before the margin (never worse)"
            assert watcher.expired_served() == 0, "an expired certificate was served"
            assert watcher.failed == 0
            print(f"\n{standby} standby: switched {left:.1f}s before notAfter")
    finally:
        for x in (a_gate, b_gate):
            x.close()
        for y in (a, b):
            y.stop()


# -- a CA whose certificates are unusable is not ordered from every tick ------------------------

#: `[daemon] order_backoff` in the test below (default 1 minute): 5 ticks of 1 s per window
UNUSABLE_BACKOFF = 5.0


@pytest.mark.parametrize("damage", ["root removed", "garbage bundle"])
def test_unusable_certificates_stay_within_the_budget_and_alert_once(
        tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int,
        damage: str) -> None:
    """B's certificates stop being usable (its root leaves the site's trust, or the trust
    bundle is garbage). The daemon (interval 1 s) orders from B once; that certificate comes
    out unusable; the next order waits `order_backoff` from that order's end (not the next
    tick), also comes out unusable, and the wait after it doubles. One standby_unusable alert
    for the streak."""
    backoff = UNUSABLE_BACKOFF
    entries = [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (pebble_a, pebble_b)]
    with lab_of(tmp_path, entries, [pebble_a.root_pem(), pebble_b.root_pem()], http01_port,
                daemon={"verify_timeout": 5, "interval": 1, "order_backoff": backoff}) as lab:
        lab.rt.engine.tick()
        assert lab.active().ca == "pebble-a"
        before = len(lab.rt.db.orders(ca="pebble-b"))

        def ended() -> list[Any]:  # B's orders since the damage that have an outcome
            return [o for o in lab.rt.db.orders(ca="pebble-b")[before:] if o.finished]

        if damage == "root removed":  # B's root leaves the site's trust
            lab.bundle.write_bytes(pebble_a.root_pem())
        else:
            lab.bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        daemon, t = _run_daemon(lab)
        try:
            _until(lambda: len(ended()) >= 1, "the first order to B", 30)
            _until(lambda: len(ended()) >= 2, "the order to B after the backoff", backoff + 30)
            # two unusable in a row: the next wait is 2 * backoff from the second's end; no
            # order in the first `backoff` of it (ticks every second meanwhile)
            second_end = ended()[1].finished
            time.sleep(max(0.0, (second_end - datetime.now(UTC)).total_seconds() + backoff))
        finally:
            _stop_daemon(daemon, t)
        orders = lab.rt.db.orders(ca="pebble-b")[before:]
        assert len(orders) == 2, [(o.outcome, o.started, o.finished) for o in orders]
        assert len(orders) <= lab.rt.config.daemon.max_orders
        assert [o.outcome for o in orders] == ["unusable", "unusable"], orders
        first, second = orders
        assert first.finished is not None and second.finished is not None
        gap = (second.started - first.finished).total_seconds()
        assert gap >= backoff, f"ordered again {gap:.2f}s after an unusable order"
        kinds = lab.kinds()
        assert kinds.count("standby_unusable") == 1, kinds
        assert kinds.count("none_healthy") <= 1
        if damage == "root removed":
            assert lab.served_sha() == lab.active().sha256 and lab.active().ca == "pebble-a"
        print(f"\n{damage}: {len(orders)} orders to pebble-b, {gap:.1f}s apart "
              f"(order_backoff {backoff:.0f}s), {kinds.count('standby_unusable')} "
              "standby_unusable alert")
