"""One daemon per store: a second `certfailover run` (or `run --once`) on the same store is
refused with a clear error and acts on nothing, read-only commands keep working meanwhile, and
the lock is free again once the daemon stops or dies. SQLite store on a real site (two Pebble
CAs, nginx); PostgreSQL store with the lab's throwaway server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from certfailover import config as config_mod
from certfailover.errors import LockError
from certfailover.store.lock import PostgresLock, acquire_daemon_lock
from certfailover_lab import pki
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry, offline_config

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "certfailover.cli.main"]


@pytest.fixture
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    entries = [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (pebble_a, pebble_b)]
    yield from make_lab(tmp_path, entries, [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


def _env(cfg: Path) -> dict[str, str]:
    return {**os.environ, "CERTFAILOVER_CONFIG": str(cfg)}


def _start(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "run", *args], env=_env(cfg), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli(cfg: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=_env(cfg), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def _until(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err


def _holds(lock_file: Path, proc: subprocess.Popen[str]) -> Callable[[], bool]:
    def check() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        return lock_file.exists() and f"pid={proc.pid}\n" in lock_file.read_text()
    return check


def test_a_second_daemon_on_the_same_store_is_refused(lab: Lab) -> None:
    cfg = lab.config_path
    lock_file = lab.rt.config.store / "daemon.lock"
    assert len(lab.rt.db.certs("www")) == 1  # the lab's bootstrap certificate (pebble-a)
    first = _start(cfg, "--interval", "0.5")
    try:
        _until(_holds(lock_file, first), "the first daemon to take the lock")
        # started before the first one has issued its standby: without the lock both would
        second = _start(cfg, "--interval", "0.5")
        _, err = second.communicate(timeout=30)
        assert second.returncode == 2, err
        assert err.startswith(f"certfailover: error: another certfailover daemon (pid {first.pid} ")
        assert f"holds {lock_file}; stop it first" in err and "since " in err
        cron = _cli(cfg, "run", "--once")  # a cron tick does not overlap a daemon either
        assert cron.returncode == 2 and f"(pid {first.pid} " in cron.stderr

        # the first daemon does the work, once
        _until(lambda: len(lab.rt.db.certs("www")) == 2, "the standby from pebble-b")
        status = _cli(cfg, "--json", "status")  # read-only commands work while it runs
        assert status.returncode == 0, status.stderr
        certs = json.loads(status.stdout)["sites"][0]["certs"]
        assert sorted(c["ca"] for c in certs) == ["pebble-a", "pebble-b"]
        assert _cli(cfg, "--json", "events", "--site", "www").returncode == 0
        time.sleep(1.5)  # a few more ticks of the daemon: still nothing doubled
        assert len(lab.rt.db.certs("www")) == 2
        issued = lab.kinds().count("issued")
    finally:
        err = _stop(first)
    assert first.returncode == 0, err

    # the lock is free again: a new daemon starts and takes it
    third = _start(cfg, "--interval", "0.5")
    try:
        _until(_holds(lock_file, third), "the new daemon to take the lock")
        time.sleep(1.0)
        assert third.poll() is None
    finally:
        err = _stop(third)
    assert third.returncode == 0, err
    assert len(lab.rt.db.certs("www")) == 2 and lab.kinds().count("issued") == issued


PG_HOLDER = """
import sys
from certfailover.store.lock import PostgresLock
try:
    lock = PostgresLock(sys.argv[1])
except Exception as exc:
    print(f"refused: {exc}", flush=True)
    sys.exit(2)
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


def _pg_holder(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", PG_HOLDER, url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "locked", (line, proc.communicate(timeout=10))
    return proc


def test_postgresql_advisory_lock_across_processes(postgres: PostgresServer) -> None:
    url = postgres.create_database("lock_two_processes")
    other_db = postgres.create_database("lock_other_store")
    holder = _pg_holder(url)
    try:
        with pytest.raises(LockError) as exc:
            PostgresLock(url)
        msg = str(exc.value)
        assert f"(pid {holder.pid} on host " in msg and "since " in msg
        assert f"127.0.0.1:{postgres.port}/lock_two_processes; stop it first" in msg
        with PostgresLock(other_db):  # another database is another store
            pass
        # the session dies with the process (kill -9): the advisory lock goes with it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 15
        while True:
            try:
                lock = PostgresLock(url)
                break
            except LockError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)
    try:
        assert lock.held
        with pytest.raises(LockError):  # another session of the same process is refused too
            PostgresLock(url)
        refused = subprocess.run([sys.executable, "-c", PG_HOLDER, url], capture_output=True,
                                 text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert refused.returncode == 2 and f"(pid {os.getpid()} on host" in refused.stdout
    finally:
        lock.release()
    assert not lock.held
    _pg_holder(url).communicate("", timeout=30)  # released: another process takes it


def test_run_on_a_postgresql_store_refuses_a_second_daemon(
        tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database("lock_run")
    root = pki.make_root("R")
    bundle = pki.write_bundle(tmp_path / "roots.pem", root)
    cfg = offline_config(tmp_path, bundle, database=url,
                         extra="\n[daemon]\nissue_timeout = 1\n")
    with acquire_daemon_lock(config_mod.load(cfg)) as lock:
        assert isinstance(lock, PostgresLock) and lock.where.startswith("the daemon lock of")
    engine = sa.create_engine(url)
    first = _start(cfg, "--interval", "0.5")
    try:
        def first_holds() -> bool:  # looked up, not probed: a probe could refuse the daemon
            assert first.poll() is None, first.communicate()[1]
            with engine.connect() as conn:
                return bool(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.granted"
                    " AND a.application_name LIKE :app"),
                    {"app": f"certfailover pid={first.pid} %"}).scalar())
        _until(first_holds, "the daemon to take the advisory lock")
        second = _cli(cfg, "run", "--once")
        assert second.returncode == 2, second.stderr
        assert f"another certfailover daemon (pid {first.pid} on host " in second.stderr
        assert "/lock_run; stop it first" in second.stderr
        assert not (tmp_path / "store" / "daemon.lock").exists()  # the database is the lock
        assert _cli(cfg, "--json", "status").returncode == 0
    finally:
        err = _stop(first)
        engine.dispose()
    assert first.returncode == 0, err
    with PostgresLock(url):  # free again after SIGTERM
        pass
