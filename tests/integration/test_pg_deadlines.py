"""Client-side deadlines on a real PostgreSQL whose backend is alive but stuck.

`kill -STOP` of our session's backend keeps TCP up (the kernel still acknowledges) and stops the
server's statement timer: without a deadline on the client side every call below would hang
for ever. Each stuck call must return or raise within its deadline plus a little, and after
`kill -CONT` the next call works again on a new connection."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa

from certfailover.errors import StoreError
from certfailover.fleet import coord
from certfailover.fleet.coord import Deadlines, Leader, Listener
from certfailover.model import Cert, CertState
from certfailover.store import db as dbmod
from certfailover.store.lock import PostgresLock
from certfailover.store.pgdeadline import DatabaseDeadline
from certfailover_lab.postgres import PostgresServer

pytestmark = pytest.mark.integration
_n = count(1)
CALL = 1.0  # the client-side deadline of one call in these tests
SLACK = 1.0
STUCK = Deadlines(connect=2, statement=5, lock=2, call=CALL)  # server-side bounds larger
SECRET = "not-a-real-password"  # trust auth ignores it: it must never show in a message


@pytest.fixture
def db(postgres: PostgresServer) -> tuple[str, str]:
    """(URL with a password, 'host:port/name' as messages name it)."""
    name = f"pg_deadlines_{next(_n)}"
    url = postgres.create_database(name).replace("certfailover@", f"certfailover:{SECRET}@")
    dbmod.Database(url).migrate()
    return url, f"127.0.0.1:{postgres.port}/{name}"


@contextmanager
def stopped(pid: int, *, after: float = 0.0) -> Iterator[None]:
    """The backend `pid` stopped (alive, TCP up, running nothing) for the block, from `after`
    seconds into it (to stop it in the middle of a query)."""
    timer = threading.Timer(after, os.kill, (pid, signal.SIGSTOP))
    timer.start()
    try:
        if not after:
            timer.join()
        yield
    finally:
        timer.cancel()
        timer.join()
        os.kill(pid, signal.SIGCONT)


def backend_of(url: str, app: str) -> int:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :a"
                " AND datname = current_database()"), {"a": app}).scalar_one())
    finally:
        eng.dispose()


def gone(url: str, pid: int) -> bool:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return not conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"),
                                    {"p": pid}).first()
    finally:
        eng.dispose()


def until(cond: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def check_message(exc: BaseException, where: str, seconds: float) -> None:
    text = str(exc)
    assert where in text and f"{seconds:g} s client-side deadline" in text, text
    assert SECRET not in text


def test_a_pooled_connection_stuck_during_a_query(db: tuple[str, str]) -> None:
    url, where = db
    eng = coord.make_engine(url, "stuck query", STUCK)
    try:
        conn = eng.connect()
        pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        # stopped while it runs a query (not before): a server-side sleep, stopped midway
        with stopped(pid, after=0.2):
            t0 = time.monotonic()
            with pytest.raises(DatabaseDeadline) as exc:
                conn.execute(sa.text("SELECT pg_sleep(0.6)"))
            took = time.monotonic() - t0
            print(f"stuck query returned after {took:.2f} s (deadline {CALL:g} s)")
            assert CALL - 0.05 <= took < CALL + SLACK
            assert isinstance(exc.value, StoreError)  # and to SQLAlchemy a disconnect:
            assert isinstance(exc.value, sa.exc.OperationalError) and conn.invalidated
            check_message(exc.value, where, CALL)
            conn.close()
        with eng.connect() as again:  # the stuck connection was not returned to the pool
            assert again.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        eng.dispose()


def test_a_stuck_idle_pooled_connection_is_replaced_at_checkout(db: tuple[str, str]) -> None:
    url, _ = db
    eng = coord.make_engine(url, "stuck idle", STUCK, pool_size=1)
    try:
        with eng.connect() as conn:
            pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        with stopped(pid):  # idle in the pool: the pre-ping finds it and a new one is made
            t0 = time.monotonic()
            with eng.connect() as conn:
                assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid
            took = time.monotonic() - t0
            print(f"checkout past a stuck pooled connection took {took:.2f} s")
            assert took < CALL + SLACK
    finally:
        eng.dispose()


def test_the_leaders_lock_session_stuck_during_held(db: tuple[str, str]) -> None:
    url, _ = db
    leader = Leader(url, holder="ctl-stuck", deadlines=STUCK)
    try:
        assert leader.try_lead() and leader.epoch == 1
        pid = leader.session_pid()
        assert pid is not None
        with stopped(pid):
            t0 = time.monotonic()
            assert leader.held is False  # a stuck lock session gives the lead up
            took = time.monotonic() - t0
            print(f"Leader.held on a stuck session returned after {took:.2f} s")
            assert CALL - 0.05 <= took < CALL + SLACK
        # the old backend ends at SIGCONT (its client is gone), and its lock with it
        until(lambda: gone(url, pid), "the stuck backend to end")
        assert leader.try_lead() and leader.held and leader.epoch == 2
        assert leader.session_pid() != pid
    finally:
        leader.release()


def test_a_listeners_connection_stuck_during_wait(db: tuple[str, str]) -> None:
    url, where = db
    app = "certfailover stuck listener"
    listener = Listener(url, app=app, deadlines=STUCK)
    eng = coord.make_engine(url, "writer", STUCK)
    try:
        assert listener.wait(0.1) == []
        pid = backend_of(url, app)
        with stopped(pid):
            t0 = time.monotonic()
            with pytest.raises(StoreError) as exc:
                listener.wait(0.5)
            took = time.monotonic() - t0
            print(f"Listener.wait(0.5) on a stuck connection raised after {took:.2f} s")
            assert 0.5 + CALL - 0.05 <= took < 0.5 + CALL + SLACK
            check_message(exc.value, where, CALL)
        assert listener.wait(0.1) == [Listener.RECONNECTED]  # a new connection, listening
        assert backend_of(url, app) != pid
        with eng.begin() as conn:
            coord.notify(conn, "after")
        assert listener.wait(5) == ["after"]
    finally:
        listener.close()
        eng.dispose()


def test_the_daemon_locks_session_stuck(db: tuple[str, str]) -> None:
    url, _ = db
    lock = PostgresLock(url, deadline=CALL)
    try:
        app = f"certfailover pid={os.getpid()} "
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            pid = int(conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE starts_with(application_name, :a)"
                " AND datname = current_database()"), {"a": app}).scalar_one())
        eng.dispose()
        assert lock.held
        with stopped(pid):
            t0 = time.monotonic()
            assert lock.held is False  # the daemon stops acting on a lock it cannot confirm
            took = time.monotonic() - t0
            print(f"PostgresLock.held on a stuck session returned after {took:.2f} s")
            assert CALL - 0.05 <= took < CALL + SLACK
            t0 = time.monotonic()
            lock.release()
            assert time.monotonic() - t0 < SLACK
    finally:
        lock.release()
    until(lambda: gone(url, pid), "the stuck backend to end")
    with PostgresLock(url, deadline=CALL) as again:  # the next one works
        assert again.held


def _cert(n: int) -> Cert:
    now = datetime.now(UTC)
    return Cert(id=f"www/a/{n}", site="www", ca="a", serial=str(n), not_before=now,
                not_after=now + timedelta(days=90), sha256="ab" * 32, key_type="ec-p256",
                issuer_dn="CN=x", state=CertState.STANDBY, created=now, path=f"/x/{n}")


@pytest.mark.parametrize("call", ["read", "write"])
def test_a_store_call_on_a_stuck_database(db: tuple[str, str], call: str) -> None:
    """The store's own engine (`Database`) has the client-side deadline too: db.certs() or
    db.add_cert() on a stuck backend raises DatabaseDeadline naming host:port/database, and
    the store works again on a new connection."""
    url, where = db
    store = dbmod.Database(url, deadline=CALL)
    try:
        store.add_cert(_cert(1))
        with store.engine.connect() as conn:  # the pool's one connection, used next
            pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        with stopped(pid):
            t0 = time.monotonic()
            with pytest.raises(DatabaseDeadline) as exc:
                if call == "read":
                    store.certs()
                else:
                    store.add_cert(_cert(2))
            took = time.monotonic() - t0
            print(f"Database {call} on a stuck backend raised after {took:.2f} s")
            assert CALL - 0.05 <= took < CALL + SLACK
            assert isinstance(exc.value, StoreError)
            check_message(exc.value, where, CALL)
        until(lambda: gone(url, pid), "the stuck backend to end")
        store.add_cert(_cert(3))
        assert [c.id for c in store.certs()] == ["www/a/1", "www/a/3"]  # 2 was never written
    finally:
        store.engine.dispose()


def _parent(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _server_pids(server: PostgresServer) -> list[int]:
    """The postmaster (first line of postmaster.pid) and every process it started."""
    main = int((server.data / "postmaster.pid").read_text().split()[0])
    return [main, *(int(p.name) for p in Path("/proc").iterdir()
                    if p.name.isdigit() and _parent(int(p.name)) == main)]


def test_the_store_on_a_stuck_server() -> None:
    """The whole server stopped (postmaster and every backend, on a server of its own): a call
    on the pooled connection ends at the deadline, one that needs a new connection at the
    connect timeout; after SIGCONT the store works again."""
    with PostgresServer() as server:
        url = server.create_database("stuck_server").replace(
            "certfailover@", f"certfailover:{SECRET}@")
        store = dbmod.Database(url, deadline=CALL, connect_timeout=2)
        try:
            store.migrate()
            store.add_cert(_cert(1))
            pids = _server_pids(server)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(DatabaseDeadline) as exc:
                    store.certs()
                took = time.monotonic() - t0
                print(f"Database.certs() on a stopped server raised after {took:.2f} s")
                assert CALL - 0.05 <= took < CALL + SLACK
                check_message(exc.value, f"127.0.0.1:{server.port}/stuck_server", CALL)
                t0 = time.monotonic()
                with pytest.raises(sa.exc.OperationalError) as failed:  # a new connection
                    store.certs()
                took = time.monotonic() - t0
                print(f"a new connection to a stopped server failed after {took:.2f} s")
                assert took < 2 + SLACK and SECRET not in str(failed.value)
            finally:
                # and the postmaster's parent: runuser (as root) stops itself when its child
                # stops, and would then not pass the server's stop on
                for pid in [*pids, *filter(None, [_parent(pids[0])])]:
                    os.kill(pid, signal.SIGCONT)
            assert [c.id for c in store.certs()] == ["www/a/1"]
        finally:
            store.engine.dispose()
