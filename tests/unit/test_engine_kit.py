"""Engine.tick decisions with the testing kit: no Pebble, no web server.

The engine is built from the public pieces (config.load, wiring.open_store, wiring.build_checks,
the Engine constructor) with the kit's fakes in its ports: FakeIssuer per CA, a
RecordingDeployer, a FakeClock. The checks are the real ones; revocation data comes from a
loopback server that publishes each CA's CRL (made by the kit's PKI) on the engine's clock.
Assertions are on what the engine did: activations, events, the store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfailover import config as config_mod
from certfailover.engine import Engine
from certfailover.health import BundleStores
from certfailover.model import Action, Cert, CertState
from certfailover.status import site_status
from certfailover.testing import FakeClock, FakeIssuer, RecordingDeployer, pki
from certfailover.wiring import build_checks, open_store

DOMAIN = "www.example.test"


class Publisher:
    """Each CA's CRL over loopback HTTP, signed now (on the engine's clock) by its issuing CA;
    a CA's ACME directory without renewalInfo (no ARI)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.issuers: dict[str, pki.Authority] = {}
        self.revoked: dict[str, set[int]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.strip("/").split("/")[0].removesuffix(".crl")
                if self.path.endswith(".crl") and name in outer.issuers:
                    body, kind = outer.crl(name), "application/pkix-crl"
                elif self.path.endswith("/directory"):
                    body, kind = b'{"newNonce": "http://127.0.0.1:1/nonce"}', "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def crl(self, ca: str) -> bytes:
        revoked = {serial: x509.ReasonFlags.key_compromise for serial in self.revoked[ca]}
        crl = pki.make_crl(self.issuers[ca], revoked, now=self.clock())
        return crl.public_bytes(serialization.Encoding.DER)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class World:
    engine: Engine
    clock: FakeClock
    cas: dict[str, FakeIssuer]
    deployer: RecordingDeployer
    publisher: Publisher

    def tick(self, *, after: timedelta = timedelta(minutes=6)) -> list[Action]:
        """One tick, `after` the last one (past the CRL revalidation period); its actions."""
        self.clock.advance(after)
        return [d.action for d in self.engine.tick().decisions]

    def certs(self, *, retired: bool = False) -> list[Cert]:
        return self.engine.db.certs("www", include_retired=retired)

    def active(self) -> Cert:
        [one] = [c for c in self.certs() if c.state is CertState.ACTIVE]
        return one

    def kinds(self) -> list[str]:
        return [e.kind for e in self.engine.db.events(site="www")]

    def revoke(self, cert: Cert) -> None:
        self.publisher.revoked[cert.ca].add(int(cert.serial, 16))

    def rolled_back(self) -> Cert:
        """A site active on CA a whose failover to b is rolled back (the server goes on
        serving a's leaf after a's revocation); a's certificate."""
        self.tick()
        a = self.active()
        self.deployer.serve_wrong_leaf(ca="b")
        self.revoke(a)
        self.tick()
        return a


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def make_world(tmp_path: Path, *, cas: tuple[str, ...] = ("a", "b", "c"),
               lifetimes: dict[str, timedelta] | None = None) -> Iterator[World]:
    clock = FakeClock()
    publisher = Publisher(clock)
    roots, issuers = [], {}
    for ca in cas:
        root = pki.make_root(f"Root {ca}")
        inter = pki.make_intermediate(root, f"Issuing CA {ca}")
        roots.append(root)
        publisher.issuers[ca], publisher.revoked[ca] = inter, set()
        issuers[ca] = FakeIssuer(ca, inter, clock=clock,
                                 lifetime=(lifetimes or {}).get(ca, timedelta(days=90)),
                                 crl_urls=(publisher.url(f"{ca}.crl"),))
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots)
    lines = [f'[store]\ndirectory = "{tmp_path / "store"}"\n']
    for ca in cas:
        lines.append(f'[[ca]]\nname = "{ca}"\ndirectory = "{publisher.url(ca + "/directory")}"\n'
                     f'crl_urls = ["{publisher.url(ca + ".crl")}"]\n')
    lines.append(f'[[site]]\nname = "www"\ndomains = ["{DOMAIN}"]\n'
                 f'cas = [{", ".join(repr(c).replace(chr(39), chr(34)) for c in cas)}]\n'
                 f'trust = ["{bundle}"]\nmin_standbys = 1\n')
    (tmp_path / "certfailover.toml").write_text("\n".join(lines))
    cfg = config_mod.load(tmp_path / "certfailover.toml", env={})
    db, vault = open_store(cfg)
    deployer = RecordingDeployer(vault)
    engine = Engine(cfg, db, vault, checks=build_checks(cfg, BundleStores()),
                    issuers=dict(issuers), deploy=deployer, clock=clock, workers=2)
    try:
        yield World(engine, clock, issuers, deployer, publisher)
    finally:
        publisher.close()
        db.engine.dispose()


def test_first_tick_issues_from_two_cas_and_activates_the_first(world: World) -> None:
    world.tick()
    active = world.active()
    assert active.ca == "a", "the first configured CA is preferred"
    assert [(a.target, a.previous, a.ok) for a in world.deployer.activations] == \
        [(active.id, None, True)]
    assert world.deployer.serving == {"www": active.id}
    assert world.engine.vault.live_target("www") == Path(active.path).resolve()
    standbys = [c for c in world.certs() if c.state is CertState.STANDBY]
    assert [c.ca for c in standbys] == ["b"], "one independent standby, from the next CA"
    assert [o.outcome for o in world.cas["a"].orders] == ["issued"]
    assert [o.outcome for o in world.cas["b"].orders] == ["issued"]
    assert world.cas["c"].orders == [], "min_standbys = 1: no third order"
    assert world.kinds().count("issued") == 2 and world.kinds().count("activated") == 1
    world.tick()
    assert len(world.deployer.activations) == 1, "a healthy active certificate is kept"


def test_revoked_active_fails_over_and_a_standby_is_replenished_elsewhere(world: World) -> None:
    world.tick()
    a = world.active()
    world.revoke(a)
    world.tick()
    b = world.active()
    assert b.ca == "b"
    assert world.deployer.activations[-1].previous == a.id and world.deployer.serving["www"] == b.id
    kinds = world.kinds()
    assert kinds.index("revoked") < kinds.index("failover")
    world.tick()  # no longer served: the revoked certificate is retired
    assert world.engine.db.cert(a.id).state is CertState.RETIRED  # type: ignore[union-attr]
    assert "retired" in world.kinds()
    # a new independent standby: not from b (the active one's CA)
    standbys = [c for c in world.certs() if c.state is CertState.STANDBY]
    assert len(standbys) == 1 and standbys[0].ca != "b"
    assert standbys[0].id != a.id


def test_distrusted_ca_fails_over_and_replenishes_from_a_third_ca(world: World) -> None:
    world.tick()
    assert world.active().ca == "a"
    world.engine.db.distrust("a", world.clock(), "test: CA a distrusted")
    world.tick()
    assert world.active().ca == "b"
    # the new standby comes from c: never the distrusted CA, never the active one's
    assert [len(world.cas[ca].orders) for ca in ("a", "b", "c")] == [1, 1, 1]
    assert any(c.ca == "c" and c.state is CertState.STANDBY for c in world.certs())
    assert "failover" in world.kinds()


def test_a_ca_distrusted_for_one_site_fails_over_that_site_only(world: World) -> None:
    """`distrust CA --site` / the CT watch's distrust_on_unexpected: another site's distrust of
    CA a changes nothing here; this site's does, exactly as an everywhere distrust would."""
    world.tick()
    assert world.active().ca == "a"
    world.engine.db.distrust("a", world.clock(), "unexpected certificate", site="shop")
    world.tick()
    assert world.active().ca == "a" and "failover" not in world.kinds()
    world.engine.db.distrust("a", world.clock(), "unexpected certificate", site="www")
    world.tick()
    assert world.active().ca == "b" and "failover" in world.kinds()
    assert any(c.ca == "c" and c.state is CertState.STANDBY for c in world.certs())
    assert world.engine.db.distrusted() == {}, "nothing was distrusted everywhere"


def test_expired_active_is_replaced_and_retired(tmp_path: Path) -> None:
    for w in make_world(tmp_path, lifetimes={"a": timedelta(days=20)}):
        w.tick()
        a = w.active()
        assert a.ca == "a"
        w.cas["a"].fail()  # no successor from a: the only way out is the standby
        w.tick(after=timedelta(days=21))  # past a's notAfter at once (the daemon was stopped)
        assert w.active().ca == "b"
        assert w.engine.db.cert(a.id).state is CertState.RETIRED  # type: ignore[union-attr]
        failover = [e for e in w.engine.db.events(site="www") if e.kind == "failover"]
        assert len(failover) == 1 and "expired" in failover[0].message


def test_superseded_standby_is_retired_after_its_successor_is_issued(tmp_path: Path) -> None:
    # b's certificates live 9 days: inside their renewal window (last third) after 6
    for w in make_world(tmp_path, cas=("a", "b"), lifetimes={"b": timedelta(days=9)}):
        w.tick()
        old_b = next(c for c in w.certs() if c.ca == "b")
        w.tick(after=timedelta(days=7))  # old b is flagged: a successor is ordered from b
        assert len(w.cas["b"].orders) == 2
        w.tick()
        assert w.engine.db.cert(old_b.id).state is CertState.RETIRED  # type: ignore[union-attr]
        live_b = [c for c in w.certs() if c.ca == "b"]
        assert len(live_b) == 1 and live_b[0].id != old_b.id
        assert w.active().ca == "a", "the active certificate was never touched"
        assert len(w.deployer.activations) == 1


def test_wrong_leaf_served_is_rolled_back_and_tried_again_later(world: World) -> None:
    a = world.rolled_back()
    assert world.active().id == a.id, "the store keeps what is really served"
    assert world.deployer.serving["www"] == a.id
    assert world.engine.vault.live_target("www") == Path(a.path).resolve()
    rollback = [e for e in world.engine.db.events(site="www") if e.kind == "rollback"]
    assert len(rollback) == 1 and "rolled back" in rollback[0].message
    assert world.deployer.activations[-1].ok is False
    assert "failure 1 in a row; tried again in 30s" in rollback[0].message
    site = world.engine.config.site("www")
    [note] = [n for n in site_status(world.engine.db, site, world.clock())["notes"]
              if "the switch to" in n]
    assert note.startswith(f"the switch to {rollback[0].data['cert']} failed 1 time(s) in a row")
    retry_at = rollback[0].time + timedelta(seconds=30)
    assert f"the daemon tries again at {retry_at:%H:%M:%S}Z" in note
    tried = len(world.deployer.activations)
    world.tick(after=timedelta(seconds=10))  # inside [daemon] switch_backoff (30 s): held
    assert len(world.deployer.activations) == tried and world.kinds().count("rollback") == 1
    assert world.engine.next_switch_retry() == pytest.approx(20.0)
    world.tick(after=timedelta(seconds=25))  # past it: tried again, fails again, waits twice as long
    assert len(world.deployer.activations) == tried + 1 and world.kinds().count("rollback") == 2
    second = [e for e in world.engine.db.events(site="www") if e.kind == "rollback"][-1]
    assert "failure 2 in a row; tried again in 1m00s" in second.message
    assert second.data["failures"] == 2 and second.data["retry_in"] == 60.0
    world.deployer.heal()
    world.tick(after=timedelta(seconds=30))  # the server is fixed, the wait is not over
    assert world.active().id == a.id and len(world.deployer.activations) == tried + 1
    world.tick(after=timedelta(seconds=31))
    assert world.active().ca != "a" and world.deployer.activations[-1].ok
    assert world.engine.next_switch_retry() is None, "a success forgets the failures"
    assert not [n for n in site_status(world.engine.db, site, world.clock())["notes"]
                if "the switch to" in n], "the last switch succeeded: no note"


def test_an_operator_failover_does_not_wait_for_the_switch_backoff(world: World) -> None:
    world.rolled_back()
    assert world.kinds().count("rollback") == 1
    world.deployer.heal()
    report = world.engine.failover("www")  # at once, though the automatic retry waits
    assert [e.kind for e in report.events] == ["failover"]
    assert world.active().ca == "b" and world.engine.next_switch_retry() is None


def test_another_target_is_not_held_by_the_failures_of_the_first(world: World) -> None:
    world.rolled_back()
    held, now = world.engine.switch_hold, world.clock().timestamp()
    b = next(c for c in world.certs() if c.ca == "b")
    assert held.waiting("www", b.path, now) is not None
    assert held.waiting("www", b.path + "-other", now) is None
    assert held.waiting("shop", b.path, now) is None


def test_none_healthy_keeps_serving_and_says_so_once(world: World) -> None:
    world.tick()
    for c in world.certs():
        world.revoke(c)
    for ca in world.cas.values():
        ca.fail()
    before = len(world.deployer.activations)
    assert Action.NONE_HEALTHY in world.tick()
    world.tick()
    assert len(world.deployer.activations) == before, "no switch to something no better"
    assert world.deployer.serving["www"] == world.active().id
    assert world.kinds().count("none_healthy") == 1
    assert "issuance_failed" in world.kinds()


def test_never_switches_to_a_standby_that_is_worse(tmp_path: Path) -> None:
    # a lasts 30 days, b 27: after 21 days both are inside their renewal window (flagged),
    # both still valid for days: b is healthy but no better than a
    for w in make_world(tmp_path, cas=("a", "b"),
                        lifetimes={"a": timedelta(days=30), "b": timedelta(days=27)}):
        w.tick()
        a = w.active()
        for ca in w.cas.values():
            ca.fail()
        assert w.tick(after=timedelta(days=21)) == [Action.KEEP]
        assert w.active().id == a.id, "a flagged standby is no better than a flagged active"
        assert len(w.deployer.activations) == 1
        b = next(c for c in w.certs() if c.ca == "b")
        assert b.state is CertState.STANDBY, "still a usable standby: not retired"


def test_issuer_failure_does_not_block_a_switch(world: World) -> None:
    world.tick()
    a = world.active()
    for ca in world.cas.values():
        ca.fail("HTTP 503 from the directory")
    world.revoke(a)
    world.tick()
    assert world.active().ca == "b"
    kinds = world.kinds()
    assert kinds.index("failover") < kinds.index("issuance_failed"), "switch first, orders after"
    assert any(o.outcome == "failed" for ca in world.cas.values() for o in ca.orders)
