"""kill -9 at random points of an activation against real nginx, then recover() and check.

A forked child keeps activating one site with a random one of three certificates: two from
trusted CAs (a, b) and one from CA c, which validate() rejects, so that rollbacks happen too.
The parent SIGKILLs it either after a uniformly random delay or a few milliseconds after a
randomly chosen phase began (journal, flip, apply, verify, rollback-*). Right after the kill the
server must still complete a handshake with one of the three certificates (a completed handshake
proves it holds the matching key). After recover(): no journal left, the live link's leaf is
served steadily, validates, and the key in the store matches it.

run_kill9_trials is shared with test_deploy_crash_haproxy.py / _apache.py (one file per
server keeps each file under a minute).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509

from certfailover import keys
from certfailover.deploy import Activation, activate, pending_journals, recover
from certfailover.probe import ProbeError, leaf_sha256, served_chain
from certfailover.servers import ServerAdapter, make_adapter
from certfailover.servers.haproxy import HAProxyAdapter, RuntimeAPI
from certfailover.store.vault import Vault
from certfailover_lab.webservers import (
    LabCA,
    VHost,
    WebServer,
    chain_validator,
    start,
    start_nginx,
)

pytestmark = pytest.mark.integration

SNI = "www.test"
SETTLE = 0.15
PHASES = ("journal", "flip", "apply", "verify", "rollback-journal", "rollback-flip",
          "rollback-apply", "rollback-verify")


def _child(vault: Vault, adapter: ServerAdapter, targets: dict[Path, str], srv: WebServer,
           roots: list[x509.Certificate], phase_log: Path, seed: int) -> None:
    validate = chain_validator(roots)
    rng = random.Random(seed)
    fd = os.open(phase_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def on_phase(name: str) -> None:
        os.write(fd, name.encode() + b"\n")
        # a few ms at each phase boundary, so that a kill aimed at a phase lands in it even on
        # HAProxy, whose flip and apply take microseconds (the kill then lands just before or
        # inside the phase's action)
        time.sleep(rng.uniform(0.0, 0.01))

    while True:
        cur = vault.live_target("www")
        nxt = rng.choice([d for d in targets if d != cur])
        activate(vault, adapter, [Activation("www", nxt, targets[nxt], (srv.endpoint,), SNI)],
                 validate=validate, verify_timeout=3.0, settle=SETTLE, on_phase=on_phase)


def _served_now(srv: WebServer) -> x509.Certificate:
    deadline = time.monotonic() + 3.0
    while True:
        try:
            return served_chain(srv.endpoint, SNI, timeout=2.0)[0]
        except ProbeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _wait_phase(log: Path, phase: str, timeout: float = 4.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if phase in log.read_text().split():
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    return False


def run_kill9_trials(kind: str, trials: int, tmp_path: Path, *, pid_file: bool = False) -> None:
    vault = Vault(tmp_path / "vault")
    vault.ensure()
    a, b, c = LabCA.create("ca-a"), LabCA.create("ca-b"), LabCA.create("ca-c")
    da, sha_a = a.issue_into(vault, "www", [SNI])
    db, sha_b = b.issue_into(vault, "www", [SNI])
    dc, sha_c = c.issue_into(vault, "www", [SNI])  # untrusted: activating it rolls back
    targets = {da: sha_a, db: sha_b, dc: sha_c}
    trusted = {da, db}
    roots = [a.root.cert, b.root.cert]
    validate = chain_validator(roots)
    vault.point_live("www", da)
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    ctx = multiprocessing.get_context("fork")
    killed_in: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    vhosts = [VHost(SNI, (vault.live_path("www"),))]
    with (start_nginx(tmp_path / kind, vhosts, pid_file=True) if pid_file
          else start(kind, tmp_path / kind, vhosts)) as srv:
        adapter = make_adapter(srv.spec)
        for trial in range(trials):
            log = tmp_path / f"phases-{trial}.log"
            proc = ctx.Process(target=_child, args=(vault, adapter, targets, srv, roots, log,
                                                    rng.getrandbits(32)))
            proc.start()
            if trial % 2 == 0:
                time.sleep(rng.uniform(0.0, 0.6))
            else:
                target_phase = rng.choice(PHASES)
                _wait_phase(log, target_phase)
                time.sleep(rng.uniform(0.0, 0.03))
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(5)
            assert proc.exitcode == -signal.SIGKILL, f"trial {trial}: child ended on its own"
            phases = log.read_text().split() if log.exists() else []
            killed_in[phases[-1] if phases else "before-journal"] += 1

            # 1. untouched since the kill, the server completes a handshake with one of ours
            served = leaf_sha256(_served_now(srv))
            assert served in targets.values(), f"trial {trial}: unexpected leaf served"

            # 2. recovery makes the store agree with the server, on a valid certificate
            results = recover(vault, {adapter.name: adapter}, validate=validate, settle=SETTLE)
            for r in results:
                assert r.action in ("finished", "undone"), f"trial {trial}: {r}"
                actions[r.action] += 1
            assert pending_journals(vault) == []
            live = vault.live_target("www")
            assert live in trusted, f"trial {trial}: live is {live} after {results}"
            material = vault.load(live)
            assert keys.same_public_key(material.key.public_key(), material.leaf.public_key())
            for _ in range(5):  # steadily the live leaf: no old worker generation left over
                chain = served_chain(srv.endpoint, SNI)
                assert leaf_sha256(chain[0]) == targets[live], f"trial {trial}: store != server"
                assert validate(chain, SNI) is None
                time.sleep(SETTLE / 5)
            if isinstance(adapter, HAProxyAdapter) and adapter.socket_path is not None:
                assert RuntimeAPI(adapter.socket_path).cert_names()[1] is None  # no stale txn
    print(f"\n{kind}: {trials} kill -9 trials; killed in phase: {dict(killed_in)}; "
          f"recovery: {dict(actions)}")
    hit = {p for p in killed_in if p in ("flip", "apply", "verify")}
    assert len(hit) >= 2, f"kills did not land inside activations: {dict(killed_in)}"
    assert any(p.startswith("rollback") for p in killed_in), dict(killed_in)


def test_kill9_trials_nginx(tmp_path: Path) -> None:
    run_kill9_trials("nginx", 50, tmp_path)


def test_kill9_trials_nginx_pid_file(tmp_path: Path) -> None:
    """The same, reloading by SIGHUP to the master named by the `pid_file` option (fewer
    trials: the kill points are the same, only the reload differs)."""
    run_kill9_trials("nginx", 12, tmp_path, pid_file=True)
