"""Chain switches on a fleet (no database, no web server): the controller publishes the same
certificate with another chain (named by its digest, the record carrying every chain); a host
on the right leaf with the old chain has not converged; a stale host does not hold the wait;
the agent finds or adds the desired chain in its vault by digest."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from certfailover import keys
from certfailover.engine import Switch
from certfailover.events import EventKind
from certfailover.fleet import controller, sealed
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.controller import HostView, Laggard
from certfailover.fleet.deployer import FleetDeployer
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.model import Cert, Event
from certfailover.store.vault import Vault, chain_dir
from certfailover.testing import pki

NOW = datetime.now(UTC)


@dataclasses.dataclass
class TwoChains:
    cert: Cert  # at its archive directory (chain 0)
    plain: Plain
    digests: tuple[str, str]


def two_chains(vault: Vault) -> TwoChains:
    """A leaf of an issuing CA that is also cross-signed by a second root: chain 0 to the old
    root, chain 1 (the cross-sign) to the new one; stored like the controller stores it."""
    old, new = pki.make_root("Root old"), pki.make_root("Root new")
    inter = pki.make_intermediate(old, "Issuing CA")
    cross = pki.make_intermediate(new, "Issuing CA", key=inter.key)
    leaf, key = pki.make_leaf(inter, ["www.example.test"])
    serial = format(leaf.serial_number, "x")
    plain = Plain(pki.pem(leaf), pki.pem(inter.cert), keys.key_pem(key), (pki.pem(cross.cert),))
    path = vault.save("www", "a", serial, leaf_pem=plain.cert_pem, chain_pem=plain.chain_pem,
                      key_pem=plain.key_pem, alt_chains_pem=plain.alt_chains)
    cert = dataclasses.replace(pki.material(leaf, path=str(path)).cert)
    return TwoChains(cert, plain, (sealed.chain_digest(plain.chain_pem),
                                   sealed.chain_digest(plain.alt_chains[0])))


class FakeLeader:
    """Leader's surface for the deployer: leads, fences, no database behind `engine`."""

    epoch = 7
    engine: Any = None

    def try_lead(self) -> bool:
        return True

    @contextmanager
    def fenced(self) -> Iterator[object]:
        yield object()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    vault = Vault(tmp_path / "controller")
    vault.ensure()
    w = SimpleNamespace(vault=vault, published=[], views=[], lag=[], recorded=[],
                        c=two_chains(vault))

    def publish(conn: object, ring: object, items: Sequence[controller.Desired], *,
                epoch: int = 0) -> int:
        w.published.append(list(items))
        return len(items)

    def progress(engine: object, *, site: str | None = None, stale_after: float = 120.0,
                 sites: Sequence[str] | None = None) -> list[HostView]:
        views = list(w.views.pop(0) if len(w.views) > 1 else w.views[0])
        return [v for v in views if sites is None or v.site in sites]

    monkeypatch.setattr(controller, "publish", publish)
    monkeypatch.setattr(controller, "progress", progress)
    monkeypatch.setattr(controller, "laggards", lambda engine, **kw: list(w.lag))
    w.deployer = FleetDeployer(FakeLeader(), Keyring(Kek(os.urandom(32))), vault,  # type: ignore[arg-type]
                               converge_timeout=30.0, record=w.recorded.extend, poll=0.01,
                               stale_after=5.0)
    yield w


def view(host: str, sha: str, chain: str | None, want: TwoChains, *, stale: bool = False,
         want_chain: int = 1) -> HostView:
    return HostView("www", host, want.cert.sha256, sha, NOW, NOW, "", stale,
                    want.digests[want_chain], chain, want.cert.id, NOW)


def chain_switch(c: TwoChains, to: int = 1) -> Switch:
    site: Any = SimpleNamespace(name="www")
    return Switch(site, dataclasses.replace(c.cert, path=str(chain_dir(Path(c.cert.path), to))),
                  dataclasses.replace(c.cert, path=str(chain_dir(Path(c.cert.path), 1 - to))))


def test_a_chain_switch_is_published_and_done_when_every_host_serves_the_chain(
        world: SimpleNamespace) -> None:
    c: TwoChains = world.c
    old, new = c.digests
    world.views = [[view("web1", c.cert.sha256, old, c), view("web2", c.cert.sha256, new, c)],
                   [view("web1", c.cert.sha256, new, c), view("web2", c.cert.sha256, new, c)]]
    (result,) = world.deployer(None, [chain_switch(c)])
    assert result.ok and result.message == "verified on every host", result
    [[d]] = world.published
    # the same certificate and leaf, chain 1 named by its digest, every chain in the record
    assert (d.site, d.cert_id, d.sha256, d.chain) == ("www", c.cert.id, c.cert.sha256, new)
    assert d.plain == c.plain and d.plain.chains == (c.plain.chain_pem, c.plain.alt_chains[0])
    assert world.recorded == []


def test_a_host_on_the_right_leaf_with_the_old_chain_has_not_converged(
        world: SimpleNamespace) -> None:
    c: TwoChains = world.c
    old, new = c.digests
    assert not view("web1", c.cert.sha256, old, c).converged
    assert not view("web1", c.cert.sha256, None, c).converged  # a report from before schema 9
    assert view("web1", c.cert.sha256, new, c).converged
    assert not view("web1", "00" * 32, new, c).converged
    # a desired row of before schema 9 names no chain: the leaf decides
    assert HostView("www", "web1", c.cert.sha256, c.cert.sha256, NOW, NOW, "", False).converged
    world.deployer.converge_timeout = 0.3
    world.views = [[view("web1", c.cert.sha256, new, c), view("web2", c.cert.sha256, old, c)]]
    world.lag = [Laggard("www", "web2", c.cert.sha256, c.cert.sha256, NOW, "rolled back",
                         new, old)]
    (result,) = world.deployer(None, [chain_switch(c)])
    # web1 serves the chain: switched; web2 (the old chain) is tracked, then alerted
    assert result.ok and not result.rolled_back
    assert result.message.startswith("verified on web1; web2 not yet verified")
    assert world.recorded == []
    time.sleep(world.deployer.next_track() or 0.0)
    [event] = world.deployer.track()
    assert world.recorded == [event]
    assert event.kind == EventKind.FLEET_NOT_CONVERGED and event.data["host"] == "web2"
    assert f"new chain ({new[:16]})" in event.message and old[:16] in event.message
    assert event.data["desired_chain"] == new and event.data["served_chain"] == old


def test_a_stale_host_does_not_hold_the_wait_but_is_alerted(world: SimpleNamespace) -> None:
    c: TwoChains = world.c
    old, new = c.digests
    world.views = [[view("web1", c.cert.sha256, new, c),
                    view("web3", c.cert.sha256, old, c, stale=True)]]
    world.lag = [Laggard("www", "web3", c.cert.sha256, c.cert.sha256, NOW, "", new, old)]
    t0 = time.monotonic()
    (result,) = world.deployer(None, [chain_switch(c)])
    assert time.monotonic() - t0 < 2.0  # not the 30 s converge_timeout
    assert result.ok  # web1 verified it
    assert "web3 stale (no report for over 5 s; not waited for)" in result.message
    assert [(e.kind, e.data["host"]) for e in world.recorded] == \
        [(EventKind.FLEET_NOT_CONVERGED, "web3")]  # a stale host is alerted at once
    # every host stale: nothing is waited for, and no host verified it: failed at once
    world.views = [[view("web3", c.cert.sha256, old, c, stale=True)]]
    (result,) = world.deployer(None, [chain_switch(c)])
    assert not result.ok and result.message.startswith("no host verified it: web3 stale")


def test_a_leaf_switch_to_a_chain_directory_names_that_chain(world: SimpleNamespace) -> None:
    c: TwoChains = world.c
    site: Any = SimpleNamespace(name="www")
    target = dataclasses.replace(c.cert, path=str(chain_dir(Path(c.cert.path), 1)))
    world.views = [[]]  # no host registered yet: nothing to wait for
    (result,) = world.deployer(None, [Switch(site, target, None)])
    assert result.ok
    assert world.published[0][0].chain == c.digests[1]


def test_unreadable_material_fails_that_site_alone(world: SimpleNamespace) -> None:
    c: TwoChains = world.c
    gone: Any = SimpleNamespace(name="api")
    missing = dataclasses.replace(c.cert, id="api/a/1", site="api", path="/nonexistent/x")
    world.views = [[view("web1", c.cert.sha256, c.digests[1], c)]]
    results = world.deployer(None, [Switch(gone, missing, None), chain_switch(c)])
    assert [(r.site, r.ok) for r in results] == [("api", False), ("www", True)]
    assert results[0].message.startswith("not published: cannot read the material of api/a/1")
    assert [d.site for d in world.published[0]] == ["www"]


def test_alerts_tell_a_chain_switch_from_a_leaf_switch_once_each() -> None:
    seen: set[tuple[str, str, str]] = set()
    leaf = Laggard("www", "web1", "aa" * 32, "bb" * 32, NOW, "")
    chain = Laggard("www", "web1", "aa" * 32, "aa" * 32, NOW, "", "cc" * 32, "dd" * 32)
    events: list[Event] = controller.alerts([leaf, chain], seen)
    assert ["new certificate" in e.message for e in events] == [True, False]
    assert "new chain" in events[1].message
    assert controller.alerts([leaf, chain], seen) == []


# -- sealed records carry every chain ----------------------------------------------------------

def test_the_sealed_record_carries_every_chain_and_old_records_open(tmp_path: Path) -> None:
    c = two_chains(Vault(tmp_path / "v"))
    ring = Keyring(Kek(os.urandom(32)))
    assert sealed.material(Path(c.cert.path) / "chains" / "1") == c.plain  # from any chain dir
    rec = sealed.seal(ring, c.cert.id, "www", c.plain)
    assert sealed.open_record(ring, rec) == c.plain
    one = Plain(c.plain.cert_pem, c.plain.chain_pem, c.plain.key_pem)
    got = sealed.open_record(ring, sealed.seal(ring, c.cert.id, "www", one))
    assert got == one and got.alt_chains == () and got.chains == (one.chain_pem,)
    assert c.digests[0] != c.digests[1]
    assert sealed.chain_digest(b"") == sealed.chain_digest(b"\n")  # no chain: one digest


def test_rotation_keeps_the_chains(db_url: Any, tmp_path: Path) -> None:
    from certfailover.store import db as dbmod

    c = two_chains(Vault(tmp_path / "v"))
    d = dbmod.Database(db_url())
    d.migrate()
    old = Keyring(Kek(os.urandom(32)))
    with d.engine.begin() as conn:
        sealed.seal_many(conn, old, [(c.cert.id, "www", c.plain)])
    new = Keyring(Kek(os.urandom(32)), (old.current,))
    assert sealed.rotate(d.engine, new) == 1
    with d.engine.connect() as conn:
        rec = sealed.load_many(conn, [c.cert.id])[c.cert.id]
    assert rec.kek_id == new.current.id and sealed.open_record(new, rec) == c.plain


# -- the agent finds the desired chain by digest, or adds it --------------------------------

class Unused:
    name = "nginx"

    def apply(self, changes: object) -> None:
        raise AssertionError("no switch here")


def agent(vault: Vault, ring: Keyring) -> Agent:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never used
    return Agent("web1", engine, ring, vault, {"nginx": Unused()},
                 [AgentSite("www", "nginx", (), "www.example.test")],
                 validate=lambda chain, sni: None)


def test_the_agent_adds_a_missing_chain_to_a_certificate_it_holds(tmp_path: Path) -> None:
    c = two_chains(Vault(tmp_path / "controller"))
    ring = Keyring(Kek(os.urandom(32)))
    host = Vault(tmp_path / "web1")
    host.ensure()
    a = agent(host, ring)
    _, ca, serial = c.cert.id.split("/")
    # prefetched from a record of chain 0 only (sealed before it carried the others)
    one = Plain(c.plain.cert_pem, c.plain.chain_pem, c.plain.key_pem)
    assert a._write({c.cert.id: sealed.seal(ring, c.cert.id, "www", one)}) == {}
    base = host.archive_dir("www", ca, serial)
    assert a._target(c.cert.id, c.digests[0]) == base and a._target(c.cert.id, None) == base
    assert a._target(c.cert.id, c.digests[1]) is None
    assert "that chain is neither in its sealed record nor in the vault" in \
        a._no_chain(c.cert.id, c.digests[1])
    # the chain switch's record carries every chain: the missing one is added as chains/1
    assert a._write({c.cert.id: sealed.seal(ring, c.cert.id, "www", c.plain)}) == {}
    assert a._target(c.cert.id, c.digests[1]) == base / "chains" / "1"
    key = base / "chains" / "1" / "privkey.pem"
    assert key.read_bytes() == c.plain.key_pem and key.stat().st_mode & 0o777 == 0o600
    # written again: nothing added twice
    assert a._write({c.cert.id: sealed.seal(ring, c.cert.id, "www", c.plain)}) == {}
    assert sorted(p.name for p in (base / "chains").iterdir()) == ["1"]


def test_a_new_certificate_is_written_with_every_chain(tmp_path: Path) -> None:
    c = two_chains(Vault(tmp_path / "controller"))
    ring = Keyring(Kek(os.urandom(32)))
    host = Vault(tmp_path / "web1")
    host.ensure()
    a = agent(host, ring)
    assert a._write({c.cert.id: sealed.seal(ring, c.cert.id, "www", c.plain)}) == {}
    got = a._target(c.cert.id, c.digests[1])
    assert got is not None and (got / "chain.pem").read_bytes() == c.plain.alt_chains[0]


def test_the_switch_time_is_when_the_last_host_proved_it(world: SimpleNamespace) -> None:
    """A site is switched when EVERY host serves it: its time is the last host's, and each
    poll asks only for the sites not done yet."""
    c: TwoChains = world.c
    old, new = c.digests
    slow = [view("web1", c.cert.sha256, new, c), view("web2", c.cert.sha256, old, c)]
    world.views = [slow] * 20 + [[view("web1", c.cert.sha256, new, c),
                                  view("web2", c.cert.sha256, new, c)]]
    (result,) = world.deployer(None, [chain_switch(c)])
    assert result.ok
    assert result.seconds >= 20 * 0.01, result.seconds  # not web1's first poll
