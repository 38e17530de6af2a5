"""One daemon per store: the flock on <store>/daemon.lock, across processes and within one."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from certfailover import config as config_mod
from certfailover.config import Config
from certfailover.errors import CertFailoverError, LockError, StoreError
from certfailover.fleet.coord import Leader
from certfailover.store import pgdeadline
from certfailover.store.lock import FileLock, acquire_daemon_lock, advisory_key
from certfailover.store.pgdeadline import DatabaseDeadline, pg_deadlines, pg_where

HOLDER = """
import sys, time
from pathlib import Path
from certfailover import config as config_mod
from certfailover.store.lock import acquire_daemon_lock
cfg = config_mod.parse({"store": {"directory": sys.argv[1]}}, file="t.toml", base=Path("."), env={})
try:
    lock = acquire_daemon_lock(cfg)
except Exception as exc:
    print(f"refused: {exc}", flush=True)
    sys.exit(2)
print("locked", flush=True)
sys.stdin.read()  # hold until stdin closes (or the process is killed)
lock.release()
print("released", flush=True)
"""


def _config(store: Path) -> Config:
    return config_mod.parse({"store": {"directory": str(store)}}, file="t.toml", base=store,
                            env={})


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "store")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_a_second_acquisition_in_the_same_process_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "store")
    with acquire_daemon_lock(cfg) as lock:
        assert isinstance(lock, FileLock) and lock.held
        path = tmp_path / "store" / "daemon.lock"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(LockError) as exc:
            acquire_daemon_lock(cfg)
        msg = str(exc.value)
        assert isinstance(exc.value, CertFailoverError)
        assert str(path) in msg and f"pid {os.getpid()}" in msg
        assert f"on host {socket.gethostname()}" in msg and "since " in msg
        assert msg.startswith("another certfailover daemon (") and msg.endswith("stop it first")
    assert not lock.held
    with acquire_daemon_lock(cfg):  # released: free again
        pass


def test_another_process_is_refused_until_the_holder_releases(
        tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    cfg = _config(tmp_path / "store")
    with pytest.raises(LockError) as exc:
        acquire_daemon_lock(cfg)
    assert f"pid {holder.pid} " in str(exc.value)
    assert str(tmp_path / "store" / "daemon.lock") in str(exc.value)
    # and the other way round: a second process is refused while we hold it
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "released"
    assert holder.wait(10) == 0
    with acquire_daemon_lock(cfg):
        other = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path / "store")],
                               capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL, check=False)
        assert other.returncode == 2
        assert f"refused: another certfailover daemon (pid {os.getpid()} " in other.stdout


def test_killing_the_holder_frees_the_lock(tmp_path: Path,
                                           holder: subprocess.Popen[str]) -> None:
    cfg = _config(tmp_path / "store")
    with pytest.raises(LockError):
        acquire_daemon_lock(cfg)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the flock with the process's last descriptor
        try:
            lock = acquire_daemon_lock(cfg)
            break
        except LockError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    text = (tmp_path / "store" / "daemon.lock").read_text()
    assert f"pid={os.getpid()}\n" in text, "the stale holder text was replaced"
    lock.release()


def test_an_existing_lock_file_is_reused_and_made_0600(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "daemon.lock").write_text("pid=1\nhost=old\nsince=long ago\nleftover junk\n")
    os.chmod(store / "daemon.lock", 0o644)
    with acquire_daemon_lock(_config(store)):
        assert stat.S_IMODE((store / "daemon.lock").stat().st_mode) == 0o600
        assert "leftover" not in (store / "daemon.lock").read_text()


def test_advisory_key_is_stable_and_fits_a_bigint() -> None:
    assert advisory_key() == advisory_key("certfailover daemon")
    assert -(2 ** 63) <= advisory_key() < 2 ** 63 and advisory_key() != advisory_key("other")


def test_the_fleet_leaders_key_is_unchanged_by_the_shared_helper() -> None:
    # controllers of the previous release and of this one must contend for the same lock
    old = int.from_bytes(hashlib.sha256(b"certfailover fleet controller").digest()[:8], "big",
                         signed=True)
    leader = Leader("postgresql+psycopg://u:pw@127.0.0.1:1/db")  # engines connect lazily
    try:
        assert leader.key == old == advisory_key("certfailover fleet controller")
    finally:
        leader.release()


def test_a_deadline_error_names_the_database_never_the_password() -> None:
    where = pg_where("postgresql+psycopg://user:s3cret@db.example:5433/fleet")
    assert where == "db.example:5433/fleet"
    exc = DatabaseDeadline(where, 2.5, OSError("eof"))
    assert isinstance(exc, StoreError) and isinstance(exc, sa.exc.OperationalError)
    assert str(exc) == ("database db.example:5433/fleet: no answer within the 2.5 s "
                        "client-side deadline; the connection was dropped")
    assert exc.connection_invalidated


def test_engines_of_other_drivers_are_left_alone() -> None:
    engine = sa.create_engine("sqlite://")
    assert pg_deadlines(engine, "sqlite://") is engine
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_the_watchdog_ends_a_blocked_read_at_its_deadline() -> None:
    a, b = socket.socketpair()  # b never answers: a peer that is alive but stuck
    try:
        w = pgdeadline._watchdog.watch(a.fileno(), time.monotonic() + 0.3)
        t0 = time.monotonic()
        try:
            assert a.recv(10) == b""  # the shut socket reads as EOF
        finally:
            pgdeadline._watchdog.unwatch(w)
        assert 0.25 < time.monotonic() - t0 < 2 and w.fired
    finally:
        a.close()
        b.close()
    a, b = socket.socketpair()
    try:
        w = pgdeadline._watchdog.watch(a.fileno(), time.monotonic() + 0.2)
        pgdeadline._watchdog.unwatch(w)  # finished in time: never fired, the socket still works
        time.sleep(0.3)
        assert not w.fired and a.send(b"x") == 1 and b.recv(1) == b"x"
    finally:
        a.close()
        b.close()
