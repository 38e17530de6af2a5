"""The daemon's scheduled tick over the real wiring (real checks, vault, SQLite; no server)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from certfailover import config as config_mod
from certfailover import keys
from certfailover.daemon import Daemon, checks_for
from certfailover.engine import TickReport
from certfailover.errors import ConfigError, TransientIssuanceError
from certfailover.model import Health
from certfailover.schedule import Intervals, Scheduler
from certfailover.testing import FakeClock, pki
from certfailover.wiring import Runtime, build, build_daemon

T0 = datetime.now(UTC).replace(microsecond=0)
PEM = serialization.Encoding.PEM


def make_runtime(tmp_path: Path, clock: FakeClock, *, cas: tuple[str, ...] = ("a", "b"),
                 schedule: dict[str, Any] | None = None,
                 daemon: dict[str, Any] | None = None) -> tuple[Runtime, list[pki.Authority]]:
    roots = [pki.make_root(f"Root {ca}") for ca in cas]
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots)
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "store")},
        # nothing listens on port 1: every ARI directory fetch is a refused connection
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}/dir"} for ca in cas],
        "site": [{"name": "www", "domains": ["www.example.test"], "cas": list(cas),
                  "trust": [str(bundle)]}],
    }
    if schedule is not None:
        raw["schedule"] = schedule
    if daemon is not None:
        raw["daemon"] = daemon
    cfg = config_mod.parse(raw, file=str(tmp_path / "t.toml"), base=tmp_path, env={})
    return build(cfg, clock=clock), roots


def add_cert(rt: Runtime, root: pki.Authority, ca: str) -> None:
    leaf, key = pki.make_leaf(root, ["www.example.test"], not_before=T0 - timedelta(hours=1))
    rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(PEM),
                         chain_pem=b"", key_pem=keys.key_pem(key), source=f"test {ca}")


def with_two_certs(tmp_path: Path, clock: FakeClock,
                   **kw: Any) -> tuple[Runtime, list[pki.Authority]]:
    """A site with a certificate from CA a and one from CA b."""
    rt, roots = make_runtime(tmp_path, clock, **kw)
    add_cert(rt, roots[0], "a")
    add_cert(rt, roots[1], "b")
    return rt, roots


def scheduled(rt: Runtime, clock: FakeClock) -> Daemon:
    return Daemon(rt.engine, interval=1, clock=clock, scheduler=Scheduler(rng=random.Random(1)))


class Counter:
    def __init__(self) -> None:
        self.n = 0


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count every outgoing socket connection attempt in this process."""
    counter = Counter()
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        counter.n += 1
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return counter


def count_material(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts certificate loads from the vault (the engine loads each at most once per tick)."""
    counter = Counter()
    real: Callable[..., Any] = rt.engine.vault.load

    def load(path: Any) -> Any:
        counter.n += 1
        return real(path)

    monkeypatch.setattr(rt.engine.vault, "load", load)
    return counter


def test_tick_with_nothing_due_does_no_network_io_and_reads_no_vault(
        tmp_path: Path, connects: Counter, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)
    loads = count_material(rt, monkeypatch)
    daemon = Daemon(rt.engine, interval=1, clock=clock,
                    scheduler=Scheduler(rng=random.Random(1), intervals=Intervals(jitter=0)))

    first = daemon.tick()  # everything is due: every check of both certificates runs
    assert [e.kind for e in first.events] == ["activated"]
    assert loads.n == 2 and connects.n >= 2, "the ARI directory of each CA was asked"

    connects.n = loads.n = 0
    for seconds in (1, 60, 240):  # the activated site is decided once more, then nothing (the
        # next due signal is the CRL revalidation, 5 minutes after the first check)
        clock.now = T0 + timedelta(seconds=seconds)
        report = daemon.tick()
        assert report.events == []
    assert connects.n == 0 and loads.n == 0
    assert daemon.pending == set()
    assert len(rt.engine.db.findings(rt.engine.db.certs("www")[0].id)) >= 4, "findings kept"

    clock.now = T0 + timedelta(hours=7)  # crl/ari (6h) are due: the revocation check runs
    daemon.tick()
    assert connects.n >= 2 and loads.n == 2


def test_stored_findings_are_merged_with_the_checks_that_ran(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)
    site = rt.config.site("www")
    full = rt.engine.check_site(site)
    cid = next(iter(full))
    only = rt.engine.check_site(site, run={cid: frozenset({"trust", "revocation"})})
    assert sorted(f.check for f in only[cid].findings) == sorted(
        f.check for f in full[cid].findings)
    loads = count_material(rt, monkeypatch)
    reused = rt.engine.check_site(site, run={})
    assert loads.n == 0
    assert {k: v.findings for k, v in reused.items()} == {k: v.findings for k, v in only.items()}


def test_operator_distrust_is_acted_on_at_the_next_tick(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)
    daemon = scheduled(rt, clock)
    daemon.tick()
    daemon.tick()
    rt.db.distrust("a", T0, "test")
    clock.now = T0 + timedelta(seconds=5)  # nothing is due by the schedule
    report = daemon.tick()
    fo = next(e for e in report.events if e.kind == "failover")
    assert "distrusted" in fo.message
    assert next(c for c in rt.db.certs("www") if c.state.value == "active").ca == "b"


def test_a_changed_trust_bundle_is_acted_on_at_the_next_tick(tmp_path: Path) -> None:
    """Trust-store files are re-read when they change, without waiting for the daily check."""
    import os

    clock = FakeClock(T0)
    # the replacement standby from "a" (unreachable here) may fail fast
    rt, roots = with_two_certs(tmp_path, clock, daemon={"issue_timeout": 0.5})
    daemon = scheduled(rt, clock)
    daemon.tick()
    daemon.tick()
    assert next(c for c in rt.db.certs("www") if c.state.value == "active").ca == "a"
    bundle = tmp_path / "roots.pem"
    pki.write_bundle(bundle, roots[1])  # clients stop trusting root a
    st = bundle.stat()
    os.utime(bundle, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    clock.now = T0 + timedelta(seconds=5)  # nothing is due by the schedule
    report = daemon.tick()
    fo = next(e for e in report.events if e.kind == "failover")
    assert "does not validate" in fo.message
    assert next(c for c in rt.db.certs("www") if c.state.value == "active").ca == "b"


class FailingIssuer:
    name = "b"

    def __init__(self) -> None:
        self.calls = 0

    def issue(self, csr_pem: bytes, *, deadline: Any, replaces: str | None = None) -> Any:
        self.calls += 1
        raise TransientIssuanceError("CA b: connection refused")


def test_a_failing_ca_is_backed_off_not_hammered(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock)
    add_cert(rt, roots[0], "a")  # only CA a's certificate: a standby from b is needed
    issuer = FailingIssuer()
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: issuer}
    iv = Intervals(jitter=0, backoff_base=timedelta(minutes=1), ca_unreachable_after=timedelta(
        minutes=5))
    daemon = Daemon(rt.engine, interval=1, clock=clock,
                    scheduler=Scheduler(rng=random.Random(1), intervals=iv))
    kinds = [e.kind for e in daemon.tick().events]
    assert "issuance_failed" in kinds and "standby_missing" in kinds and issuer.calls == 1
    for seconds in (1, 30, 59):  # blocked: not asked, and no new standby_missing noise
        clock.now = T0 + timedelta(seconds=seconds)
        assert daemon.tick().events == []
    assert issuer.calls == 1 and daemon.pending == {"www"}
    clock.now = T0 + timedelta(seconds=61)
    daemon.tick()
    assert issuer.calls == 2  # backoff doubled: 2 minutes now
    clock.now = T0 + timedelta(seconds=61 + 119)
    daemon.tick()
    assert issuer.calls == 2
    clock.now = T0 + timedelta(minutes=6)
    daemon.tick()
    alerts = [e for e in rt.db.events(site="www") if e.kind == "ca_unreachable"]
    assert len(alerts) == 1 and alerts[0].data["ca"] == "b"


def test_schedule_table_overrides_and_errors_name_the_key(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, _ = make_runtime(tmp_path, clock, schedule={"expiry": "2h", "jitter": 0})
    iv = rt.config.schedule
    assert iv.expiry == timedelta(hours=2) and iv.jitter == 0
    d = build_daemon(rt.engine, rt.config, interval=1)
    try:
        assert d.scheduler is not None and d.scheduler.intervals == iv
        assert d.metrics is None, "no [metrics] table and no --metrics-listen: off"
    finally:
        d.close()
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match=r"\[schedule\]\.expiri"):
        make_runtime(tmp_path / "x", clock, schedule={"expiri": "2h"})
    assert not (tmp_path / "x" / "store").exists(), "rejected before anything is created"


def test_checks_per_signal() -> None:
    """Each check declares the signals it answers; the daemon reads them from the checks."""
    from certfailover.health import local_checks
    from certfailover.revocation import RevocationCheck
    from certfailover.trust.check import ProgramTrustCheck
    checks = [*local_checks(), RevocationCheck(), ProgramTrustCheck()]
    assert checks_for("crl", checks) == {"revocation"}
    assert checks_for("ari", checks) == {"revocation"}
    assert checks_for("trust", checks) == {"trust"}
    assert checks_for("expiry", checks) == {"validity", "key", "names", "chain", "distrust"}
    assert [k.name for k in checks if k.remote] == ["revocation"]
    assert checks_for("ocsp", checks[:5]) == frozenset(), "no check, nothing to run"


def test_full_tick_without_scheduler_keeps_engine_behaviour(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)
    daemon = Daemon(rt.engine, interval=1, clock=clock)
    daemon.tick()
    loads = count_material(rt, monkeypatch)
    report: TickReport = daemon.tick()
    assert loads.n == 2, "without a scheduler every tick checks every certificate"
    assert all(isinstance(h, Health) for h in report.health.values()) and len(report.health) == 2


def test_a_site_with_no_ca_left_to_ask_is_reported_once_not_every_tick(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)
    daemon = scheduled(rt, clock)
    daemon.tick()
    rt.db.distrust("a", T0, "test")  # b becomes active; a standby could only come from a
    for i in range(5):
        clock.now = T0 + timedelta(seconds=5 * (i + 1))
        daemon.tick()
    missing = [e for e in rt.db.events(site="www") if e.kind == "standby_missing"]
    assert len(missing) == 1 and "no CA left to ask" in missing[0].message
    assert "www" not in daemon.pending, "nothing to do: not re-decided every tick"
    rt.db.undistrust("a")  # the operator lifts it: a's certificate is a standby again
    clock.now += timedelta(days=2)  # its checks are due
    daemon.tick()
    assert [e.kind for e in rt.db.events(site="www")].count("standby_missing") == 1


def test_signal_hints_come_from_the_certificate_and_its_revocation_data() -> None:
    from certfailover.daemon import SignalResult, signal_result
    from certfailover.model import Finding, Severity, Signal
    now = T0
    soon, later = now + timedelta(minutes=3), now + timedelta(days=7)
    from certfailover.health import ValidityCheck
    from certfailover.revocation import RevocationCheck
    checks = [ValidityCheck(), RevocationCheck()]
    rev = Finding("revocation", Severity.OK, "good",
                  next_due={Signal.CRL: later, Signal.OCSP: soon})
    ari = Finding("ari", Severity.WARN, "?", known=False)
    h = Health("x", (rev, ari, Finding("validity", Severity.WARN, "renew", renew=True)))
    assert signal_result("crl", h, now, checks) == SignalResult(later, True)
    assert signal_result("ocsp", h, now, checks) == SignalResult(soon, True)
    assert signal_result("ari", h, now, checks) == SignalResult(None, False)
    # inside the renewal window: the next expiry check is the switch margin, then notAfter
    na = now + timedelta(hours=2)
    r = signal_result("expiry", h, now, checks, switch_at=na - timedelta(minutes=10),
                      not_after=na)
    assert r.next_hint == na - timedelta(minutes=10)
    r = signal_result("expiry", h, na - timedelta(minutes=5), checks,
                      switch_at=na - timedelta(minutes=10), not_after=na)
    assert r.next_hint == na
    unknown = Health("x", (Finding("revocation", Severity.WARN, "?", known=False),))
    r = signal_result("crl", unknown, now, checks)
    assert not r.known and r.next_hint is None


def test_a_certificate_too_short_lived_for_the_schedule_is_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from certfailover.status import site_status
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock)  # interval 300 s, issue_timeout 120 s
    leaf, key = pki.make_leaf(roots[0], ["www.example.test"], not_before=T0,
                              not_after=T0 + timedelta(minutes=30))  # renewal window 10 min
    rt.engine.store_cert(rt.config.site("www"), "a", leaf_pem=leaf.public_bytes(PEM),
                         chain_pem=b"", key_pem=keys.key_pem(key), source="short")
    add_cert(rt, roots[1], "b")  # 90 days: fine
    with caplog.at_level("WARNING"):
        d = build_daemon(rt.engine, rt.config, interval=300)
        d.close()
    short = [r.getMessage() for r in caplog.records if "renewal window" in r.getMessage()]
    assert len(short) == 1 and "/a/" in short[0] and "720s" in short[0]
    notes = site_status(rt.db, rt.config.site("www"), T0, daemon=rt.config.daemon)["notes"]
    assert sum("shorter than two check intervals" in n for n in notes) == 1


def test_a_lost_daemon_lock_stops_the_daemon(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)

    class Lock:
        held = True

    daemon = Daemon(rt.engine, interval=0.01, clock=clock)
    daemon.lock = lock = Lock()
    ticks: list[int] = []

    def on_tick(report: TickReport) -> None:
        ticks.append(1)
        if len(ticks) == 2:
            lock.held = False  # e.g. the PostgreSQL session holding the advisory lock died

    daemon.on_tick = on_tick
    assert daemon.run(max_ticks=10) == 3 and len(ticks) == 2
    assert "lock_lost" in [e.kind for e in rt.db.events()]


def test_the_daemon_wakes_when_a_failed_switch_may_be_tried_again(tmp_path: Path) -> None:
    """A switch that was rolled back waits [daemon] switch_backoff, not a whole interval: the
    daemon sleeps until the earliest retry, then ticks (the held site is still pending)."""
    clock = FakeClock(T0)
    rt, _ = with_two_certs(tmp_path, clock)
    due_in = 0.3
    # another site's (this one's first tick activates, which forgets its own failures)
    rt.engine.switch_hold.failed("shop", "/elsewhere", clock().timestamp() - (30 - due_in))
    assert rt.engine.next_switch_retry() == pytest.approx(due_in)
    daemon = Daemon(rt.engine, interval=300.0, clock=clock)
    started = time.monotonic()
    runner = threading.Thread(target=daemon.run, kwargs={"max_ticks": 2}, daemon=True)
    runner.start()
    runner.join(20)
    took = time.monotonic() - started
    if runner.is_alive():
        daemon.stop_event.set()
        daemon.wake()
        runner.join(10)
        pytest.fail("the daemon slept the whole 300 s interval past the switch's retry")
    assert daemon.ticks == 2 and due_in <= took < 20
