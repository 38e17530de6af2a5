"""Engine.tick with two chains per certificate (the testing kit, no Pebble, no web server):
a root of the served path removed from the site's trust bundle -> a chain switch of the same
certificate, no order; both paths gone -> certificate failover."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_engine_kit import Publisher

from certfailover import config as config_mod
from certfailover import keys
from certfailover.engine import Engine
from certfailover.errors import InputError
from certfailover.health import BundleStores
from certfailover.issuers.base import Issued
from certfailover.model import Cert, CertState
from certfailover.store.vault import chain_index
from certfailover.testing import FakeClock, FakeIssuer, RecordingDeployer, pki
from certfailover.wiring import build_checks, open_store

DOMAIN = "www.example.test"


class CrossSignedIssuer(FakeIssuer):
    """A FakeIssuer whose CA also offers an alternate chain: its issuing CA cross-signed by
    another root (ACME `Link: rel="alternate"`)."""

    def __init__(self, *args: object, cross: pki.Authority, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.cross = cross

    def issue(self, csr_pem: bytes, *, deadline: datetime, replaces: str | None = None) -> Issued:
        got = super().issue(csr_pem, deadline=deadline, replaces=replaces)
        return dataclasses.replace(got, alt_chains_pem=(pki.pem(self.cross.cert),))


@dataclass
class World:
    engine: Engine
    clock: FakeClock
    cas: dict[str, FakeIssuer]
    deployer: RecordingDeployer
    bundle: Path
    roots: dict[str, pki.Authority]

    def trust(self, *names: str) -> None:
        """The site's trust bundle now holds these roots only."""
        tmp = self.bundle.with_suffix(".new")
        pki.write_bundle(tmp, *(self.roots[n] for n in names))
        tmp.replace(self.bundle)

    def tick(self) -> None:
        self.clock.advance(timedelta(minutes=6))
        self.engine.tick()

    def active(self) -> Cert:
        [one] = [c for c in self.engine.db.certs("www") if c.state is CertState.ACTIVE]
        return one

    def events(self, kind: str) -> list[str]:
        return [e.message for e in self.engine.db.events(site="www") if e.kind == kind]

    def orders(self) -> int:
        return sum(len(i.orders) for i in self.cas.values())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock()
    publisher = Publisher(clock)
    roots = {n: pki.make_root(f"Root {n}") for n in ("a", "a-new", "b")}
    inter_a = pki.make_intermediate(roots["a"], "Issuing CA a")
    cross_a = pki.make_intermediate(roots["a-new"], "Issuing CA a", key=inter_a.key)
    inter_b = pki.make_intermediate(roots["b"], "Issuing CA b")
    issuers: dict[str, FakeIssuer] = {}
    for ca, inter in (("a", inter_a), ("b", inter_b)):
        publisher.issuers[ca], publisher.revoked[ca] = inter, set()
    issuers["a"] = CrossSignedIssuer("a", inter_a, clock=clock, cross=cross_a,
                                     crl_urls=(publisher.url("a.crl"),))
    issuers["b"] = FakeIssuer("b", inter_b, clock=clock, crl_urls=(publisher.url("b.crl"),))
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots.values())
    lines = [f'[store]\ndirectory = "{tmp_path / "store"}"\n']
    for ca in ("a", "b"):
        lines.append(f'[[ca]]\nname = "{ca}"\ndirectory = "{publisher.url(ca + "/directory")}"\n'
                     f'crl_urls = ["{publisher.url(ca + ".crl")}"]\n')
    lines.append(f'[[site]]\nname = "www"\ndomains = ["{DOMAIN}"]\ncas = ["a", "b"]\n'
                 f'trust = ["{bundle}"]\nmin_standbys = 1\n')
    (tmp_path / "certfailover.toml").write_text("\n".join(lines))
    cfg = config_mod.load(tmp_path / "certfailover.toml", env={})
    db, vault = open_store(cfg)
    deployer = RecordingDeployer(vault)
    engine = Engine(cfg, db, vault, checks=build_checks(cfg, BundleStores()),
                    issuers=dict(issuers), deploy=deployer, clock=clock, workers=2)
    try:
        yield World(engine, clock, issuers, deployer, bundle, roots)
    finally:
        publisher.close()
        db.engine.dispose()


def test_root_removed_switches_the_chain_not_the_certificate(world: World) -> None:
    world.tick()
    a = world.active()
    assert a.ca == "a" and world.orders() == 2
    vault = world.engine.vault
    assert chain_index(Path(a.path), vault.live_target("www")) == 0
    world.tick()
    assert world.events("chain_switch") == [], "both chains work: the served one is kept"

    world.trust("a-new", "b")  # the served path's root leaves the bundle
    world.tick()
    assert world.active().id == a.id, "same certificate"
    assert chain_index(Path(a.path), vault.live_target("www")) == 1
    [switch] = world.events("chain_switch")
    assert "chain 0 fails" in switch and "chain 1" in switch
    assert world.deployer.activations[-1].target == a.id and world.deployer.activations[-1].ok
    assert world.orders() == 2, "no issuance during a chain switch"
    assert world.events("failover") == []
    served = vault.load(vault.live_target("www"))  # type: ignore[arg-type]
    assert served.leaf.serial_number == int(a.serial, 16)
    assert served.chain[0].issuer.rfc4514_string() == "CN=Root a-new"
    world.tick()
    assert len(world.events("chain_switch")) == 1, "switched once"

    world.trust("b")  # both paths gone: only now does the certificate fail over
    world.tick()
    assert world.active().ca == "b"
    assert len(world.events("failover")) == 1


def test_a_failed_chain_switch_is_rolled_back(world: World) -> None:
    world.tick()
    a = world.active()
    world.deployer.serve_wrong_leaf(ca="a")
    world.trust("a-new", "b")
    world.tick()
    assert world.events("chain_switch") == [] and len(world.events("rollback")) == 1
    assert world.active().id == a.id


def test_import_checks_every_alternate_chain(world: World) -> None:
    world.tick()
    site = world.engine.config.site("www")
    leaf, key = pki.make_leaf(pki.make_intermediate(world.roots["b"], "Issuing CA b"), [DOMAIN])
    stranger = pki.make_intermediate(pki.make_root("Stranger"), "Stranger CA")
    with pytest.raises(InputError, match="chain 1"):
        world.engine.store_cert(site, "c", leaf_pem=pki.pem(leaf), chain_pem=b"",
                                key_pem=keys.key_pem(key), source="import",
                                alt_chains_pem=(pki.pem(stranger.cert),))


def test_status_shows_the_served_chain_its_reason_and_each_paths_end(world: World) -> None:
    from certfailover.status import site_status
    world.tick()
    a = world.active()
    world.trust("a-new", "b")
    world.tick()
    site = world.engine.config.site("www")
    st = site_status(world.engine.db, site, world.clock(), vault=world.engine.vault)
    row = next(r for r in st["certs"] if r["id"] == a.id)
    assert row["chains"]["served"] == 1 and row["chains"]["choice"] == 1
    assert [p["ok"] for p in row["chains"]["paths"]] == [False, True]
    assert row["chains"]["paths"][1]["served"] and "Root a-new" in row["chains"]["paths"][1]["top"]
    assert any(line.startswith(f"{a.id}: serves chain 1") for line in st["chain_lines"])
    b = next(r for r in st["certs"] if r["ca"] == "b")
    assert b["chains"]["served"] is None and len(b["chains"]["paths"]) == 1


def test_pins_cover_every_intermediate_and_root_of_every_path(world: World) -> None:
    from certfailover.pins import site_pins, spki_pin
    world.tick()
    site = world.engine.config.site("www")
    pins = site_pins(world.engine.db, world.engine.vault, site, now=world.clock())
    roots = {p.pin_sha256 for p in pins.pins if p.role == "root"}
    inters = {p.subject for p in pins.pins if p.role == "intermediate"}
    assert roots == {spki_pin(world.roots[n].cert.public_key()) for n in ("a", "a-new", "b")}
    # the cross-sign has the issuing CA's key: one pin for both of a's intermediates
    assert inters == {"CN=Issuing CA a", "CN=Issuing CA b"}
    assert {p.role for p in pins.pins} >= {"active", "standby", "spare"}


def test_imported_chain_missing_an_intermediate_is_completed_from_aia(world: World) -> None:
    from test_aia import Lab, Pki
    lab = Lab()
    try:
        p = Pki(lab)
        world.roots["aia"] = p.root
        world.trust("aia", "a", "a-new", "b")
        world.tick()
        site = world.engine.config.site("www")
        cert = world.engine.store_cert(site, "b", leaf_pem=pki.pem(p.leaf),
                                       chain_pem=pki.pem(p.i2.cert),  # i1 is missing
                                       key_pem=keys.key_pem(p.key), source="import")
        stored = world.engine.vault.load(Path(cert.path)).chains
        assert stored == ((p.i2.cert,), (p.i2.cert, p.i1.cert)), "kept as sent, plus completed"
        world.engine.failover("www", to=cert.id)
        assert world.active().id == cert.id
        assert chain_index(Path(cert.path), world.engine.vault.live_target("www")) == 1, \
            "the completed chain is the one that validates: it is served"
    finally:
        lab.httpd.shutdown()
        lab.httpd.server_close()
