"""Coordination of controllers and agents on the shared PostgreSQL database.

* **Deadlines**: every connection is opened with `connect_timeout` and runs with a
  `statement_timeout`, a `lock_timeout` and TCP keepalives / `tcp_user_timeout`, so no connect,
  query or dead peer blocks a caller for longer than its bound (`Deadlines`). A server that is
  alive but stuck (TCP up, no statement timer running) is bounded on the client side: every
  round trip has a total deadline (`Deadlines.call`), past which its socket is shut, the call
  raises DatabaseDeadline (a StoreError naming host/db and the deadline) and the connection is
  discarded (store/lock.py, `pg_deadlines`).
* **Leader** (singleton work): `pg_try_advisory_lock` on a dedicated connection; the lock dies
  with that session. Taking the lead increments the leader epoch (`fleet_epoch` row), and every
  write of the leader runs in `Leader.fenced()`: a transaction that first updates the epoch
  row *only if it still holds the leader's epoch*. A stale leader (its session ended, another
  controller took over) has its write refused with `Fenced`; a takeover that happens while a
  fenced write is running waits on the row lock, so writes are ordered by epoch.
* **Leases** (shared work): one `fleet_leases` row per unit of work (e.g. "issue:www:ca-a")
  with a holder and an expiry on the database's clock. `Leases.claim` takes free or expired
  rows with `SELECT ... FOR UPDATE SKIP LOCKED`, so several controllers split the work without
  waiting on each other and a unit is held by one controller at a time; the holder re-checks
  the store under the lease, so the work (an issuance) happens once.
* **Wake-ups**: `notify()` sends `pg_notify` in the writer's transaction (delivered at commit);
  `Listener` waits on `LISTEN` with a timeout and reconnects after a lost connection; a caller
  re-reads the tables after every wait, so polling is the fallback when a notice is lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from ..errors import CertFailoverError, StoreError
from ..store.db import fleet_epoch, fleet_leases
from ..store.lock import advisory_held, advisory_key
from ..store.pgdeadline import is_deadline, pg_connect, pg_deadlines, pg_extra_time, pg_where

if TYPE_CHECKING:  # psycopg is optional (the postgres extra): imported when a Listener connects
    import psycopg

__all__ = ["CHANNEL", "Deadlines", "Fenced", "Leader", "Leases", "Listener", "attempt",
           "attempt_failed", "chunks", "connect_args", "make_engine", "notify"]

CHANNEL = "certfailover_fleet"
T = TypeVar("T")


class Fenced(CertFailoverError):
    """A write of a leader that is no longer the leader (a newer epoch exists): refused."""


@dataclass(frozen=True)
class Deadlines:
    """Bounds for every database call, in seconds. `call` is the client-side total deadline of
    one round trip (a statement, a commit, a ping), for a server that is alive but stuck; it
    defaults to `statement` + 2 s, so a slow statement normally ends by the server's timeout."""

    connect: float = 5.0
    statement: float = 10.0
    lock: float = 5.0
    call: float | None = None

    def per_call(self) -> float:
        return self.call if self.call is not None else self.statement + 2.0

    def options(self) -> str:
        def ms(seconds: float) -> int:
            return max(1, int(seconds * 1000))
        return (f"-c statement_timeout={ms(self.statement)} -c lock_timeout={ms(self.lock)}"
                f" -c idle_in_transaction_session_timeout={ms(self.statement * 3)}")


def _require_pg(url: str) -> sa.URL:
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"database URL {url!r}: {exc}") from exc
    if u.get_backend_name() != "postgresql":
        raise StoreError(f"database URL {u.render_as_string(hide_password=True)!r}: fleets "
                         "need PostgreSQL (postgresql+psycopg://...)")
    return u


def connect_args(app: str, deadlines: Deadlines) -> dict[str, object]:
    """libpq parameters: connect deadline, per-statement deadline, dead-peer detection."""
    return {
        "application_name": app[:63],
        "connect_timeout": max(2, int(deadlines.connect + 0.999)),  # libpq: whole seconds, >= 2
        "options": deadlines.options(),
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        "tcp_user_timeout": int(deadlines.statement * 1000),
    }


def make_engine(url: str, app: str, deadlines: Deadlines | None = None, *,
                pool_size: int = 2, autocommit: bool = False) -> sa.Engine:
    """An engine whose every connection has the deadlines (each call also `per_call()` on the
    client side: DatabaseDeadline); stale pooled connections (after a server restart, or stuck)
    are detected before use (pool_pre_ping) and replaced."""
    _require_pg(url)
    d = deadlines or Deadlines()
    kw: dict[str, object] = {}
    if autocommit:
        kw["isolation_level"] = "AUTOCOMMIT"
    return pg_deadlines(sa.create_engine(url, future=True, pool_size=pool_size, max_overflow=2,
                                         pool_pre_ping=True, connect_args=connect_args(app, d),
                                         **kw), url, d.per_call())


def chunks(rows: list[T], size: int = 1000) -> list[list[T]]:
    """Rows in parts for multi-row statements (PostgreSQL allows 65,535 parameters in one)."""
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def attempt(cert_id: str, chain: str | None) -> str:
    """How agents and controllers name one attempt at a desired certificate: the certificate,
    and the chain when one is named (a chain switch keeps the certificate id)."""
    return cert_id if chain is None else f"{cert_id} (chain {chain[:16]})"


def attempt_failed(wanted: str) -> str:
    """The words of an agent's reported error that say the attempt `wanted` failed (its
    backoff note); controllers look for them to fail a switch fast."""
    return f"with {wanted} failed"


def _now() -> datetime:
    return datetime.now(UTC)


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Leader:
    """The singleton role `name`: at most one holder at a time, fenced by an epoch.

    `try_lead()` takes the role if free (True) and keeps it while the dedicated session lives;
    `epoch` is this holder's epoch; `fenced()` is the only way to write as the leader.
    """

    def __init__(self, url: str, *, name: str = "controller", holder: str | None = None,
                 deadlines: Deadlines | None = None) -> None:
        self.url, self.name = url, name
        self.holder = holder or holder_name()
        self.deadlines = deadlines or Deadlines()
        self.key = advisory_key(f"certfailover fleet {name}")
        self.epoch: int | None = None
        self._lock_engine = make_engine(url, f"certfailover leader {self.holder}",
                                        self.deadlines, pool_size=1, autocommit=True)
        self._conn: sa.Connection | None = None
        self._engine = make_engine(url, f"certfailover {self.holder}", self.deadlines)

    @property
    def engine(self) -> sa.Engine:
        """The leader's engine for reads and `fenced()` writes (not the lock's session)."""
        return self._engine

    def try_lead(self) -> bool:
        """Take the role if nobody holds it; on success the epoch is incremented. A lost session
        (database restart, network cut) gives the role up: `held` turns False."""
        if self.held:
            return True
        self._drop()
        try:
            conn = self._lock_engine.connect()
            conn.execute(sa.text("SET idle_session_timeout = 0"))
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": self.key}).scalar())
        except sa.exc.SQLAlchemyError as exc:
            self._drop()
            raise StoreError(f"leader {self.name}: cannot reach the database: {exc}") from exc
        if not got:
            conn.close()
            return False
        self._conn = conn
        try:
            self.epoch = self._bump()
        except sa.exc.SQLAlchemyError as exc:
            self._drop()
            raise StoreError(f"leader {self.name}: cannot record the epoch: {exc}") from exc
        return True

    def _bump(self) -> int:
        with self._engine.begin() as conn:
            if conn.execute(sa.select(fleet_epoch.c.epoch).where(fleet_epoch.c.name == self.name)
                            .with_for_update()).first() is None:
                conn.execute(sa.text(
                    "INSERT INTO fleet_epoch (name, epoch, holder, since) VALUES (:n, 0, '', :t)"
                    " ON CONFLICT (name) DO NOTHING"), {"n": self.name, "t": _now()})
            return int(conn.execute(
                fleet_epoch.update().where(fleet_epoch.c.name == self.name)
                .values(epoch=fleet_epoch.c.epoch + 1, holder=self.holder, since=_now())
                .returning(fleet_epoch.c.epoch)).scalar_one())

    @property
    def held(self) -> bool:
        """True while the dedicated session is alive and holds the advisory lock."""
        if self._conn is None:
            return False
        try:
            return advisory_held(self._conn, self.key)
        except sa.exc.SQLAlchemyError:  # lost, or stuck past its deadline: the lead is given up
            return False

    @contextmanager
    def fenced(self) -> Iterator[sa.Connection]:
        """A transaction for the leader's writes, refused (Fenced) unless this holder's epoch is
        still the current one; the epoch row stays locked until commit."""
        if self.epoch is None:
            raise Fenced(f"{self.holder} never led {self.name!r}: write refused")
        with self._engine.begin() as conn:
            n = conn.execute(fleet_epoch.update().where(
                fleet_epoch.c.name == self.name, fleet_epoch.c.epoch == self.epoch)
                .values(since=fleet_epoch.c.since)).rowcount
            if n != 1:
                raise Fenced(f"{self.holder} leads {self.name!r} at epoch {self.epoch}, which is "
                             "no longer current: write refused")
            yield conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sa.exc.SQLAlchemyError:
                pass
        self._lock_engine.dispose()  # a dead session's pooled connection is not reused

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except sa.exc.SQLAlchemyError:
                pass  # the session is gone, and the lock with it
        self._drop()
        self._engine.dispose()

    def session_pid(self) -> int | None:
        """The server pid of the lock's session (tests end it to simulate a dead controller)."""
        if self._conn is None:
            return None
        return int(self._conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


class Leases:
    """Per-unit work leases shared by several controllers (SKIP LOCKED, expiry by the database
    clock)."""

    def __init__(self, engine: sa.Engine, holder: str | None = None) -> None:
        self.engine = engine
        self.holder = holder or holder_name()

    def claim(self, works: Sequence[str], *, ttl: float = 60.0, limit: int = 100) -> list[str]:
        """Take up to `limit` of `works` that are free or expired (ours too, once expired);
        returns them. Leases still held by anyone, this holder included, are not returned."""
        if not works:
            return []
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO fleet_leases (work, holder, expires)"
                " SELECT w, '', 'epoch'::timestamptz FROM unnest(CAST(:ws AS text[])) AS w"
                " ON CONFLICT (work) DO NOTHING"), {"ws": list(works)})
            rows = conn.execute(sa.text(
                "SELECT work FROM fleet_leases WHERE work = ANY(CAST(:ws AS text[]))"
                " AND expires < now() ORDER BY work LIMIT :n FOR UPDATE SKIP LOCKED"),
                {"ws": list(works), "n": limit}).scalars().all()
            got = [str(r) for r in rows]
            if got:
                conn.execute(sa.text(
                    "UPDATE fleet_leases SET holder = :me,"
                    " expires = now() + make_interval(secs => :ttl)"
                    " WHERE work = ANY(CAST(:ws AS text[]))"),
                    {"me": self.holder, "ttl": ttl, "ws": got})
        return got

    def renew(self, works: Sequence[str], *, ttl: float = 60.0) -> list[str]:
        """Extend leases this holder still holds; returns those renewed (a lease that expired
        and was taken by another is not)."""
        if not works:
            return []
        with self.engine.begin() as conn:
            return [str(w) for w in conn.execute(sa.text(
                "UPDATE fleet_leases SET expires = now() + make_interval(secs => :ttl)"
                " WHERE work = ANY(CAST(:ws AS text[])) AND holder = :me AND expires >= now()"
                " RETURNING work"), {"ttl": ttl, "ws": list(works), "me": self.holder}).scalars()]

    def release(self, works: Sequence[str]) -> None:
        """Give leases back (free at once for the other controllers)."""
        if works:
            with self.engine.begin() as conn:
                conn.execute(fleet_leases.update().where(
                    fleet_leases.c.work.in_(list(works)), fleet_leases.c.holder == self.holder)
                    .values(holder="", expires=datetime(1970, 1, 1, tzinfo=UTC)))

    def held(self) -> list[str]:
        with self.engine.connect() as conn:
            return [str(w) for w in conn.execute(sa.text(
                "SELECT work FROM fleet_leases WHERE holder = :me AND expires >= now()"
                " ORDER BY work"), {"me": self.holder}).scalars()]


def notify(conn: sa.Connection, payload: str) -> None:
    """Queue a notice on CHANNEL in the caller's transaction; listeners get it at commit."""
    conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload[:7900]})


def _conninfo(url: str) -> dict[str, object]:
    u = _require_pg(url)
    info: dict[str, object] = {"host": u.host or "localhost", "dbname": u.database or "postgres"}
    if u.port:
        info["port"] = u.port
    if u.username:
        info["user"] = u.username
    if u.password:
        info["password"] = u.password
    info.update({str(k): v for k, v in u.query.items()})
    return info


class Listener:
    """LISTEN on CHANNEL on its own connection. `wait(timeout)` returns the payloads received
    (possibly none) within `timeout` + `deadlines.per_call()`: a wait that received nothing
    pings the server, so a stuck one raises StoreError instead of leaving the listener deaf;
    after a lost connection it reconnects on the next call and returns `[RECONNECTED]` so the
    caller re-reads everything it may have missed."""

    RECONNECTED = "\0reconnected"

    def __init__(self, url: str, *, app: str = "certfailover listener",
                 deadlines: Deadlines | None = None) -> None:
        self.info = _conninfo(url)
        self.where = pg_where(url)
        self.deadlines = deadlines or Deadlines()
        self.app = app
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.connected_once = False

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        args = connect_args(self.app, self.deadlines)
        conn = pg_connect(self.where, self.deadlines.per_call(), autocommit=True, **self.info,
                          **args)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def wait(self, timeout: float) -> list[str]:
        import psycopg

        out: list[str] = []
        if self._conn is None or self._conn.closed:
            try:
                self._conn = self._connect()
            except psycopg.Error as exc:
                raise StoreError(f"listener: cannot connect to the database {self.where}: "
                                 f"{str(exc).strip()}") from exc
            if self.connected_once:
                out.append(self.RECONNECTED)
            self.connected_once = True
        conn = self._conn
        try:
            got: list[str] = []
            with pg_extra_time(conn, timeout):  # the wait itself is not a stuck call
                for n in conn.notifies(timeout=timeout, stop_after=1):
                    got.append(n.payload)
                if got:  # drain what arrived together, then return
                    got.extend(n.payload for n in conn.notifies(timeout=0.05))
            if not got:  # silence: from an idle server, or from a stuck one (bounded ping)
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            self.close()
            if is_deadline(exc):
                raise StoreError(f"listener: {exc}") from exc
            raise StoreError(f"listener: connection lost ({self.where}): "
                             f"{str(exc).strip()}") from exc
        return out + got

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing to do
                conn.close()
