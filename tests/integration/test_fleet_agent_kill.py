"""An agent killed mid-switch, for real: `certfailover agent` runs as its own process (the CLI,
a config like docs/fleet.md's agent example) against the lab's PostgreSQL and an nginx serving
SITES sites. A controller publishes a switch of every site; the test SIGKILLs the agent while
its switch journal is on disk (once as soon as the journal appears, i.e. mid-flip or before
nginx reloaded; once after nginx serves the new leaf: mid-proof), starts it
again, and requires convergence: every site reported verified with the desired leaf in
fleet_served, every site's TLS handshake at nginx showing it, every live link pointing at a
complete certificate, every key file 0600."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import deploy, keys
from certfailover.fleet import controller, coord
from certfailover.fleet.coord import Deadlines, Leader
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.probe import ProbeError, leaf_sha256, served_chain
from certfailover.store import db as dbmod
from certfailover.store.vault import Vault
from certfailover_lab.pki import make_leaf, write_bundle
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import LabCA, VHost, WebServer, start_nginx

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "certfailover.cli.main"]
SITES = [f"s{i:03d}" for i in range(300)]
FAST = Deadlines(connect=2, statement=10, lock=5)


@dataclass
class Rig:
    url: str
    tmp: Path
    cfg: Path
    vault: Vault
    ring: Keyring
    certs: dict[tuple[str, str], controller.Desired]
    leader: Leader
    engine: sa.Engine
    nginx: WebServer | None = None

    def publish(self, ca: str) -> int:
        with self.leader.fenced() as conn:
            return controller.publish(conn, self.ring, [self.certs[(s, ca)] for s in SITES],
                                      epoch=self.leader.epoch or 0)

    def served_rows(self) -> dict[str, tuple[str | None, bool, str]]:
        with self.engine.connect() as conn:
            return {r.site: (r.sha256, r.verified_at is not None, r.error) for r in conn.execute(
                sa.select(dbmod.fleet_served).where(dbmod.fleet_served.c.host == "web1"))}

    def handshake(self, site: str) -> str | None:
        assert self.nginx is not None
        try:
            return leaf_sha256(served_chain(self.nginx.endpoint, f"{site}.test")[0])
        except (ProbeError, OSError):
            return None


def make_cert(ca: LabCA, site: str) -> controller.Desired:
    leaf, key = make_leaf(ca.intermediate, [f"{site}.test"])
    return controller.Desired(site, f"{site}/{ca.name}/{format(leaf.serial_number, 'x')}",
                              leaf_sha256(leaf),
                              Plain(leaf.public_bytes(Encoding.PEM),
                                    ca.intermediate.cert.public_bytes(Encoding.PEM),
                                    keys.key_pem(key)))


def agent_config(tmp: Path, url: str, bundle: Path, nginx: WebServer | None) -> str:
    """docs/fleet.md's agent example, for SITES sites on the lab's nginx."""
    test = json.dumps(nginx.spec["test"]) if nginx else '["true"]'
    reload = json.dumps(nginx.spec["reload"]) if nginx else '["true"]'
    endpoint = nginx.endpoint if nginx else "127.0.0.1:1"
    head = f"""
[store]
directory = "{tmp / 'store'}"
database = "{url}"

[fleet]
role = "agent"
host = "web1"
kek = "file:{tmp / 'kek'}"
poll = "30s"

[[ca]]
name = "ca-a"
directory = "https://ca-a.test/directory"

[[ca]]
name = "ca-b"
directory = "https://ca-b.test/directory"

[[server]]
name = "nginx"
type = "nginx"
test = {test}
reload = {reload}
"""
    sites = "".join(f"""
[[site]]
name = "{s}"
domains = ["{s}.test"]
cas = ["ca-a", "ca-b"]
server = "nginx"
endpoints = ["{endpoint}"]
trust = ["{bundle}"]
""" for s in SITES)
    return head + sites


@pytest.fixture
def rig(postgres: PostgresServer, tmp_path: Path) -> Iterator[Rig]:
    url = postgres.create_database("fleet_agent_kill")
    dbmod.Database(url).migrate()
    raw = os.urandom(32)
    (tmp_path / "kek").write_text(raw.hex() + "\n")
    (tmp_path / "kek").chmod(0o600)
    ring = Keyring(Kek(raw))
    cas = {n: LabCA.create(n) for n in ("ca-a", "ca-b")}
    bundle = write_bundle(tmp_path / "roots.pem", *(c.root for c in cas.values()))
    certs = {(s, n): make_cert(ca, s) for s in SITES for n, ca in cas.items()}
    leader = Leader(url, holder="controller", deadlines=FAST)
    assert leader.try_lead()
    cfg = tmp_path / "agent.toml"
    r = Rig(url, tmp_path, cfg, Vault(tmp_path / "store"), ring, certs, leader,
            coord.make_engine(url, "test", FAST))
    try:
        assert r.publish("ca-a") == len(SITES)
        # staged before nginx can start on the certificates (docs/fleet.md, Deploying 4.)
        cfg.write_text(agent_config(tmp_path, url, bundle, None))
        out = cli("agent", "--stage", cfg=cfg)
        assert out.returncode == 0, out.stderr
        r.nginx = start_nginx(tmp_path / "nginx",
                              [VHost(f"{s}.test", (r.vault.live_path(s),)) for s in SITES])
        cfg.write_text(agent_config(tmp_path, url, bundle, r.nginx))
        yield r
    finally:
        if r.nginx is not None:
            r.nginx.stop()
        leader.release()
        r.engine.dispose()


def cli(*args: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--config", str(cfg), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def start_agent(r: Rig, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = r.tmp / f"agent-{n}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "--config", str(r.cfg), "-v", "agent"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def until(cond: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path,
          timeout: float = 40.0, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the agent exited ({proc.returncode}):\n{log.read_text()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; agent log:\n"
                                 f"{log.read_text()[-4000:]}")
        time.sleep(step)


def reported(r: Rig, ca: str) -> Callable[[], bool]:
    def check() -> bool:
        rows = r.served_rows()
        return len(rows) == len(SITES) and all(
            rows[s] == (r.certs[(s, ca)].sha256, True, "") for s in SITES)
    return check


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def assert_converged(r: Rig, ca: str) -> None:
    """Served, reported and on disk: the desired leaf everywhere, no site without a live link,
    every key 0600."""
    want = {s: r.certs[(s, ca)].sha256 for s in SITES}
    assert reported(r, ca)()
    got = {s: r.handshake(s) for s in SITES}
    assert {s for s in SITES if got[s] != want[s]} == set()
    for s in SITES:
        target = r.vault.live_target(s)
        assert target is not None, f"{s}: no live link"
        assert leaf_sha256(r.vault.load(Path(target)).leaf) == want[s]
    keys_ = list((r.vault.root / "archive").glob("*/*/*/privkey.pem"))
    assert len(keys_) == 2 * len(SITES)
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys_)
    assert deploy.pending_journals(r.vault) == []


def kill_mid_switch(r: Rig, proc: subprocess.Popen[bytes], log: Path, ca: str,
                    after_reload: bool) -> None:
    """Publish the switch of every site to `ca`; SIGKILL the agent while its journal is on
    disk: as soon as it appears (mid-flip, or before nginx reloaded) or once nginx serves the new leaf of
    the last site (the reload is done, the agent is proving the sites by handshake)."""
    r.publish(ca)
    until(lambda: bool(deploy.pending_journals(r.vault)), "the switch journal", proc, log,
          step=0.005)
    if after_reload:
        last = SITES[-1]
        until(lambda: r.handshake(last) == r.certs[(last, ca)].sha256, "nginx's reload", proc,
              log, step=0.01)
    kill(proc)
    assert deploy.pending_journals(r.vault), "the switch was over before the kill"
    if after_reload:
        assert not reported(r, ca)(), "the agent reported the switch before the kill"


def test_an_agent_process_killed_mid_switch_converges_after_restart(rig: Rig) -> None:
    r = rig
    t0 = time.monotonic()
    proc, log = start_agent(r, 1)
    try:
        until(reported(r, "ca-a"), "the first pass (every site proven on ca-a)", proc, log)
        # 1. killed right after the journal is written: flips half done, nginx not reloaded
        kill_mid_switch(r, proc, log, "ca-b", after_reload=False)
        proc, log = start_agent(r, 2)
        until(reported(r, "ca-b"), "convergence on ca-b after the restart", proc, log)
        assert_converged(r, "ca-b")
        # 2. killed after nginx reloaded, while the agent proves the sites by handshake
        kill_mid_switch(r, proc, log, "ca-a", after_reload=True)
        proc, log = start_agent(r, 3)
        until(reported(r, "ca-a"), "convergence on ca-a after the restart", proc, log)
        assert_converged(r, "ca-a")
        assert "recovered interrupted switch" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert time.monotonic() - t0 < 90
