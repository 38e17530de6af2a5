"""kill -9 at chosen and at random points of an activation against real nginx, then recover()
and check.

A forked child keeps activating one site with a random one of three certificates: two from
trusted CAs (a, b) and one from CA c, which validate() rejects, so that rollbacks happen too.
The first trials stop the child at each phase in turn (journal, flip, apply, verify,
rollback-*: it halts right after the phase began, before the phase's action; a rollback
phase's trial activates c first) and SIGKILL it there, so that every step boundary of the
deploy path is killed at at least once in every run, whatever the random trials do; the run
asserts it. The other trials SIGKILL it either after a uniformly random delay or a few
milliseconds after a randomly chosen phase began, which lands kills inside the steps' actions
(a reload under way, a journal being written, a handshake proof half done). Right after the
kill the server must still complete a handshake with one of the three certificates (a
completed handshake proves it holds the matching key). After recover(): no journal left, the
live link's leaf is served steadily, validates, and the key in the store matches it.

CERTFAILOVER_KILL9_TRIALS=N runs N trials in each kill -9 test instead of its default (at
least one per phase), for long runs (docs/testing.md).

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
#: trials per kill -9 test for long runs (unset: each test's own count)
TRIALS_ENV = "CERTFAILOVER_KILL9_TRIALS"


def trial_count(default: int) -> int:
    """`default`, or $CERTFAILOVER_KILL9_TRIALS; never fewer than one trial per phase."""
    return max(len(PHASES), int(os.environ.get(TRIALS_ENV) or default))


def _child(vault: Vault, adapter: ServerAdapter, targets: dict[Path, str], srv: WebServer,
           roots: list[x509.Certificate], phase_log: Path, seed: int,
           halt_at: str | None = None, first: Path | None = None) -> None:
    """`halt_at`: stop for good once that phase begins (the parent kills it there);
    `first`: the first activation's target (then random ones)."""
    validate = chain_validator(roots)
    rng = random.Random(seed)
    fd = os.open(phase_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def on_phase(name: str) -> None:
        os.write(fd, name.encode() + b"\n")
        if name == halt_at:
            time.sleep(60)  # killed here, before the phase's action
        # a few ms at each phase boundary, so that a kill aimed at a phase lands in it even on
        # HAProxy, whose flip and apply take microseconds (the kill then lands just before or
        # inside the phase's action)
        time.sleep(rng.uniform(0.0, 0.01))

    while True:
        cur = vault.live_target("www")
        nxt = first if first is not None and first != cur else rng.choice(
            [d for d in targets if d != cur])
        first = None
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
    halted_in: list[str] = []
    actions: Counter[str] = Counter()
    vhosts = [VHost(SNI, (vault.live_path("www"),))]
    with (start_nginx(tmp_path / kind, vhosts, pid_file=True) if pid_file
          else start(kind, tmp_path / kind, vhosts)) as srv:
        adapter = make_adapter(srv.spec)
        for trial in range(trials):
            log = tmp_path / f"phases-{trial}.log"
            # the first trials halt the child at each phase in turn (an activation of c for the
            # rollback phases, of the other trusted certificate for the rest); the rest kill at
            # random
            halt_at = PHASES[trial] if trial < len(PHASES) else None
            first = None
            if halt_at is not None:
                first = dc if halt_at.startswith("rollback") else next(
                    d for d in (da, db) if d != vault.live_target("www"))
            proc = ctx.Process(target=_child, args=(vault, adapter, targets, srv, roots, log,
                                                    rng.getrandbits(32), halt_at, first))
            proc.start()
            reached = True
            if halt_at is not None:
                reached = _wait_phase(log, halt_at)
            elif trial % 2 == 0:
                time.sleep(rng.uniform(0.0, 0.6))
            else:
                target_phase = rng.choice(PHASES)
                _wait_phase(log, target_phase)
                time.sleep(rng.uniform(0.0, 0.03))
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(5)
            assert proc.exitcode == -signal.SIGKILL, f"trial {trial}: child ended on its own"
            assert reached, f"trial {trial}: the child never began {halt_at}"
            phases = log.read_text().split() if log.exists() else []
            killed_in[phases[-1] if phases else "before-journal"] += 1
            if halt_at is not None:
                assert phases[-1] == halt_at, f"trial {trial}: killed in {phases[-1]}, not {halt_at}"
                halted_in.append(halt_at)

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
    # every step boundary of the deploy path was killed at, and recovered from, in this run
    assert halted_in == list(PHASES), halted_in
    assert set(PHASES) <= set(killed_in), f"a phase was never killed in: {dict(killed_in)}"
    assert actions["finished"] and actions["undone"], dict(actions)


def test_kill9_trials_nginx(tmp_path: Path) -> None:
    run_kill9_trials("nginx", trial_count(20), tmp_path)


def test_kill9_trials_nginx_pid_file(tmp_path: Path) -> None:
    """The same, reloading by SIGHUP to the master named by the `pid_file` option (fewer
    trials: the kill points are the same, only the reload differs)."""
    run_kill9_trials("nginx", trial_count(12), tmp_path, pid_file=True)
