"""A chain switch on a fleet, on real PostgreSQL and real nginx: one certificate with two chains
(its issuing CA under an old root, and cross-signed by a new root); two agent hosts serve chain
0; the controller publishes chain 1 (the same leaf): web1 serves it (the handshake shows the
cross-sign), reports it and is converged in `fleet status`; web2, which only trusts the old
root, fails to validate it, rolls back to chain 0 and is not converged (alerted)."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import keys
from certfailover.cli.main import main
from certfailover.config import ChallengeConfig, SiteConfig
from certfailover.engine import Switch
from certfailover.events import EventKind
from certfailover.fleet import controller, coord, sealed
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.coord import Deadlines, Leader
from certfailover.fleet.deployer import FleetDeployer
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.model import Cert, CertState, Event
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import LiveChange, make_adapter
from certfailover.store import db as dbmod
from certfailover.store.vault import Vault, chain_dir
from certfailover_lab.pki import make_intermediate, make_leaf, make_root
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import VHost, WebServer, chain_validator, start_nginx

pytestmark = pytest.mark.integration
_n = count(1)
FAST = Deadlines(connect=2, statement=5, lock=2)
SNI = "www.example.test"


class Unused:
    name = "nginx"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        raise AssertionError("staging never applies")


@dataclasses.dataclass
class World:
    url: str
    ring: Keyring
    leader: Leader
    cert: Cert  # in the controller's vault, chain 0
    digests: tuple[str, str]
    cross_sha: str  # the cross-signed issuing CA (chain 1)
    inter_sha: str  # the issuing CA under the old root (chain 0)
    hosts: dict[str, tuple[Agent, WebServer]]
    kek_file: Path
    tmp: Path

    def switch(self, index: int) -> Switch:
        site = SiteConfig("www", (SNI,), ("a",), None, (), ChallengeConfig())
        path = Path(self.cert.path)
        return Switch(site, dataclasses.replace(self.cert, path=str(chain_dir(path, index))),
                      dataclasses.replace(self.cert, path=str(chain_dir(path, 1 - index))))

    def served(self, host: str) -> tuple[str, tuple[str, ...]]:
        chain = served_chain(self.hosts[host][1].endpoint, SNI)
        return leaf_sha256(chain[0]), tuple(leaf_sha256(c) for c in chain[1:])


@pytest.fixture
def world(postgres: PostgresServer, tmp_path: Path) -> Iterator[World]:
    url = postgres.create_database(f"fleet_chain_{next(_n)}")
    dbmod.Database(url).migrate()
    kek = Kek(os.urandom(32))
    kek_file = tmp_path / "kek"
    kek_file.write_text(kek.key.hex())
    kek_file.chmod(0o600)
    ring = Keyring(kek)
    old, new = make_root("Fleet Old Root"), make_root("Fleet New Root")
    inter = make_intermediate(old, "Fleet Issuing CA")
    cross = make_intermediate(new, "Fleet Issuing CA", key=inter.key)
    leaf, key = make_leaf(inter, [SNI])
    serial = format(leaf.serial_number, "x")
    pem = Encoding.PEM
    plain = Plain(leaf.public_bytes(pem), inter.cert.public_bytes(pem), keys.key_pem(key),
                  (cross.cert.public_bytes(pem),))
    vault = Vault(tmp_path / "controller")
    vault.ensure()
    path = vault.save("www", "a", serial, leaf_pem=plain.cert_pem, chain_pem=plain.chain_pem,
                      key_pem=plain.key_pem, alt_chains_pem=plain.alt_chains)
    sha = leaf_sha256(leaf)
    now = datetime.now(UTC)
    cert = Cert(f"www/a/{serial}", "www", "a", serial, now, now, sha, "ec-p256", "CN=x",
                CertState.ACTIVE, now, str(path))
    digests = (sealed.chain_digest(plain.chain_pem), sealed.chain_digest(plain.alt_chains[0]))
    leader = Leader(url, holder="ctl-1", deadlines=FAST)
    assert leader.try_lead()
    # chain 0 published from a record that holds chain 0 only (as a controller seals a
    # certificate when it is stored): the hosts get chain 1 only with the chain switch
    with leader.fenced() as conn:
        assert controller.publish(conn, ring, [controller.Desired(
            "www", cert.id, sha, Plain(plain.cert_pem, plain.chain_pem, plain.key_pem),
            digests[0])], epoch=leader.epoch or 0) == 1
    hosts: dict[str, tuple[Agent, WebServer]] = {}
    # web2 trusts only the old root: chain 1 (to the new root) does not validate there
    trusted = {"web1": [old.cert, new.cert], "web2": [old.cert]}
    try:
        for name, roots in trusted.items():
            hv = Vault(tmp_path / name / "vault")
            staging = Agent(name, coord.make_engine(url, f"stage {name}", FAST), ring, hv,
                            {"nginx": Unused()}, [AgentSite("www", "nginx", (), SNI)],
                            validate=chain_validator(roots))
            staging.start()
            assert staging.stage() == 1
            staging.engine.dispose()
            srv = start_nginx(tmp_path / name / "nginx", [VHost(SNI, (hv.live_path("www"),))])
            hosts[name] = (Agent(name, coord.make_engine(url, f"agent {name}", FAST), ring, hv,
                                 {"nginx": make_adapter(srv.spec)},
                                 [AgentSite("www", "nginx", (srv.endpoint,), SNI)],
                                 validate=chain_validator(roots), verify_timeout=5.0,
                                 settle=0.2), srv)
        yield World(url, ring, leader, cert, digests, leaf_sha256(cross.cert),
                    leaf_sha256(inter.cert), hosts, kek_file, tmp_path)
    finally:
        for agent, srv in hosts.values():
            srv.stop()
            agent.engine.dispose()
        leader.release()


def status(w: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]]]:
    cfg = w.tmp / "controller.toml"
    cfg.write_text(
        f'[store]\ndirectory = "{w.tmp / "controller"}"\ndatabase = "{w.url}"\n\n'
        f'[fleet]\nrole = "controller"\nkek = "file:{w.kek_file}"\n\n'
        '[[ca]]\nname = "a"\ndirectory = "https://127.0.0.1:1/a"\n\n'
        '[[ca]]\nname = "b"\ndirectory = "https://127.0.0.1:1/b"\n\n'
        f'[[site]]\nname = "www"\ndomains = ["{SNI}"]\ncas = ["a", "b"]\n')
    capsys.readouterr()
    code = main(["--config", str(cfg), "--json", "fleet", "status"])
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list), rows
    assert main(["--config", str(cfg), "fleet", "status"]) == code
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["SITE", "HOST", "DESIRED", "CHAIN", "SERVED",
                                            "CHAIN", "STATE", "ERROR"]
    return code, rows


def test_a_chain_switch_is_served_reported_and_rolled_back_where_it_fails(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    old, new = w.digests
    for agent, _ in w.hosts.values():
        agent.start()
        synced = agent.sync()
        assert synced.changed == ("www",) and not synced.failed
    assert {h: w.served(h) for h in w.hosts} == {h: (w.cert.sha256, (w.inter_sha,))
                                                 for h in w.hosts}
    code, rows = status(w, capsys)
    assert code == 0
    assert [(r["host"], r["state"], r["desired_chain"], r["served_chain"]) for r in rows] == \
        [("web1", "ok", old, old), ("web2", "ok", old, old)]

    ids = w.cert.id.split("/")
    for agent, _ in w.hosts.values():  # staged from a record of chain 0 only
        assert not (agent.vault.archive_dir(*ids) / "chains").exists()

    recorded: list[Event] = []
    deployer = FleetDeployer(w.leader, w.ring, Vault(w.tmp / "controller"),
                             converge_timeout=4.0, lag_grace=3.0, record=recorded.extend)
    stop = threading.Event()
    loops = [threading.Thread(target=agent.run, args=(w.url, stop), kwargs={"poll": 30.0})
             for agent, _ in w.hosts.values()]
    for t in loops:
        t.start()
    try:
        time.sleep(0.5)  # the agents listen
        t0 = time.monotonic()
        (result,) = deployer(None, [w.switch(1)])
        took = time.monotonic() - t0
    finally:
        stop.set()
        for t in loops:
            t.join(40)
    # web1 serves chain 1 (the same leaf, the cross-signed CA), proven and reported
    assert w.served("web1") == (w.cert.sha256, (w.cross_sha,))
    web1 = w.hosts["web1"][0]
    assert web1.live_chain("www") == new and web1.verified_chain["www"] == new
    assert web1.vault.live_target("www") == web1.vault.archive_dir(*ids) / "chains" / "1"
    # web2 cannot validate it: rolled back to chain 0, still served, not converged
    assert w.served("web2") == (w.cert.sha256, (w.inter_sha,))
    web2 = w.hosts["web2"][0]
    assert web2.vault.live_target("www") == web2.vault.archive_dir(*ids)
    assert (web2.vault.archive_dir(*ids) / "chains" / "1" / "privkey.pem").is_file()
    # switched (web1 verified it); web2's error for this switch settles it at once
    assert result.ok and not result.rolled_back
    assert result.message.startswith("verified on web1; web2 failed: "), result.message
    assert took < 3.0, took
    views = {v.host: v for v in controller.progress(w.leader.engine)}
    assert views["web1"].converged and views["web1"].served_chain == new
    assert not views["web2"].converged and views["web2"].served == w.cert.sha256
    assert views["web2"].served_chain == old and "does not verify" in views["web2"].error
    assert recorded == []  # alerted converge_timeout after the publish, by track()
    time.sleep(deployer.next_track() or 0.0)
    assert [(e.kind, e.data["host"]) for e in deployer.track()] == \
        [(EventKind.FLEET_NOT_CONVERGED, "web2")]
    assert "new chain" in recorded[0].message
    code, rows = status(w, capsys)
    assert code == 1
    assert [(r["host"], r["state"], r["served_chain"]) for r in rows] == \
        [("web1", "ok", new), ("web2", "error", old)]

    # switched back to chain 0: both hosts serve it again and converge
    stop = threading.Event()
    loops = [threading.Thread(target=agent.run, args=(w.url, stop), kwargs={"poll": 30.0})
             for agent, _ in w.hosts.values()]
    for t in loops:
        t.start()
    try:
        time.sleep(0.5)
        (back,) = deployer(None, [w.switch(0)])
    finally:
        stop.set()
        for t in loops:
            t.join(40)
    assert back.ok, back
    assert {h: w.served(h) for h in w.hosts} == {h: (w.cert.sha256, (w.inter_sha,))
                                                 for h in w.hosts}
    assert status(w, capsys)[0] == 0
