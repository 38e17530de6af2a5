"""A host that lags never holds a mass failover (real PostgreSQL, three agents with their own
nginx, the controller's engine and daemon as `certfailover run` builds them): web3 does not
switch (its agent stopped without going stale, or its nginx down). The controller's tick
returns about `lag_grace` after web1 and web2 verified the sites, not after
`converge_timeout`; the sites are switched there and recorded; the next tick does not decide
them again; and the daemon, woken `converge_timeout` after the publish, raises one
`fleet_not_converged` alert per site for web3, once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from certfailover import config as config_mod
from certfailover import keys
from certfailover.engine import TickReport
from certfailover.fleet import controller
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.coord import Deadlines, make_engine
from certfailover.fleet.deployer import FleetDeployer
from certfailover.model import Action, CertState
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import LiveChange, make_adapter
from certfailover.store.db import fleet_desired
from certfailover.store.vault import Vault
from certfailover.testing import pki
from certfailover.wiring import Runtime, build, build_daemon
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import VHost, WebServer, chain_validator, start_nginx

pytestmark = pytest.mark.integration
SITES = [f"s{i:02d}" for i in range(20)]
HOSTS = ("web1", "web2", "web3")
LAG_GRACE, CONVERGE = 2.0, 8.0
FAST = Deadlines(connect=2, statement=5, lock=2)


class NotYet:
    name = "nginx"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        raise AssertionError("staging never applies")


@dataclass
class Host:
    name: str
    agent: Agent
    server: WebServer
    stop: threading.Event
    loop: threading.Thread

    def served(self, site: str) -> str:
        return leaf_sha256(served_chain(self.server.endpoint, f"{site}.example.test")[0])


@dataclass
class World:
    rt: Runtime
    url: str
    hosts: list[Host]
    shas: dict[tuple[str, str], str]  # (site, ca) -> leaf SHA-256


@pytest.fixture
def world(postgres: PostgresServer, tmp_path: Path, request: pytest.FixtureRequest
          ) -> Iterator[World]:
    url = postgres.create_database(f"fleet_lag_{request.node.callspec.id.replace('-', '_')}")
    roots = {ca: pki.make_root(f"Root {ca}") for ca in ("a", "b")}
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots.values())
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "controller"), "database": url},
        "daemon": {"issue_timeout": 1},
        "fleet": {"role": "controller", "kek": "env:KEK", "converge_timeout": f"{CONVERGE:g}s",
                  "lag_grace": f"{LAG_GRACE:g}s"},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}"} for ca in roots],
        "site": [{"name": s, "domains": [f"{s}.example.test"], "cas": ["a", "b"],
                  "min_standbys": 0, "trust": [str(bundle)]} for s in SITES],
    }
    cfg = config_mod.parse(raw, file="t.toml", base=tmp_path, env={"KEK": os.urandom(32).hex()})
    assert cfg.fleet is not None
    rt = build(cfg)
    port = rt.engine.deploy
    assert isinstance(port, FleetDeployer)
    assert (port.lag_grace, port.converge_timeout) == (LAG_GRACE, CONVERGE)
    shas = {}
    for s in SITES:
        for ca, root in roots.items():
            leaf, key = pki.make_leaf(root, [f"{s}.example.test"],
                                      not_before=datetime.now(UTC) - timedelta(hours=1))
            shas[(s, ca)] = leaf_sha256(leaf)
            rt.engine.store_cert(rt.config.site(s), ca, leaf_pem=pki.pem(leaf), chain_pem=b"",
                                 key_pem=keys.key_pem(key), source=f"test {ca}")
    rt.db.distrust("b", datetime.now(UTC), "test: a first")
    rt.engine.tick()  # every site activated on a and published; no host yet
    rt.db.undistrust("b")
    assert {c.ca for c in rt.db.certs() if c.state is CertState.ACTIVE} == {"a"}

    validate = chain_validator([r.cert for r in roots.values()])
    hosts: list[Host] = []
    try:
        for name in HOSTS:
            vault = Vault(tmp_path / name / "vault")
            staging = Agent(name, make_engine(url, name, FAST), cfg.fleet.keyring, vault,
                            {"nginx": NotYet()},
                            [AgentSite(s, "nginx", (), f"{s}.example.test") for s in SITES],
                            validate=validate)
            staging.start()
            assert staging.stage() == len(SITES)
            staging.engine.dispose()
            srv = start_nginx(tmp_path / name / "nginx",
                              [VHost(f"{s}.example.test", (vault.live_path(s),)) for s in SITES])
            agent = Agent(name, make_engine(url, name, FAST), cfg.fleet.keyring, vault,
                          {"nginx": make_adapter(srv.spec)},
                          [AgentSite(s, "nginx", (srv.endpoint,), f"{s}.example.test")
                           for s in SITES],
                          validate=validate, verify_timeout=3.0, settle=0.2)
            stop = threading.Event()
            agent.start()
            loop = threading.Thread(target=agent.run, args=(url, stop), kwargs={"poll": 30.0})
            hosts.append(Host(name, agent, srv, stop, loop))
            loop.start()
        deadline = time.monotonic() + 30
        while not all(v.converged for v in controller.progress(rt.db.engine)):
            assert time.monotonic() < deadline, controller.progress(rt.db.engine)
            time.sleep(0.1)
        yield World(rt, url, hosts, shas)
    finally:
        for h in hosts:
            h.stop.set()
        for h in hosts:
            h.loop.join(40)
            h.server.stop()
            h.agent.engine.dispose()


def kinds(report: TickReport, kind: str) -> list[str]:
    return sorted(e.site for e in report.events if e.kind == kind)


@pytest.mark.parametrize("fault", ["agent-stopped", "nginx-down"])
def test_a_lagging_host_does_not_hold_a_mass_failover(world: World, fault: str) -> None:
    w, rt = world, world.rt
    web3 = w.hosts[2]
    if fault == "agent-stopped":  # it reported a moment ago: live, not stale (stale_after 2 m)
        web3.stop.set()
        web3.loop.join(40)
    else:  # its agent runs, tries the switch, fails and reports the error
        web3.server.stop()
    ticks: list[tuple[float, TickReport]] = []
    daemon = build_daemon(rt.engine, rt.config, interval=300, scheduled=False)
    daemon.on_tick = lambda report: ticks.append((time.monotonic(), report))
    rt.db.distrust("a", datetime.now(UTC), "in the news")  # every site fails over, one batch
    loop = threading.Thread(target=daemon.run)
    t0 = time.monotonic()
    loop.start()
    try:
        deadline = t0 + CONVERGE + 20
        while len(ticks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.stop_event.set()
        daemon.wake()
        loop.join(40)
    assert len(ticks) >= 2, f"the daemon did not tick again within {CONVERGE + 20:g} s"
    (end1, first), (end2, second) = ticks[:2]
    with rt.db.engine.connect() as conn:
        published = conn.execute(sa.select(sa.func.max(fleet_desired.c.since))).scalar_one()
    verified = max(float(e.data["seconds"]) for e in first.events if e.kind == "failover")
    print(f"{fault}: the switch tick took {end1 - t0:.2f} s, web1 and web2 had verified every "
          f"site {verified:.2f} s after the publish (lag_grace {LAG_GRACE:g} s, "
          f"converge_timeout {CONVERGE:g} s); the next tick came {end2 - end1:.2f} s later")

    # 1. the mass failover: recorded for every site, back about lag_grace after web1 and
    #    web2 verified it, not after converge_timeout
    assert kinds(first, "failover") == SITES, first.events
    assert kinds(first, "deploy_failed") == [] and kinds(first, "rollback") == []
    assert end1 - t0 < CONVERGE - 1.5, end1 - t0
    assert 0 < verified < end1 - t0 - (LAG_GRACE if fault == "agent-stopped" else 0)
    assert {c.site for c in rt.db.certs() if c.state is CertState.ACTIVE and c.ca == "b"} == \
        set(SITES)
    for h in w.hosts[:2]:
        assert {s: h.served(s) for s in SITES} == {s: w.shas[(s, "b")] for s in SITES}
    if fault == "agent-stopped":  # web3 still serves a
        assert web3.served(SITES[0]) == w.shas[(SITES[0], "a")]
    views = {(v.site, v.host): v for v in controller.progress(rt.db.engine)}
    assert not any(views[(s, "web3")].stale or views[(s, "web3")].converged for s in SITES)

    # 2. the next tick: the daemon woke for the tracked switch, converge_timeout after the
    #    publish (not the 300 s interval); nothing is decided again, nothing published again
    assert kinds(second, "failover") == [] and kinds(second, "deploy_failed") == []
    assert all(d.action is Action.KEEP for d in second.decisions), second.decisions
    assert datetime.now(UTC) - published >= timedelta(seconds=CONVERGE)
    assert end2 - end1 < CONVERGE + 3
    with rt.db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.max(fleet_desired.c.since))).scalar_one() == \
            published

    # 3. ... and raised one fleet_not_converged per site, for web3 only, once
    alerts = [e for e in second.events if e.kind == "fleet_not_converged"]
    assert sorted((e.site, e.data["host"]) for e in alerts) == [(s, "web3") for s in SITES]
    if fault == "nginx-down":
        assert all("apply failed" in e.message for e in alerts)
    third = daemon.tick()
    assert kinds(third, "fleet_not_converged") == [] and kinds(third, "failover") == []
    stored = [e for e in rt.db.events(limit=10_000) if e.kind == "fleet_not_converged"]
    assert sorted(e.site for e in stored) == SITES
