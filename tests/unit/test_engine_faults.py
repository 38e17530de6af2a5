"""The engine and daemon under CA faults, over the real wiring (vault, SQLite, real local checks),
with fake issuers and a scripted revocation check. The same faults on real Pebble, nginx and the
status service: tests/integration/test_faults.py."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_daemon_schedule import T0, add_cert, make_runtime

from certfailover.checks import CertMaterial, CheckContext
from certfailover.daemon import Daemon
from certfailover.errors import InputError, TransientIssuanceError
from certfailover.issuers.base import Issued
from certfailover.model import Action, CertState, Finding, Severity, Signal
from certfailover.revocation.check import RevocationCheck
from certfailover.schedule import Intervals, Scheduler
from certfailover.testing import FakeClock, pki
from certfailover.wiring import Runtime

PEM = serialization.Encoding.PEM


class SignsCSRs:
    """A CA that signs whatever it is asked, with `root` (maybe one the site does not trust)."""

    def __init__(self, name: str, root: pki.Authority, *, delay: float = 0.0,
                 hang: threading.Event | None = None, fail: bool = False) -> None:
        self.name, self.root, self.delay, self.hang, self.fail = name, root, delay, hang, fail
        self.calls = 0

    def issue(self, csr_pem: bytes, *, deadline: Any, replaces: str | None = None) -> Issued:
        self.calls += 1
        if self.hang is not None:
            self.hang.wait(30)
        time.sleep(self.delay)
        if self.fail:
            raise TransientIssuanceError(f"CA {self.name}: connection refused")
        csr = x509.load_pem_x509_csr(csr_pem)
        names = [str(n) for n in csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]
        leaf, _ = pki.make_leaf(self.root, names, csr=csr, not_before=T0 - timedelta(hours=1))
        return Issued(leaf.public_bytes(PEM), b"", self.name)


class ScriptedRevocation:
    """Stands in for RevocationCheck: answers `status[cert ca]` ("good", "revoked", "unknown")."""

    name: ClassVar[str] = RevocationCheck.name
    findings: ClassVar[frozenset[str]] = RevocationCheck.findings
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = RevocationCheck.signals
    remote: ClassVar[bool] = RevocationCheck.remote

    def __init__(self) -> None:
        self.status: dict[str, str] = {}

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        st = self.status.get(material.cert.ca, "good")
        if st == "revoked":
            return [Finding("revocation", Severity.FAIL, "revoked (key_compromise) according to "
                            "crl http://crl.test/", revoked=True)]
        if st == "unknown":
            return [Finding("revocation", Severity.WARN, "revocation status unknown: crl down",
                            known=False)]
        return [Finding("revocation", Severity.OK, "not revoked")]


def scripted(rt: Runtime) -> ScriptedRevocation:
    rev = ScriptedRevocation()
    rt.engine.checks = [k for k in rt.engine.checks if k.name != "revocation"] + [rev]
    return rev


def test_a_verified_revocation_sticks_when_the_data_goes_dark(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock, cas=("a", "b", "c"))
    for root, ca in zip(roots, ("a", "b", "c")):
        add_cert(rt, root, ca)
    rev = scripted(rt)
    rt.engine.tick(replenish=False)
    active = next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE)
    assert active.ca == "a"
    rev.status["b"] = "revoked"  # the standby from b is revoked ...
    rt.engine.tick(replenish=False)
    assert "revoked" in [e.kind for e in rt.db.events(site="www")]
    b = next(c for c in rt.db.certs("www", include_retired=True) if c.ca == "b")
    assert b.state is CertState.RETIRED, "a revoked standby is retired"
    rev.status["b"] = "unknown"  # ... then its CA's CRL and OCSP become unreachable
    with_b = rt.db.certs("www", include_retired=True)
    h = rt.engine.check_site(rt.config.site("www"), with_b)[b.id]
    assert not h.healthy and "revoked (recorded" in "; ".join(h.reasons())
    try:
        rt.engine.failover("www", to=b.id)
    except InputError as exc:
        assert "revoked" in str(exc)
    else:
        raise AssertionError("failover --to a revoked certificate must be refused")
    rev.status["a"] = "revoked"  # an incident on the active: the failover goes to c, never b
    report = rt.engine.tick(replenish=False)
    assert [d.target for d in report.decisions if d.action is Action.FAILOVER] == \
        [next(c.id for c in with_b if c.ca == "c")]


def test_a_ca_whose_certificates_are_unusable_is_backed_off_and_said_once(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock, daemon={"max_orders": 3})
    add_cert(rt, roots[0], "a")
    untrusted = pki.make_root("Root nobody trusts")
    b = SignsCSRs("b", untrusted)
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    scripted(rt)  # no network: every revocation answer is "good"
    for second in range(0, 600, 2):  # ten minutes of ticks
        clock.now = T0 + timedelta(seconds=second)
        rt.engine.tick()
    kinds = [e.kind for e in rt.db.events(site="www")]
    # backoff 1, 2, 4 min from each failure: orders at 0 s, ~60 s, ~180 s, then the budget (3)
    assert b.calls == 3, b.calls
    assert kinds.count("standby_unusable") == 1
    assert [o.outcome for o in rt.db.orders(ca="b")] == ["unusable"] * 3
    missing = [e for e in rt.db.events(site="www") if e.kind == "standby_missing"]
    assert any("budget" in e.message for e in missing), "the exhausted budget is said"


def test_background_orders_never_delay_a_switch(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock, cas=("a", "b", "c"),
                             daemon={"issue_timeout": 60})
    add_cert(rt, roots[0], "a")
    add_cert(rt, roots[1], "b")
    hang = threading.Event()
    c = SignsCSRs("c", roots[2], hang=hang)
    rt.engine.issuers = {**rt.engine.issuers, "c": lambda site: c}
    site = rt.config.site("www")
    rt.config = rt.engine.config = _with_min_standbys(rt, 2)
    del site
    daemon = Daemon(rt.engine, interval=1, clock=clock,
                    scheduler=Scheduler(rng=random.Random(1), intervals=Intervals(jitter=0)))
    daemon.orders_in_background()
    try:
        daemon.tick()  # activates a; asks c for a second standby: c hangs
        assert c.calls == 1 or _wait(lambda: c.calls == 1)
        rt.db.distrust("a", clock(), "news")
        clock.now = T0 + timedelta(seconds=1)
        started = time.monotonic()
        report = daemon.tick()
        took = time.monotonic() - started
        switched = [d for d in report.decisions if d.action is Action.FAILOVER]
        assert switched and switched[0].target is not None and "/b/" in switched[0].target
        assert took < 2.0, f"the switch waited {took:.1f}s for a hanging CA"
    finally:
        hang.set()
        daemon.close()


def _with_min_standbys(rt: Runtime, n: int) -> Any:
    import dataclasses
    sites = tuple(dataclasses.replace(s, min_standbys=n) for s in rt.config.sites)
    return dataclasses.replace(rt.config, sites=sites)


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_an_expired_active_is_left_before_notafter(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock, daemon={"interval": 1})
    leaf, key = pki.make_leaf(roots[0], ["www.example.test"], not_before=T0 - timedelta(days=80),
                              not_after=T0 + timedelta(days=10))
    rt.engine.store_cert(rt.config.site("www"), "a", leaf_pem=leaf.public_bytes(PEM),
                         chain_pem=b"", key_pem=_pem(key), source="short a")
    rev = scripted(rt)
    rt.engine.tick(replenish=False)
    add_cert(rt, roots[1], "b")
    rev.status["b"] = "unknown"  # the standby carries a warning the active lacks
    daemon = Daemon(rt.engine, interval=1, clock=clock,
                    scheduler=Scheduler(rng=random.Random(1), intervals=Intervals(jitter=0)))
    daemon.orders_in_background()  # a renewal from a (down) is asked for: never waited on
    try:
        daemon.tick()
        assert next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE).ca == "a"
        a = next(c for c in rt.db.certs("www") if c.ca == "a")
        sched = daemon.scheduler
        assert sched is not None
        ticks = 0
        # jump from one expiry check of the active to the next (other signals due meanwhile
        # run in the same tick): the expiry check is due at the certificate's own times
        while next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE).ca == "a":
            due = sched.when(a.id, "expiry")
            assert due is not None and ticks < 30 and due < a.not_after, (due, ticks)
            clock.now = max(clock.now, due)
            daemon.tick()
            ticks += 1
        assert clock.now < a.not_after, "switched before notAfter, not after"
        assert a.not_after - clock.now <= timedelta(seconds=60), "only at the switch margin"
    finally:
        daemon.close()


def _pem(key: Any) -> bytes:
    from certfailover import keys
    return keys.key_pem(key)


class Crashes:
    name = "b"

    def issue(self, csr_pem: bytes, *, deadline: Any, replaces: str | None = None) -> Issued:
        raise RuntimeError("a bug in one site's path")


def test_one_sites_failure_never_stops_another_sites_work(tmp_path: Path) -> None:
    from certfailover import config as config_mod
    from certfailover.wiring import build
    clock = FakeClock(T0)
    roots = [pki.make_root(f"Root {ca}") for ca in ("a", "b")]
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots)
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "store")},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}/dir"} for ca in ("a", "b")],
        "site": [{"name": n, "domains": [f"{n}.example.test"], "cas": ["a", "b"],
                  "trust": [str(bundle)]} for n in ("api", "www")],
    }
    cfg = config_mod.parse(raw, file=str(tmp_path / "t.toml"), base=tmp_path, env={})
    rt = build(cfg, clock=clock)
    scripted(rt)
    for name in ("api", "www"):
        leaf, key = pki.make_leaf(roots[0], [f"{name}.example.test"],
                                  not_before=T0 - timedelta(hours=1))
        rt.engine.store_cert(rt.config.site(name), "a", leaf_pem=leaf.public_bytes(PEM),
                             chain_pem=b"", key_pem=_pem(key), source="test")
    good = SignsCSRs("b", roots[1])
    rt.engine.issuers = {**rt.engine.issuers,
                         "b": lambda site: Crashes() if site.name == "api" else good}
    for second in (0, 1, 2):
        clock.now = T0 + timedelta(seconds=second)
        rt.engine.tick()
    assert [c.ca for c in rt.db.certs("www")] == ["a", "b"], "www got its standby"
    errors = [e for e in rt.db.events(site="api") if e.kind == "site_error"]
    assert len(errors) == 1 and "a bug in one site's path" in errors[0].message


def test_an_order_placed_elsewhere_is_not_placed_again_nor_called_a_failure(
        tmp_path: Path) -> None:
    """Two fleet controllers share the orders table: when the other one's order for the same
    site and CA is in flight, the database refuses this one before the CA is asked."""
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock)
    add_cert(rt, roots[0], "a")
    b = SignsCSRs("b", roots[1])
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    elsewhere = rt.db.start_order("www", "b", T0)  # the other controller's order
    assert rt.engine.order(rt.config.site("www"), "b") is None
    assert b.calls == 0
    assert "issuance_failed" not in [e.kind for e in rt.db.events(site="www")]
    rt.db.finish_order(elsewhere, T0, "failed", reason="test")
    assert rt.engine.order(rt.config.site("www"), "b") is not None and b.calls == 1


def test_controllers_filling_a_cas_hourly_room_at_once_never_exceed_it(tmp_path: Path) -> None:
    """Each engine's hold() counts the orders it saw; two controllers may both see room. Under
    its pending row an engine counts again: the earliest rows of the hour win, a later one is
    dropped before the CA is asked (not a failure)."""
    import dataclasses

    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock)
    add_cert(rt, roots[0], "a")
    b = SignsCSRs("b", roots[1])
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    cas = dict(rt.engine.config.cas)
    cas["b"] = dataclasses.replace(cas["b"], max_orders_per_hour=2)
    rt.engine.config = dataclasses.replace(rt.engine.config, cas=cas)
    for other in ("shop", "blog"):  # the other controller's orders, placed a moment before
        rt.db.start_order(other, "b", T0)
    assert rt.engine.order(rt.config.site("www"), "b") is None
    assert b.calls == 0
    assert [o.site for o in rt.db.orders(ca="b")] == ["shop", "blog"]  # ours was dropped
    assert "issuance_failed" not in [e.kind for e in rt.db.events(site="www")]
    clock.now = T0 + timedelta(minutes=61)  # the hour has passed: room again
    assert rt.engine.order(rt.config.site("www"), "b") is not None and b.calls == 1


def test_a_certificate_another_controller_stored_after_the_decision_read_stops_the_order(
        tmp_path: Path) -> None:
    """Identity, not time: another controller's certificate is `created` before its row
    commits (it is sealed in between), so a decision may read the site between the two. Its
    order must still see, under its pending row, a certificate from the CA that the decision
    did not, and drop (the time-based check let both controllers issue: s4 twice from one CA
    in test_fleet_controllers)."""
    clock = FakeClock(T0)
    rt, roots = make_runtime(tmp_path, clock)
    add_cert(rt, roots[0], "a")
    b = SignsCSRs("b", roots[1])
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    report = rt.engine.tick(replenish=False)
    (decision,) = report.decisions
    assert decision.seen == frozenset(c.id for c in rt.db.certs("www"))  # what it was made on
    clock.now = T0 - timedelta(seconds=30)  # the other's certificate, created before the read,
    add_cert(rt, roots[1], "b")  # its row committed after it
    clock.now = T0
    site = rt.config.site("www")
    assert rt.engine.order(site, "b", seen=decision.seen) is None
    assert b.calls == 0
    assert [o.outcome for o in rt.db.orders(ca="b")] == []  # the pending row was dropped
    # a decision that saw that certificate and still wants one from b (say it is unusable)
    seen_now = frozenset(c.id for c in rt.db.certs("www"))
    assert rt.engine.order(site, "b", seen=seen_now) is not None and b.calls == 1


def test_an_orders_aia_completion_ends_by_the_orders_deadline(tmp_path: Path) -> None:
    """A CA sends a chain missing its intermediate and the AIA URL drips: completing the chain
    is part of the order, so it ends by issue_timeout, not by a fetch timeout of its own."""
    from test_aia import Lab, Pki

    from certfailover.aia import IssuerFetcher
    lab = Lab()
    try:
        p = Pki(lab)
        lab.drip.add("/i1.der")
        clock = FakeClock(T0)
        rt, roots = make_runtime(tmp_path, clock, daemon={"issue_timeout": 2})
        add_cert(rt, roots[0], "a")
        b = SignsCSRs("b", p.i2, delay=1.0)  # leaf signed by i2, sent with i2; i1 from AIA

        class WithI2:
            def issue(self, csr_pem: bytes, *, deadline: Any,
                      replaces: str | None = None) -> Issued:
                got = b.issue(csr_pem, deadline=deadline, replaces=replaces)
                return Issued(got.leaf_pem, p.i2.cert.public_bytes(PEM), got.ca)

        rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: WithI2()}
        rt.engine.aia = IssuerFetcher(timeout=30.0)
        t0 = time.monotonic()
        rt.engine.order(rt.config.site("www"), "b")
        took = time.monotonic() - t0
        assert b.calls == 1 and lab.hits.get("/i1.der") == 1, "the completion was tried"
        assert took < 2 + 1.5, f"the order took {took:.1f}s of its 2 s (a fetch may take 30 s)"
    finally:
        lab.httpd.shutdown()
        lab.httpd.server_close()
