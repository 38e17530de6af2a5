"""One daemon per store: `certfailover run` holds an exclusive lock for its whole life.

* SQLite / default store: `flock(LOCK_EX | LOCK_NB)` on `<store>/daemon.lock` (mode 0600). The
  file holds the holder's pid, host and start time, for the second process's error message.
  The kernel drops the lock when the holder dies (even kill -9): no stale lock to clean up.
  flock locks belong to an open file description, so a second acquisition in the same process
  is refused too.
* PostgreSQL store: `pg_try_advisory_lock(key)` (session level, key derived from a fixed name)
  on a dedicated connection kept open for the daemon's life; the lock dies with the session.
  The connection's `application_name` carries pid and host; the refused process reads it back
  from pg_locks joined with pg_stat_activity.

Read-only commands and the operator's emergency commands never take this lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import sqlalchemy as sa

from ..errors import LockError, StoreError
from .pgdeadline import (
    PG_CALL_DEADLINE,
    pg_deadlines,
)

if TYPE_CHECKING:  # psycopg is optional (the postgres extra); config imports the store

    from ..config import Config

LOCK_FILE = "daemon.lock"
ADVISORY_NAME = "certfailover daemon"
RV = TypeVar("RV")


def advisory_key(name: str = ADVISORY_NAME) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, derived from `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _key_parts(key: int) -> dict[str, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits)."""
    return {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}


def advisory_held(conn: sa.Connection, key: int) -> bool:
    """True if `conn`'s session holds the session-level advisory lock `key`."""
    return bool(conn.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND pid = pg_backend_pid() AND objsubid = 1"
        " AND classid::bigint = :hi AND objid::bigint = :lo)"), _key_parts(key)).scalar())


def _since() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _describe(pid: str | None, host: str | None, since: str | None) -> str:
    text = f"pid {pid or '?'} on host {host or '?'}"
    return f"{text}, since {since}" if since else text


class DaemonLock:
    """A held daemon lock; `release()` (or leaving the `with` block) gives it up."""

    where: str

    def release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def held(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class FileLock(DaemonLock):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise LockError(self.where, holder) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{self.path}: cannot lock: {exc}") from exc
        self._fd: int | None = fd
        try:
            os.fchmod(fd, 0o600)
        except OSError:  # not ours (e.g. created by another user): the lock still holds
            pass
        text = f"pid={os.getpid()}\nhost={socket.gethostname()}\nsince={_since()}\n".encode()
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))

    @staticmethod
    def _read_holder(fd: int) -> str:
        try:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
        except OSError:
            text = ""
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return _describe(fields.get("pid"), fields.get("host"), fields.get("since"))

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # still locked: nobody reads a half-written holder
        except OSError:
            pass
        os.close(fd)  # closing the only descriptor drops the flock


_APP_RE = re.compile(r"pid=(\S+) host=(\S+)")


class PostgresLock(DaemonLock):
    """The advisory lock on its own session; every call on it (taking the lock, `held`,
    `release`) has a `deadline` in seconds on the client side (a stuck server: `held` is False,
    taking it raises DatabaseDeadline), connecting a `connect_timeout`."""

    def __init__(self, url: str, *, key: int | None = None, deadline: float = PG_CALL_DEADLINE,
                 connect_timeout: int = 5) -> None:
        self.key = advisory_key() if key is None else key
        try:
            shown = sa.engine.make_url(url).render_as_string(hide_password=True)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"database URL {url!r}: {exc}") from exc
        self.where = f"the daemon lock of {shown}"
        # application_name is cut at 63 bytes by the server: pid and host come first
        app = f"certfailover pid={os.getpid()} host={socket.gethostname()}"[:63]
        self._engine: sa.Engine | None = pg_deadlines(sa.create_engine(
            url, future=True, pool_size=1, max_overflow=0, pool_pre_ping=False,
            isolation_level="AUTOCOMMIT",
            connect_args={"application_name": app, "connect_timeout": max(2, connect_timeout)}),
            url, deadline)
        try:
            self._conn: sa.Connection | None = self._engine.connect()
            # a server-wide idle_session_timeout would end the session and with it the lock
            self._conn.execute(sa.text("SET idle_session_timeout = 0"))
            got = bool(self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                          {"k": self.key}).scalar())
            holder = "" if got else self._holder(self._conn)
        except sa.exc.SQLAlchemyError as exc:
            self._dispose()
            raise StoreError(f"{shown}: cannot take the daemon lock: {exc}") from exc
        if not got:
            self._dispose()
            raise LockError(self.where, holder)

    def _holder(self, conn: sa.Connection) -> str:
        row = conn.execute(sa.text(
            "SELECT a.application_name, a.backend_start, host(a.client_addr)"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid::bigint = :hi AND l.objid::bigint = :lo LIMIT 1"),
            _key_parts(self.key)).first()
        if row is None:  # released in between, or not visible to this role
            return _describe(None, None, None)
        m = _APP_RE.search(row[0] or "")
        since = row[1].astimezone(UTC).replace(microsecond=0).isoformat() if row[1] else None
        text = _describe(m.group(1) if m else None, m.group(2) if m else None, since)
        return f"{text}, connected from {row[2]}" if row[2] else text

    @property
    def held(self) -> bool:
        """True while the lock's session is alive and still holds the advisory lock."""
        if self._conn is None:
            return False
        try:
            return advisory_held(self._conn, self.key)
        except sa.exc.SQLAlchemyError:  # a lost or stuck session (past its deadline): not held
            return False

    def _dispose(self) -> None:
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            try:
                conn.close()
            except sa.exc.SQLAlchemyError:
                pass
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except sa.exc.SQLAlchemyError:
                pass  # the session is gone, and the lock with it
        self._dispose()


def acquire_daemon_lock(config: Config) -> DaemonLock:
    """Take the store's daemon lock, or raise LockError naming the store and the holder."""
    if config.database.startswith("postgresql"):
        return PostgresLock(config.database)
    return FileLock(config.store / LOCK_FILE)
