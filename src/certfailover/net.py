"""A total deadline for requests-based HTTP.

`requests` timeouts bound each socket operation, so a party that sends one byte every few
seconds keeps a request alive for ever. Inside `deadline(...)`, a session made by `session()`
bounds the whole request instead, whichever phase is slow:

- connect and read timeouts are capped to the time left (CPython's TLS handshake uses the
  socket timeout as one deadline for the whole handshake);
- each urllib3 connection is registered with the deadline while it is in use (from connect or
  request until it goes back to its pool or is closed); one watchdog thread shuts down the
  socket of a connection whose deadline passed, so a blocked read (status line, headers, body,
  handshake) returns at once.

A request that ends because of the deadline raises `DeadlineExceeded` (a `requests.Timeout`)
naming the URL; so does one that completes only after the deadline (the shut socket reads as
EOF, which can end headers early). A streamed body (stream=True) read after `send()` returned
fails with the error urllib3 raises for the shut socket (IncompleteRead, ProtocolError), or,
for a body delimited by the end of the connection, ends early: such a reader checks
`remaining()` after EOF. Outside `deadline()` the session is a plain Session.

    with net.deadline(5):
        net.session().get(url)   # at most ~5 s, however the server drips
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.timeout import Timeout

__all__ = ["DeadlineExceeded", "deadline", "remaining", "session"]

_local = threading.local()


class DeadlineExceeded(requests.Timeout):
    """A request did not finish before the deadline of its `deadline()` block."""


@contextmanager
def deadline(seconds: float | None = None, *, at: float | None = None) -> Iterator[None]:
    """Bound HTTP made by `session()` sessions in this thread: `seconds` from now, or `at`
    (a `time.monotonic()` value). Nested blocks keep the earliest deadline; neither given
    leaves the current one (if any) unchanged."""
    if seconds is not None and at is not None:
        raise ValueError("give seconds or at, not both")
    new = time.monotonic() + seconds if seconds is not None else at
    outer: float | None = getattr(_local, "at", None)
    if new is None or (outer is not None and outer <= new):
        new = outer
    _local.at = new
    try:
        yield
    finally:
        _local.at = outer


def current() -> float | None:
    """The monotonic deadline of this thread, or None outside any `deadline()` block."""
    at: float | None = getattr(_local, "at", None)
    return at


def remaining() -> float | None:
    """Seconds left before this thread's deadline (may be <= 0), or None without one."""
    at = current()
    return None if at is None else at - time.monotonic()


# ------------------------------------------------------------------------------ watchdog

_SOCK_POLL = 0.05  # a connection past its deadline without a socket yet (TCP connect): recheck


class _Watchdog:
    """One daemon thread that shuts down the sockets of connections past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._conns: dict[int, tuple[float, HTTPConnection]] = {}
        self._thread: threading.Thread | None = None

    def register(self, conn: HTTPConnection, at: float) -> None:
        with self._cond:
            self._conns[id(conn)] = (at, conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="certfailover-net-deadline", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def unregister(self, conn: HTTPConnection) -> None:
        with self._cond:
            self._conns.pop(id(conn), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None = None
                for key, (at, conn) in list(self._conns.items()):
                    if at > now:
                        wait = at - now if wait is None else min(wait, at - now)
                        continue
                    sock = conn.sock
                    if sock is None:  # still in the TCP connect (bounded by its timeout)
                        wait = _SOCK_POLL if wait is None else min(wait, _SOCK_POLL)
                        continue
                    del self._conns[key]
                    try:
                        # the plain socket's shutdown, not SSLSocket's (which drops its SSL
                        # object under a reader): a blocked recv or handshake sees EOF
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed
                self._cond.wait(wait)


_watchdog = _Watchdog()


class _Watched(HTTPConnection):
    """Registers itself with the watchdog while in use inside a `deadline()` block."""

    def _watch(self) -> None:
        at = current()
        if at is not None:
            _watchdog.register(self, at)
        else:
            _watchdog.unregister(self)  # reused outside a deadline: nothing to bound

    def connect(self) -> None:
        self._watch()
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watch()
        super().request(*args, **kwargs)

    def close(self) -> None:
        _watchdog.unregister(self)
        super().close()


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Watched

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            _watchdog.unregister(conn)  # idle in the pool: no deadline applies
        super()._put_conn(conn)


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            _watchdog.unregister(conn)
        super()._put_conn(conn)


_POOLS: Mapping[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _HTTPSPool}


# ------------------------------------------------------------------------------- adapter


def _cap(value: object, left: float) -> float:
    return min(value, left) if isinstance(value, int | float) else left


class _DeadlineAdapter(HTTPAdapter):
    """HTTPAdapter whose pools use watched connections and whose timeouts respect the deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, PoolManager):  # SOCKS managers: timeouts capped only
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        at = current()
        if at is None:
            return super().send(request, stream, timeout, verify, cert, proxies)
        url = request.url
        left = at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{url}: deadline reached before the request", request=request)
        if isinstance(timeout, tuple):
            connect, read = timeout
        elif isinstance(timeout, Timeout):
            connect, read = timeout.connect_timeout, timeout.read_timeout
        else:
            connect = read = timeout
        capped = (_cap(connect, left), _cap(read, left))
        try:
            resp = super().send(request, stream, capped, verify, cert, proxies)
            if not stream:
                _ = resp.content  # read the body here, under the same error mapping
        except requests.RequestException as e:
            late = time.monotonic() - at
            if late >= -0.01:
                raise DeadlineExceeded(
                    f"{url}: deadline exceeded ({late:+.2f}s): {type(e).__name__}: {e}",
                    request=request,
                ) from e
            raise
        late = time.monotonic() - at
        if late >= 0:
            # the watchdog's shutdown reads as EOF, and EOF can end headers (or a body without
            # a length) early: a response finished after the deadline is not trusted
            resp.close()
            raise DeadlineExceeded(
                f"{url}: deadline exceeded ({late:+.2f}s) while reading the response",
                request=request,
            )
        return resp


def session(*, user_agent: str | None = None) -> requests.Session:
    """A requests.Session whose requests respect `deadline()` (plain outside one)."""
    s = requests.Session()
    adapter = _DeadlineAdapter()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    if user_agent is not None:
        s.headers["User-Agent"] = user_agent
    return s
