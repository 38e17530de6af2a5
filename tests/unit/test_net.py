"""net.deadline / net.session: a total deadline whichever phase of a request drips."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
import trustme

from certfailover import net
from certfailover.errors import FetchError
from certfailover.fetch import Fetcher
from certfailover_lab.faults import FaultProxy

DRIP = 0.2  # seconds between bytes: far below any per-read timeout used here
LIMIT = 1.0
SLACK = 0.5

Handler = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A TCP server on 127.0.0.1 running `handler(conn, stop)` per connection in a thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str = "/x") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(None)
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _read_head(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def _drip(conn: socket.socket, data: bytes, stop: threading.Event, interval: float = DRIP) -> None:
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        if stop.wait(interval):
            return


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n\r\n"
BODY = b"x" * 40


def drip_status(conn: socket.socket, stop: threading.Event) -> None:
    _read_head(conn)
    _drip(conn, HEAD + BODY, stop)


def drip_headers(conn: socket.socket, stop: threading.Event) -> None:
    _read_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    _drip(conn, HEAD.split(b"\r\n", 1)[1] + BODY, stop)


def drip_body(conn: socket.socket, stop: threading.Event) -> None:
    _read_head(conn)
    conn.sendall(HEAD)
    _drip(conn, BODY, stop)


def hang(conn: socket.socket, stop: threading.Event) -> None:
    _read_head(conn)
    stop.wait(30)


def fast(conn: socket.socket, stop: threading.Event) -> None:
    while _read_head(conn):  # keep-alive
        conn.sendall(HEAD + BODY)


@pytest.fixture()
def serve() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _fails_on_time(call: Callable[[], object], url: str, limit: float = LIMIT) -> Exception:
    started = time.monotonic()
    with pytest.raises((requests.RequestException, FetchError)) as info:
        call()
    took = time.monotonic() - started
    assert limit - 0.1 <= took < limit + SLACK, f"took {took:.2f}s: {info.value}"
    assert url in str(info.value)
    return info.value


@pytest.mark.parametrize("handler", [drip_status, drip_headers, drip_body, hang])
def test_total_deadline_whichever_phase_drips(
    handler: Handler, serve: Callable[[Handler], RawServer]
) -> None:
    srv = serve(handler)
    url = srv.url()
    s = net.session()

    def call() -> None:
        with net.deadline(LIMIT):
            s.get(url, timeout=5)  # 5 s per read: never trips on a 0.2 s drip

    err = _fails_on_time(call, url)
    assert isinstance(err, net.DeadlineExceeded)
    assert isinstance(err, requests.Timeout) and "deadline" in str(err)


def test_streamed_body_drip_ends_at_the_deadline(serve: Callable[[Handler], RawServer]) -> None:
    srv = serve(drip_body)
    s = net.session()
    started = time.monotonic()
    with net.deadline(LIMIT):
        resp = s.get(srv.url(), stream=True, timeout=5)
        with pytest.raises(requests.RequestException):
            resp.content  # noqa: B018 - the read under test
    assert time.monotonic() - started < LIMIT + SLACK


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def test_tls_handshake_drip(tls_ca: trustme.CA, serve: Callable[[Handler], RawServer]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ca.issue_cert("127.0.0.1").configure_cert(ctx)

    def tls_fast(conn: socket.socket, stop: threading.Event) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            fast(tls, stop)

    srv = serve(tls_fast)
    with (
        tls_ca.cert_pem.tempfile() as bundle,
        FaultProxy(srv.port, mode="drip", drip_interval=DRIP) as proxy,
    ):
        url = f"https://127.0.0.1:{proxy.port}/x"
        s = net.session()  # verify per request: REQUESTS_CA_BUNDLE would beat s.verify
        assert s.get(f"https://127.0.0.1:{srv.port}/x", verify=bundle, timeout=5).ok

        def call() -> None:
            with net.deadline(LIMIT):
                s.get(url, verify=bundle, timeout=5)

        err = _fails_on_time(call, url)
        assert isinstance(err, net.DeadlineExceeded)
        proxy.mode = "pass"
        with net.deadline(5):
            assert s.get(url, verify=bundle, timeout=5).content == BODY


def test_plain_session_outside_a_deadline(serve: Callable[[Handler], RawServer]) -> None:
    srv = serve(fast)
    s = net.session(user_agent="certfailover-test")
    resp = s.get(srv.url(), timeout=5)
    assert resp.status_code == 200 and resp.content == BODY
    assert resp.request.headers["User-Agent"] == "certfailover-test"
    assert net.current() is None and net.remaining() is None
    with net.deadline(5):
        assert s.get(srv.url(), timeout=5).content == BODY  # the kept-alive connection again


def test_without_a_deadline_only_per_read_timeouts_apply(
    serve: Callable[[Handler], RawServer],
) -> None:
    def short_drip(conn: socket.socket, stop: threading.Event) -> None:
        _read_head(conn)
        _drip(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", stop, 0.05)

    srv = serve(short_drip)
    started = time.monotonic()
    resp = net.session().get(srv.url(), timeout=0.5)  # takes > 1.5 s, each read < 0.5 s
    assert resp.content == b"ok" and time.monotonic() - started > 1.5


def test_nested_deadlines_keep_the_earliest(serve: Callable[[Handler], RawServer]) -> None:
    now = time.monotonic()
    with net.deadline(10):
        outer = net.current()
        assert outer is not None and 9 < outer - now <= 10.1
        with net.deadline(1):
            inner = net.current()
            assert inner is not None and inner < outer
            with net.deadline(at=now + 100):
                assert net.current() == inner
            with net.deadline():
                assert net.current() == inner
        assert net.current() == outer
    assert net.current() is None
    with pytest.raises(ValueError), net.deadline(1, at=now):
        pass

    srv = serve(hang)
    s = net.session()

    def call() -> None:
        with net.deadline(30), net.deadline(0.6), net.deadline(20):
            s.get(srv.url(), timeout=5)

    _fails_on_time(call, srv.url(), limit=0.6)


def test_expired_deadline_fails_before_connecting(serve: Callable[[Handler], RawServer]) -> None:
    srv = serve(fast)
    with net.deadline(at=time.monotonic() - 1), pytest.raises(net.DeadlineExceeded, match="x"):
        net.session().get(srv.url())


def test_fetcher_header_drip_ends_on_time(serve: Callable[[Handler], RawServer]) -> None:
    srv = serve(drip_headers)
    url = srv.url("/crl")
    err = _fails_on_time(lambda: Fetcher(timeout=LIMIT).fetch(url), url)
    assert isinstance(err, FetchError)
