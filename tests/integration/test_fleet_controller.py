"""A fleet controller is `certfailover run`'s engine with [fleet] role = "controller": its
switches are published to the agents and are done when every host proves them (real
PostgreSQL, one agent with its own nginx)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from certfailover import config as config_mod
from certfailover import keys
from certfailover.fleet import controller
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.coord import make_engine
from certfailover.fleet.deployer import FleetDeployer
from certfailover.model import CertState
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import LiveChange, make_adapter
from certfailover.store.vault import Vault
from certfailover.wiring import build
from certfailover_lab import pki
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import VHost, chain_validator, start_nginx

pytestmark = pytest.mark.integration
PEM = serialization.Encoding.PEM


class NotYet:
    """The server of a host that is not running yet: staging never applies."""

    name = "nginx"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        raise AssertionError("staging never applies")


def test_the_engine_on_a_fleet_controller_switches_every_host(postgres: PostgresServer,
                                                             tmp_path: Path) -> None:
    url = postgres.create_database("fleet_controller")
    roots = {ca: pki.make_root(f"Root {ca}") for ca in ("a", "b")}
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots.values())
    env = {"KEK": os.urandom(32).hex()}
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "controller"), "database": url},
        "daemon": {"issue_timeout": 1},
        "fleet": {"role": "controller", "kek": "env:KEK", "converge_timeout": "20s"},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}"} for ca in roots],
        "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                  "trust": [str(bundle)]}],
    }
    cfg = config_mod.parse(raw, file="t.toml", base=tmp_path, env=env)
    assert cfg.fleet is not None
    rt = build(cfg)
    assert isinstance(rt.engine.deploy, FleetDeployer)
    shas = {}
    for ca, root in roots.items():
        leaf, key = pki.make_leaf(root, ["www.example.test"],
                                  not_before=datetime.now(UTC) - timedelta(hours=1))
        shas[ca] = leaf_sha256(leaf)
        rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(PEM),
                             chain_pem=b"", key_pem=keys.key_pem(key), source=f"test {ca}")
    report = rt.engine.tick()  # first activation: published; no host serves the site yet
    assert "activated" in [e.kind for e in report.events]
    active = next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE)

    # an agent host joins: stages the desired certificate, starts nginx on it, runs
    vault = Vault(tmp_path / "web1")
    validate = chain_validator([r.cert for r in roots.values()])
    site = AgentSite("www", "nginx", (), "www.example.test")
    staging = Agent("web1", make_engine(url, "web1"), cfg.fleet.keyring, vault,
                    {"nginx": NotYet()}, [site], validate=validate)
    staging.start()
    assert staging.stage() == 1
    staging.engine.dispose()
    srv = start_nginx(tmp_path / "nginx", [VHost("www.example.test", (vault.live_path("www"),))])
    agent = Agent("web1", make_engine(url, "web1"), cfg.fleet.keyring, vault,
                  {"nginx": make_adapter(srv.spec)},
                  [AgentSite("www", "nginx", (srv.endpoint,), "www.example.test")],
                  validate=validate, settle=0.2)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(url, stop), kwargs={"poll": 30.0})
    agent.start()
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while not all(v.converged for v in controller.progress(rt.db.engine)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert leaf_sha256(served_chain(srv.endpoint, "www.example.test")[0]) == shas[active.ca]

        other = "b" if active.ca == "a" else "a"
        rt.db.distrust(active.ca, datetime.now(UTC), "in the news")
        report = rt.engine.tick()  # the switch: published, proven on web1, then recorded
        failover = [e for e in report.events if e.kind == "failover"]
        assert len(failover) == 1, report.events
        assert "verified by handshake" in failover[0].message
        assert leaf_sha256(served_chain(srv.endpoint, "www.example.test")[0]) == shas[other]
        now = next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE)
        assert now.ca == other
        assert [(v.host, v.served) for v in controller.progress(rt.db.engine)] == \
            [("web1", shas[other])]
    finally:
        stop.set()
        loop.join(40)
        srv.stop()
        agent.engine.dispose()
