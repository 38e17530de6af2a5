"""Client-side deadlines on PostgreSQL: a bounded wait for every round trip of a connection.

statement_timeout and TCP keepalives do not bound a call to a backend that is alive but stuck
(stopped, swapping, wedged in the kernel): TCP stays up and the statement timer never runs. So
every round trip of a psycopg connection made here (a statement, a commit, a ping, LISTEN, a
wait for notices) is registered with one watchdog thread while it runs; past its deadline the
watchdog shuts the socket down, the blocked wait reads EOF at once, the connection is closed
and the call raises `DatabaseDeadline` (a StoreError, and to SQLAlchemy a disconnect: the pool
discards the connection). Connecting is bounded by libpq's connect_timeout.

Used by the store's own engine (store.db), the daemon lock (store.lock) and the fleet's
engines (fleet.coord).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from ..errors import StoreError

if TYPE_CHECKING:  # psycopg is optional (the postgres extra)
    import psycopg
    from psycopg.abc import PQGen

RV = TypeVar("RV")

__all__ = ["PG_CALL_DEADLINE", "DatabaseDeadline", "is_deadline", "pg_connect", "pg_deadlines",
           "pg_extra_time", "pg_where"]


PG_CALL_DEADLINE = 15.0  # seconds for one round trip, unless a caller gives its own


def pg_where(url: str) -> str:
    """host:port/database of a URL, for messages (never the user or password)."""
    u = sa.engine.make_url(url)
    host = u.host or str(u.query.get("host") or "localhost")
    return f"{host}:{u.port}/{u.database}" if u.port else f"{host}/{u.database}"


def _deadline_text(where: str, seconds: float) -> str:
    return (f"database {where}: no answer within the {seconds:g} s client-side deadline; "
            "the connection was dropped")


class DatabaseDeadline(StoreError, sa.exc.OperationalError):
    """A database call got no answer within its client-side deadline (the connection is closed
    and discarded). A StoreError; also an OperationalError for code that catches SQLAlchemy's
    errors around a whole transaction."""

    def __init__(self, where: str, seconds: float, orig: BaseException) -> None:
        sa.exc.OperationalError.__init__(self, None, None, orig, connection_invalidated=True)
        self.where, self.seconds = where, seconds
        self.message = _deadline_text(where, seconds)
        self.args = (self.message,)

    def __str__(self) -> str:
        return self.message


class _Watch:
    __slots__ = ("at", "fired", "sock")

    def __init__(self, sock: socket.socket, at: float) -> None:
        self.sock, self.at, self.fired = sock, at, False


class _Watchdog:
    """One daemon thread that shuts down the sockets of calls past their deadline (see net.py's
    watchdog for HTTP)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    def watch(self, fd: int, at: float) -> _Watch:
        # a duplicate of the descriptor: the watchdog never shuts a reused descriptor number
        w = _Watch(socket.socket(fileno=os.dup(fd)), at)
        with self._cond:
            self._watches.add(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="certfailover-pg-deadline")
                self._thread.start()
            self._cond.notify()
        return w

    def unwatch(self, w: _Watch) -> None:
        with self._cond:
            self._watches.discard(w)
        w.sock.close()  # the duplicate only: the connection's own descriptor stays open

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None = None
                for w in list(self._watches):
                    if w.at > now:
                        wait = w.at - now if wait is None else min(wait, w.at - now)
                        continue
                    self._watches.discard(w)
                    w.fired = True
                    with contextlib.suppress(OSError):  # the blocked wait reads EOF
                        w.sock.shutdown(socket.SHUT_RDWR)
                self._cond.wait(wait)


_watchdog = _Watchdog()


class _PgDeadlineState:
    """Per connection: where it goes (for messages), its deadline, extra time for one wait."""

    __slots__ = ("extra", "seconds", "where")

    def __init__(self, where: str, seconds: float) -> None:
        self.where, self.seconds, self.extra = where, seconds, 0.0


@functools.cache
def _connection_class() -> type[psycopg.Connection[tuple[Any, ...]]]:
    import psycopg

    class PgDeadlineError(psycopg.OperationalError):
        """The call ran past its client-side deadline (the connection is closed)."""

    class DeadlineConnection(psycopg.Connection[tuple[Any, ...]]):
        """A psycopg connection whose every wait on the server has a total deadline."""

        deadline: _PgDeadlineState = _PgDeadlineState("?", PG_CALL_DEADLINE)
        Expired = PgDeadlineError

        def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
            d = self.deadline
            seconds = d.seconds + d.extra
            try:
                fd = self.pgconn.socket
            except psycopg.Error:  # closed: psycopg raises its own error
                return super().wait(gen, *args, **kwargs)
            w = _watchdog.watch(fd, time.monotonic() + seconds)
            try:
                out = super().wait(gen, *args, **kwargs)
            except Exception as exc:
                if not w.fired:
                    raise
                self.close()
                raise PgDeadlineError(_deadline_text(d.where, seconds)) from exc
            finally:
                _watchdog.unwatch(w)
            if w.fired:  # answered as the socket was shut: the connection is gone anyway
                self.close()
                raise PgDeadlineError(_deadline_text(d.where, seconds))
            return out

    return DeadlineConnection


def pg_connect(where: str, seconds: float, *args: Any,
               **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
    """A psycopg connection whose calls each have a `seconds` client-side deadline."""
    conn = _connection_class().connect(*args, **kwargs)
    conn.deadline = _PgDeadlineState(where, seconds)  # type: ignore[attr-defined]
    return conn


@contextmanager
def pg_extra_time(conn: psycopg.Connection[tuple[Any, ...]], seconds: float) -> Iterator[None]:
    """Allow the calls inside the block `seconds` more (e.g. a wait for notices)."""
    d: _PgDeadlineState | None = getattr(conn, "deadline", None)
    if d is None:
        yield
        return
    d.extra = seconds
    try:
        yield
    finally:
        d.extra = 0.0


def is_deadline(exc: BaseException) -> bool:
    """True for the psycopg error of a call that ran past its client-side deadline."""
    return isinstance(exc, _connection_class().Expired)  # type: ignore[attr-defined]


def pg_deadlines(engine: sa.Engine, url: str, seconds: float = PG_CALL_DEADLINE) -> sa.Engine:
    """Give every call of `engine`'s connections a `seconds` client-side deadline; a call past
    it raises DatabaseDeadline and its connection is discarded (not returned to the pool).
    psycopg (3) connections only: an engine with another driver is returned unchanged."""
    if engine.dialect.driver != "psycopg":
        return engine
    where = pg_where(url)

    @sa.event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, rec: Any, cargs: Any, cparams: Any) -> Any:
        return pg_connect(where, seconds, *cargs, **cparams)

    @sa.event.listens_for(engine, "handle_error")
    def _error(ctx: sa.engine.ExceptionContext) -> BaseException | None:
        orig = ctx.original_exception
        if ctx.is_pre_ping or not is_deadline(orig):
            return None  # a stuck pooled connection found by the ping: replaced, silently
        ctx.is_disconnect = True
        return DatabaseDeadline(where, seconds, orig)

    return engine
