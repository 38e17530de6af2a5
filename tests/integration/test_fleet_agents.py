"""Fleet agents on real PostgreSQL and real nginx: three hosts (an own vault and nginx each)
serve the same sites; a controller publishes the desired certificate; every host switches in
one reload, proves it by handshake and reports. Faults: an agent killed mid-switch, an agent
cut off from the database, a host that does not converge (alert), every host failing a
switch (the controller fails it fast)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import keys
from certfailover.config import ChallengeConfig, SiteConfig
from certfailover.engine import Switch
from certfailover.errors import StoreError
from certfailover.events import EventKind
from certfailover.fleet import controller, coord, sealed
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.coord import Deadlines, Leader
from certfailover.fleet.deployer import FleetDeployer
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.model import Cert, CertState, Event
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import LiveChange, ServerAdapter, make_adapter
from certfailover.store import db as dbmod
from certfailover.store.vault import Vault
from certfailover_lab.pki import make_leaf
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import LabCA, VHost, WebServer, chain_validator, start_nginx

pytestmark = pytest.mark.integration
_n = count(1)
SITES = ("www", "api", "shop")
FAST = Deadlines(connect=2, statement=5, lock=2)


class Killed(BaseException):
    """The agent process dies (raised from inside a switch)."""


@dataclass
class Counting:
    inner: ServerAdapter
    calls: list[list[str]] = field(default_factory=list)
    die_at_next_apply: bool = False

    @property
    def name(self) -> str:
        return self.inner.name

    def apply(self, changes: Sequence[LiveChange]) -> bool | None:
        if self.die_at_next_apply:  # after the journal and the flip, before the reload
            self.die_at_next_apply = False
            raise Killed
        self.calls.append([c.site for c in changes])
        return self.inner.apply(changes)


class Unused:
    name = "nginx"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        raise AssertionError("staging never applies")


@dataclass
class Host:
    name: str
    vault: Vault
    agent: Agent
    server: WebServer | None = None
    adapter: Counting | None = None

    def served(self, site: str) -> str:
        assert self.server is not None
        return leaf_sha256(served_chain(self.server.endpoint, f"{site}.test")[0])


@dataclass
class Fleet:
    url: str
    ring: Keyring
    cas: dict[str, LabCA]
    certs: dict[tuple[str, str], controller.Desired]
    hosts: list[Host]
    leader: Leader
    engine: sa.Engine

    def publish(self, ca: str, sites: Sequence[str] = SITES) -> int:
        with self.leader.fenced() as conn:
            return controller.publish(conn, self.ring, [self.certs[(s, ca)] for s in sites],
                                      epoch=self.leader.epoch or 0)


def make_cert(ca: LabCA, site: str) -> controller.Desired:
    leaf, key = make_leaf(ca.intermediate, [f"{site}.test"])
    serial = format(leaf.serial_number, "x")
    return controller.Desired(site, f"{site}/{ca.name}/{serial}", leaf_sha256(leaf),
                              Plain(leaf.public_bytes(Encoding.PEM),
                                    ca.intermediate.cert.public_bytes(Encoding.PEM),
                                    keys.key_pem(key)))


def new_agent(f: Fleet | None, name: str, url: str, ring: Keyring, vault: Vault,
              adapters: dict[str, ServerAdapter], cas: dict[str, LabCA],
              server: WebServer | None) -> Agent:
    sites = [AgentSite(s, "nginx", (server.endpoint,) if server else (), f"{s}.test")
             for s in SITES]
    return Agent(name, coord.make_engine(url, f"agent {name}", FAST), ring, vault,
                 adapters or {"nginx": Unused()}, sites,
                 validate=chain_validator([c.root.cert for c in cas.values()]),
                 verify_timeout=5.0, settle=0.2)


@pytest.fixture
def fleet(postgres: PostgresServer, tmp_path: Path) -> Iterator[Fleet]:
    url = postgres.create_database(f"fleet_agents_{next(_n)}")
    dbmod.Database(url).migrate()
    ring = Keyring(Kek(os.urandom(32)))
    cas = {n: LabCA.create(n) for n in ("ca-a", "ca-b")}
    certs = {(s, n): make_cert(ca, s) for s in SITES for n, ca in cas.items()}
    leader = Leader(url, holder="ctl-1", deadlines=FAST)
    assert leader.try_lead()
    f = Fleet(url, ring, cas, certs, [], leader, coord.make_engine(url, "ctl-1", FAST))
    assert f.publish("ca-a") == 3
    for i in range(3):
        name = f"web{i + 1}"
        vault = Vault(tmp_path / name / "vault")
        staging = new_agent(f, name, url, ring, vault, {}, cas, None)
        staging.start()
        assert staging.stage() == 3  # material unsealed before nginx can start on it
        staging.engine.dispose()
        srv = start_nginx(tmp_path / name / "nginx",
                          [VHost(f"{s}.test", (vault.live_path(s),)) for s in SITES])
        adapter = Counting(make_adapter(srv.spec))
        agent = new_agent(f, name, url, ring, vault, {"nginx": adapter}, cas, srv)
        f.hosts.append(Host(name, vault, agent, srv, adapter))
    try:
        yield f
    finally:
        for h in f.hosts:
            if h.server:
                h.server.stop()
            h.agent.engine.dispose()
        leader.release()
        f.engine.dispose()


def sync_all(f: Fleet) -> None:
    for h in f.hosts:
        h.agent.start()
        h.agent.sync()


def test_every_host_switches_in_one_reload_and_reports(fleet: Fleet) -> None:
    f = fleet
    sync_all(f)  # first pass: each host proves what it serves (ca-a) and reports it
    views = controller.progress(f.engine)
    assert len(views) == 9 and all(v.converged and not v.stale and v.error == "" for v in views)
    for h in f.hosts:
        assert h.adapter is not None and h.adapter.calls == [sorted(SITES)]
        h.adapter.calls.clear()
    # the switch: the agents learn it by NOTIFY (one notice for the three sites)
    stop = threading.Event()
    threads = [threading.Thread(target=h.agent.run, args=(f.url, stop),
                                kwargs={"poll": 30.0}) for h in f.hosts]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)  # the agents are listening
        t0 = time.monotonic()
        assert f.publish("ca-b") == 3
        want = {s: f.certs[(s, "ca-b")].sha256 for s in SITES}
        while not all(v.converged for v in controller.progress(f.engine)):
            assert time.monotonic() - t0 < 20, controller.progress(f.engine)
            time.sleep(0.05)
        took = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(40)
    assert took < 10  # a notice, not the 30 s poll, started the switch
    for h in f.hosts:
        assert {s: h.served(s) for s in SITES} == want  # proven here too, by handshake
        assert h.adapter is not None and h.adapter.calls == [sorted(SITES)]  # one reload
    assert controller.laggards(f.engine, after=0) == []
    assert f.publish("ca-b") == 0  # publishing the same certificates again changes nothing


def test_an_agent_killed_mid_switch_restarts_and_converges(fleet: Fleet) -> None:
    f = fleet
    sync_all(f)
    f.publish("ca-b")
    h = f.hosts[0]
    assert h.adapter is not None
    h.adapter.die_at_next_apply = True
    with pytest.raises(Killed):  # journal written and live links flipped, nginx not reloaded
        h.agent.sync()
    assert {s: h.served(s) for s in SITES} == {s: f.certs[(s, "ca-a")].sha256 for s in SITES}
    # the agent restarts (a new process: a new Agent over the same vault and server)
    again = new_agent(f, h.name, f.url, f.ring, h.vault, {"nginx": h.adapter}, f.cas, h.server)
    notes = again.start()
    assert len(notes) == 3 and all("undone" in n for n in notes)
    result = again.sync()
    assert sorted(result.changed) == sorted(SITES) and not result.failed
    assert {s: h.served(s) for s in SITES} == {s: f.certs[(s, "ca-b")].sha256 for s in SITES}
    again.engine.dispose()
    for other in f.hosts[1:]:
        other.agent.sync()
    assert all(v.converged for v in controller.progress(f.engine))


def test_an_agent_cut_off_keeps_serving_shows_stale_and_raises_an_alert(fleet: Fleet) -> None:
    f = fleet
    sync_all(f)
    cut = f.hosts[2]
    real = cut.agent.engine
    cut.agent.engine = coord.make_engine(  # its network path to the database is gone
        "postgresql+psycopg://certfailover@127.0.0.1:1/none", "cut", FAST)
    f.publish("ca-b")
    with pytest.raises(StoreError, match="cannot read the database"):
        cut.agent.sync()
    assert cut.agent.stale_since is not None
    time.sleep(1.2)
    for h in f.hosts[:2]:
        h.agent.sync()
    # it keeps serving its last verified certificate, and is shown stale
    assert {s: cut.served(s) for s in SITES} == {s: f.certs[(s, "ca-a")].sha256 for s in SITES}
    views = {(v.site, v.host): v for v in controller.progress(f.engine, stale_after=1.0)}
    assert all(views[(s, "web3")].stale and not views[(s, "web3")].converged for s in SITES)
    assert all(views[(s, h)].converged and not views[(s, h)].stale
               for s in SITES for h in ("web1", "web2"))
    lag = controller.laggards(f.engine, after=1.0)
    assert {(x.site, x.host) for x in lag} == {(s, "web3") for s in SITES}
    seen: set[tuple[str, str, str]] = set()
    events = controller.alerts(lag, seen)
    assert [e.kind for e in events] == [EventKind.FLEET_NOT_CONVERGED] * 3
    assert "web3" in events[0].message and controller.alerts(lag, seen) == []  # once
    # the path comes back: it converges
    cut.agent.engine.dispose()
    cut.agent.engine = real
    cut.agent.sync()
    assert cut.agent.stale_since is None
    assert controller.laggards(f.engine, after=0) == []


def controller_switches(f: Fleet, vault: Vault, ca: str) -> list[Switch]:
    out = []
    for s in SITES:
        d = f.certs[(s, ca)]
        _, ca_name, serial = d.cert_id.split("/")
        path = vault.save(s, ca_name, serial, leaf_pem=d.plain.cert_pem,
                          chain_pem=d.plain.chain_pem, key_pem=d.plain.key_pem)
        now = datetime.now(UTC)
        cert = Cert(d.cert_id, s, ca_name, serial, now, now, d.sha256, "ec-p256", "CN=x",
                    CertState.STANDBY, now, str(path))
        site = SiteConfig(s, (f"{s}.test",), ("ca-a", "ca-b"), None, (), ChallengeConfig())
        out.append(Switch(site, cert, None))
    return out


def test_the_controllers_switch_is_done_when_every_host_reports_it(
        fleet: Fleet, tmp_path: Path) -> None:
    f = fleet
    sync_all(f)
    vault = Vault(tmp_path / "controller")
    vault.ensure()
    recorded: list[Event] = []
    deployer = FleetDeployer(f.leader, f.ring, vault, converge_timeout=15.0,
                             record=recorded.extend)
    stops = [threading.Event() for _ in f.hosts]
    threads = [threading.Thread(target=h.agent.run, args=(f.url, stop), kwargs={"poll": 30.0})
               for h, stop in zip(f.hosts, stops, strict=True)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        results = deployer(None, controller_switches(f, vault, "ca-b"))
        assert [(r.site, r.ok) for r in results] == [(s, True) for s in SITES], results
        assert all(0 < r.seconds < 10 for r in results) and recorded == []
        for h in f.hosts:
            assert {s: h.served(s) for s in SITES} == {s: f.certs[(s, "ca-b")].sha256
                                                       for s in SITES}
        stops[2].set()  # web3's agent stops (not stale yet): it will not converge
        threads[2].join(10)
        deployer.converge_timeout, deployer.lag_grace = 4.0, 1.0
        t0 = time.monotonic()
        results = deployer(None, controller_switches(f, vault, "ca-a"))
        took = time.monotonic() - t0
        # switched (web1 and web2 verified it) once web3 had lag_grace, not converge_timeout
        assert took < 3.5, took
        assert [(r.site, r.ok) for r in results] == [(s, True) for s in SITES], results
        assert all(r.message.startswith("verified on web1, web2; web3 not yet verified")
                   for r in results)
        assert recorded == []  # tracked: alerted converge_timeout after the publish
        assert {s: f.hosts[0].served(s) for s in SITES} == {s: f.certs[(s, "ca-a")].sha256
                                                            for s in SITES}
        assert deployer.track() == []
        time.sleep(deployer.next_track() or 0.0)
        events = deployer.track()
        assert sorted((e.site, e.kind, e.data["host"]) for e in events) == \
            sorted((s, EventKind.FLEET_NOT_CONVERGED, "web3") for s in SITES)
        assert recorded == events and deployer.track() == []  # once
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(40)


def test_a_switch_every_host_fails_fails_fast(fleet: Fleet, tmp_path: Path) -> None:
    """Every host's nginx is down: each agent tries the switch, rolls it back and reports the
    error; the controller's switch fails as soon as the last error is in (not after the 30 s
    converge_timeout), naming each host's error, and the hosts are left to the tracker."""
    f = fleet
    sync_all(f)
    for h in f.hosts:
        assert h.server is not None
        h.server.stop()
    vault = Vault(tmp_path / "controller")
    vault.ensure()
    recorded: list[Event] = []
    deployer = FleetDeployer(f.leader, f.ring, vault, converge_timeout=30.0, lag_grace=2.0,
                             record=recorded.extend)
    stop = threading.Event()
    threads = [threading.Thread(target=h.agent.run, args=(f.url, stop), kwargs={"poll": 30.0})
               for h in f.hosts]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        results = deployer(None, controller_switches(f, vault, "ca-b"))
        took = time.monotonic() - t0
        returned = datetime.now(UTC)
        last_error = max(v.reported for v in controller.progress(f.engine))
    finally:
        stop.set()
        for t in threads:
            t.join(40)
    print(f"every host failed: the switch returned in {took:.2f} s, "
          f"{(returned - last_error).total_seconds():.2f} s after the last error was reported")
    assert (returned - last_error).total_seconds() < 1.5
    assert took < 15, took
    assert not any(r.ok or r.rolled_back for r in results), results
    for r in results:
        assert r.message.startswith("no host verified it: web1 failed: "), r.message
        assert all(f"web{i} failed: apply failed: server 'nginx-" in r.message
                   for i in (1, 2, 3))
    assert recorded == []  # alerted by track() converge_timeout after the publish
    assert deployer.next_track() is not None
    views = controller.progress(f.engine)
    assert all(controller.failed_attempt(v) and not v.converged for v in views)


def test_laggards_of_recent_switches_and_of_named_sites(fleet: Fleet) -> None:
    """The tracker's one query: switches published after a time, or of named sites."""
    f = fleet
    sync_all(f)
    f.publish("ca-b")  # no host has switched yet: each lags
    assert len(controller.laggards(f.engine, after=0)) == 9
    later, earlier = (datetime.now(UTC) + timedelta(hours=h) for h in (1, -1))
    assert controller.laggards(f.engine, after=0, since_after=later) == []
    assert {(x.site, x.host) for x in controller.laggards(
        f.engine, after=0, since_after=later, sites=["www"])} == {("www", h.name)
                                                                 for h in f.hosts}
    assert len(controller.laggards(f.engine, after=0, since_after=earlier)) == 9
    assert controller.laggards(f.engine, after=3600, since_after=earlier, sites=["www"]) == []
    views = controller.progress(f.engine, sites=["www"])
    assert {(v.desired_cert, v.since is not None) for v in views} == \
        {(f.certs[("www", "ca-b")].cert_id, True)}
    assert not any(controller.failed_attempt(v) for v in views)


class SlowVault(Vault):
    def save(self, site: str, ca: str, serial: str, *, leaf_pem: bytes, chain_pem: bytes,
             key_pem: bytes, alt_chains_pem: Sequence[bytes] = ()) -> Path:
        time.sleep(0.15)  # a slow disk
        return super().save(site, ca, serial, leaf_pem=leaf_pem, chain_pem=chain_pem,
                            key_pem=key_pem, alt_chains_pem=alt_chains_pem)


def test_writing_the_vault_holds_no_transaction_open(postgres: PostgresServer,
                                                     tmp_path: Path) -> None:
    """A slow vault write never makes the server end the agent's session (idle in transaction
    is bounded by the deadlines: here 1.5 s, the writes take ~3 s)."""
    url = postgres.create_database(f"fleet_slow_{next(_n)}")
    dbmod.Database(url).migrate()
    ring = Keyring(Kek(os.urandom(32)))
    ca = LabCA.create("ca-a")
    sites = [f"s{i}" for i in range(20)]
    leader = Leader(url, holder="ctl", deadlines=FAST)
    assert leader.try_lead()
    with leader.fenced() as conn:
        controller.publish(conn, ring, [make_cert(ca, s) for s in sites])
    leader.release()
    tight = Deadlines(connect=2, statement=0.5, lock=0.5)
    agent = Agent("web1", coord.make_engine(url, "web1", tight), ring,
                  SlowVault(tmp_path / "vault"), {"nginx": Unused()},
                  [AgentSite(s, "nginx", (), f"{s}.test") for s in sites],
                  validate=chain_validator([ca.root.cert]), writers=1)
    try:
        agent.start()
        assert agent.stage() == 20
        assert all(agent.live_sha(s) is not None for s in sites)
    finally:
        agent.engine.dispose()


def test_thousands_of_sites_in_parts(postgres: PostgresServer, tmp_path: Path) -> None:
    """Multi-row statements are split (PostgreSQL takes at most 65,535 parameters in one):
    12,000 sites published, registered and read back by an agent."""
    url = postgres.create_database(f"fleet_many_{next(_n)}")
    dbmod.Database(url).migrate()
    ring = Keyring(Kek(os.urandom(32)))
    plain = Plain(b"c", b"", b"k")
    sites = [f"s{i:05d}" for i in range(12000)]
    leader = Leader(url, holder="ctl", deadlines=FAST)
    assert leader.try_lead()
    with leader.fenced() as conn:
        assert controller.publish(conn, ring, [controller.Desired(
            s, f"{s}/a/1", f"{i:064x}", plain) for i, s in enumerate(sites)]) == 12000
    leader.release()
    agent = Agent("web1", coord.make_engine(url, "web1", FAST), ring, Vault(tmp_path / "v"),
                  {"nginx": Unused()}, [AgentSite(s, "nginx", (), f"{s}.test") for s in sites],
                  validate=lambda chain, sni: None)
    try:
        with agent.engine.connect() as conn:
            assert len(agent._desired(conn)) == 12000
        agent.start()  # registers 12,000 rows
        assert agent._report(sites[:11000], {}) == 1 + 11
        views = controller.progress(agent.engine)
        assert len(views) == 12000 and sum(v.converged for v in views) == 0
    finally:
        agent.engine.dispose()


# -- standbys staged ahead of time, faults of one record, backoff -------------------------------

def seal_standbys(f: Fleet, ca: str, sites: Sequence[str] = SITES) -> None:
    """What a controller does when it stores a certificate: seal it (not desired yet)."""
    with f.engine.begin() as conn:
        sealed.seal_many(conn, f.ring, [(f.certs[(s, ca)].cert_id, s, f.certs[(s, ca)].plain)
                                        for s in sites])


def archive(h: Host, cert_id: str) -> Path:
    site, ca, serial = cert_id.split("/")
    return h.vault.archive_dir(site, ca, serial)


def test_standbys_are_prefetched_and_a_switch_to_them_unseals_nothing(fleet: Fleet) -> None:
    f = fleet
    h = f.hosts[0]
    h.agent.start()
    h.agent.prefetch_batch = 2  # bounded work per pass
    first = h.agent.sync()
    assert first.checked == 3 and not first.failed and first.prefetched == 0  # nothing sealed
    seal_standbys(f, "ca-b")
    assert not any(archive(h, f.certs[(s, "ca-b")].cert_id).exists() for s in SITES)
    second = h.agent.sync()
    assert second.changed == () and second.prefetched == 2 and not second.prefetch_failed
    third = h.agent.sync()
    assert third.prefetched == 1 and h.agent.sync().prefetched == 0  # all staged
    for s in SITES:
        d = archive(h, f.certs[(s, "ca-b")].cert_id)
        assert (d / "privkey.pem").stat().st_mode & 0o777 == 0o600
        assert h.agent.live_sha(s) == f.certs[(s, "ca-a")].sha256  # staged, not switched
    # a notice waiting: the prefetch yields to the switch
    seal_standbys(f, "ca-a", ["www"])  # (re-sealed: already in the vault, nothing to do)
    h.agent.interrupted = lambda: True
    assert h.agent.prefetch(10)[0] == 0
    h.agent.interrupted = lambda: False
    # the switch to the prefetched standbys needs no unseal: this host's KEK is gone now
    h.agent.ring = Keyring(Kek(os.urandom(32)))
    assert h.adapter is not None
    h.adapter.calls.clear()
    f.publish("ca-b")
    result = h.agent.sync()
    assert sorted(result.changed) == sorted(SITES) and not result.failed
    assert h.adapter.calls == [sorted(SITES)]  # one reload
    assert {s: h.served(s) for s in SITES} == {s: f.certs[(s, "ca-b")].sha256 for s in SITES}


def test_a_prefetch_slice_stops_when_a_notice_waits(fleet: Fleet) -> None:
    f = fleet
    h = f.hosts[0]
    seal_standbys(f, "ca-b")
    h.agent.interrupted = lambda: True  # a notice arrived while the first slice was written
    written, failed, _ = h.agent.prefetch(10, slice_size=1)
    assert (written, failed) == (1, {})
    h.agent.interrupted = lambda: False
    assert h.agent.prefetch(10, slice_size=1)[0] == 2


def test_a_bad_record_fails_its_site_alone(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tampered record, a record sealed under a KEK this host lacks, a missing record and a
    disk that refuses the write: each fails its own site, named with the certificate id and
    the cause, and the other sites switch."""
    f = fleet
    sync_all(f)
    h = f.hosts[0]
    cid = {s: f.certs[(s, "ca-b")].cert_id for s in SITES}
    f.publish("ca-b")
    with f.engine.begin() as conn:  # api: tampered; shop: no record at all
        conn.execute(sa.update(dbmod.fleet_sealed).where(
            dbmod.fleet_sealed.c.cert_id == cid["api"]).values(ciphertext=b"\0" * 64))
        conn.execute(sa.delete(dbmod.fleet_sealed).where(
            dbmod.fleet_sealed.c.cert_id == cid["shop"]))
    r = h.agent.sync()
    assert r.changed == ("www",) and sorted(r.failed) == ["api", "shop"]
    assert cid["api"] in r.failed["api"] and "does not authenticate" in r.failed["api"]
    assert cid["shop"] in r.failed["shop"] and "no sealed material" in r.failed["shop"]
    errors = {v.site: v.error for v in controller.progress(f.engine) if v.host == h.name}
    assert cid["api"] in errors["api"] and "backoff" in errors["api"] and errors["www"] == ""
    # served: www switched, api and shop keep their verified certificate
    assert {s: h.served(s) for s in SITES} == {"www": f.certs[("www", "ca-b")].sha256,
                                              "api": f.certs[("api", "ca-a")].sha256,
                                              "shop": f.certs[("shop", "ca-a")].sha256}
    # web2: api sealed under a KEK it does not have; shop's write fails (disk full)
    h2 = f.hosts[1]
    with f.engine.begin() as conn:
        other = Keyring(Kek(os.urandom(32)))
        sealed.seal_many(conn, other, [(cid["api"], "api", f.certs[("api", "ca-b")].plain)])
        sealed.seal_many(conn, f.ring, [(cid["shop"], "shop", f.certs[("shop", "ca-b")].plain)])
    real_save = h2.vault.save

    def full(site: str, ca: str, serial: str, *, leaf_pem: bytes, chain_pem: bytes,
             key_pem: bytes) -> Path:
        if site == "shop":
            raise OSError(28, "No space left on device")
        return real_save(site, ca, serial, leaf_pem=leaf_pem, chain_pem=chain_pem,
                         key_pem=key_pem)

    monkeypatch.setattr(h2.vault, "save", full)
    r2 = h2.agent.sync()
    assert r2.changed == ("www",) and sorted(r2.failed) == ["api", "shop"]
    assert cid["api"] in r2.failed["api"] and "which this host does not have" in r2.failed["api"]
    assert cid["shop"] in r2.failed["shop"] and "No space left" in r2.failed["shop"]
    assert h2.adapter is not None and h2.adapter.calls[-1] == ["www"]


def test_a_failed_site_backs_off_until_a_new_certificate_is_desired(fleet: Fleet) -> None:
    f = fleet
    sync_all(f)
    h = f.hosts[0]
    assert h.adapter is not None
    now = [1000.0]
    h.agent.clock = lambda: now[0]
    h.agent.verify_timeout = 1.0
    good = f.certs[("api", "ca-b")]
    wrong = controller.Desired("api", good.cert_id, "0" * 64, good.plain)  # never verifies
    with f.leader.fenced() as conn:
        controller.publish(conn, f.ring, [wrong], epoch=f.leader.epoch or 0)
    h.adapter.calls.clear()
    r = h.agent.sync()
    assert list(r.failed) == ["api"] and "rolled back" in r.failed["api"]
    assert "attempt 1" in r.failed["api"] and "next try in 5 s" in r.failed["api"]
    assert h.agent.next_retry() == 5.0
    # the next passes (notices, polls) do not activate it again before the delay
    for _ in range(3):
        r = h.agent.sync()
        assert r.failed == {} and "attempt 1" in r.deferred["api"]
    assert h.adapter.calls == [["api"], ["api"]]  # the one try and its rollback
    now[0] += 5.1
    r = h.agent.sync()
    assert "attempt 2" in r.failed["api"] and "next try in 10 s" in r.failed["api"]
    errors = {v.site: v.error for v in controller.progress(f.engine) if v.host == h.name}
    assert "backoff: attempt 2" in errors["api"]
    assert h.agent.sync().deferred.keys() == {"api"}
    # a NEW desired certificate for the site is tried at once
    fresh = make_cert(f.cas["ca-b"], "api")
    with f.leader.fenced() as conn:
        controller.publish(conn, f.ring, [fresh], epoch=f.leader.epoch or 0)
    r = h.agent.sync()
    assert r.changed == ("api",) and r.deferred == {} and h.agent.next_retry() is None
    assert h.served("api") == fresh.sha256


def test_a_notice_during_a_prefetch_is_switched_at_once(fleet: Fleet,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The running agent is prefetching 60 standbys on a slow disk (~6 s); a switch published
    meanwhile is served after at most one slice (5 records), then the prefetch goes on."""
    f = fleet
    h = f.hosts[0]
    h.agent.start()
    h.agent.sync()
    spare = [make_cert(f.cas["ca-a"], s) for s in SITES for _ in range(20)]
    with f.engine.begin() as conn:
        sealed.seal_many(conn, f.ring, [(d.cert_id, d.site, d.plain) for d in spare])
    real_save = h.vault.save

    def slow(site: str, ca: str, serial: str, *, leaf_pem: bytes, chain_pem: bytes,
             key_pem: bytes) -> Path:
        time.sleep(0.1)
        return real_save(site, ca, serial, leaf_pem=leaf_pem, chain_pem=chain_pem,
                         key_pem=key_pem)

    monkeypatch.setattr(h.vault, "save", slow)
    h.agent.writers, h.agent.prefetch_slice = 1, 5
    stop = threading.Event()
    t = threading.Thread(target=h.agent.run, args=(f.url, stop), kwargs={"poll": 30.0})
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not any(archive(h, d.cert_id).exists() for d in spare):  # prefetching now
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        f.publish("ca-b")
        want = {s: f.certs[(s, "ca-b")].sha256 for s in SITES}
        while {s: h.agent.verified.get(s) for s in SITES} != want:
            assert time.monotonic() - t0 < 10
            time.sleep(0.02)
        took = time.monotonic() - t0
        left = sum(not archive(h, d.cert_id).exists() for d in spare)
        deadline = time.monotonic() + 20
        while any(not archive(h, d.cert_id).exists() for d in spare):  # then it goes on
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(40)
    assert took < 3.0 and left > 20  # the switch did not wait for the 60 records (6 s)
    assert {s: h.served(s) for s in SITES} == want


def test_stage_links_what_it_can_and_names_the_rest(fleet: Fleet, tmp_path: Path) -> None:
    f = fleet
    cid = f.certs[("api", "ca-a")].cert_id
    with f.engine.begin() as conn:
        conn.execute(sa.delete(dbmod.fleet_sealed).where(dbmod.fleet_sealed.c.cert_id == cid))
    vault = Vault(tmp_path / "web9" / "vault")
    agent = new_agent(f, "web9", f.url, f.ring, vault, {}, f.cas, None)
    try:
        agent.start()
        with pytest.raises(StoreError, match=f"2 site\\(s\\) staged, 1 not: api: certificate "
                                             f"{cid}: no sealed material"):
            agent.stage()
        assert vault.live_target("api") is None
        assert {s: agent.live_sha(s) for s in ("www", "shop")} == \
            {s: f.certs[(s, "ca-a")].sha256 for s in ("www", "shop")}
    finally:
        agent.engine.dispose()


def test_a_stale_host_does_not_hold_the_controllers_wait(fleet: Fleet, tmp_path: Path) -> None:
    """A host cut off for longer than stale_after is not waited for (the switch returns as soon
    as the others verified it, not after converge_timeout or lag_grace); it is alerted at once
    and named stale."""
    f = fleet
    sync_all(f)
    vault = Vault(tmp_path / "controller")
    vault.ensure()
    recorded: list[Event] = []
    deployer = FleetDeployer(f.leader, f.ring, vault, converge_timeout=60.0,
                             record=recorded.extend, stale_after=3.0)
    stop = threading.Event()
    # web1 and web2 run (a heartbeat every second); web3 is cut off: it does not report
    threads = [threading.Thread(target=h.agent.run, args=(f.url, stop), kwargs={"poll": 1.0})
               for h in f.hosts[:2]]
    for t in threads:
        t.start()
    try:
        time.sleep(3.5)  # web3's last report is now older than stale_after
        assert {v.host for v in controller.progress(f.engine, stale_after=3.0) if v.stale} == \
            {"web3"}
        t0 = time.monotonic()
        results = deployer(None, controller_switches(f, vault, "ca-b"))
        took = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(40)
    assert took < 15, took  # not the 60 s converge_timeout, nor the 10 s lag_grace
    assert all(r.ok for r in results)  # web1 and web2 verified it
    assert all(r.message.startswith("verified on web1, web2; web3 stale (no report for over "
                                    "3 s; not waited for)") for r in results)
    for h in f.hosts[:2]:
        assert {s: h.served(s) for s in SITES} == {s: f.certs[(s, "ca-b")].sha256
                                                   for s in SITES}
    assert sorted((e.site, e.kind, e.data["host"]) for e in recorded) == \
        sorted((s, EventKind.FLEET_NOT_CONVERGED, "web3") for s in SITES)
