"""A TCP fault proxy in front of a real lab service (Pebble, a web server, a responder).

`FaultProxy(target_port)` listens on 127.0.0.1 on a free port and, depending on `mode` (which
can be switched at any time), does to each new connection:

    pass     forward both ways
    refuse   nothing listens: connection refused
    reset    accept and reset at once (RST)
    hang     accept and read, never answer
    drip     forward, but the service's bytes reach the client one per `drip_interval`
             seconds (the TLS handshake included: this is TCP, below TLS)
    http500  answer any HTTP request with a 500, without forwarding
    html     answer any HTTP request with a 200 text/html page, without forwarding

http500 and html speak TLS when `tls=(cert_pem, key_pem)` is given (e.g. the certificate of
the service itself, so clients trust the proxy as they trust the service), plain HTTP
otherwise. Switching the mode severs the connections opened under the previous mode, so the
fault applies at once even to keep-alive clients. `accepted` counts accepted connections.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, get_args

from .ports import free_port

__all__ = ["MODES", "FaultProxy", "Mode"]

logger = logging.getLogger(__name__)

Mode = Literal["pass", "refuse", "reset", "hang", "drip", "http500", "html"]
MODES: frozenset[str] = frozenset(get_args(Mode))

_TICK = 0.05  # how often the accept loop looks at the mode
_MAX_HEAD = 64 * 1024
_PAGE = b"<!doctype html><title>Maintenance</title><p>We will be back soon.</p>\n"


class FaultProxy:
    """A switchable TCP forwarder on 127.0.0.1 in front of `target_host:target_port`."""

    def __init__(
        self,
        target_port: int,
        *,
        mode: Mode = "pass",
        drip_interval: float = 2.0,
        tls: tuple[bytes, bytes] | None = None,
        target_host: str = "127.0.0.1",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {sorted(MODES)})")
        self.target = target_port
        self.target_host = target_host
        self.drip_interval = drip_interval
        self._tls = _server_context(*tls) if tls is not None else None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._mode: Mode = mode
        self._generation = 0  # bumped at each mode switch; connections of older ones are cut
        self._applied = -1  # the generation whose listener state the accept loop has set up
        self._conns: dict[socket.socket, int] = {}
        self._accepted = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self.port = free_port()
        if mode != "refuse":
            self._listener = self._listen()
        self._thread = threading.Thread(
            target=self._serve, name=f"faultproxy-{self.port}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ public

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {sorted(MODES)})")
        with self._lock:
            if mode == self._mode:
                return
            self._mode = mode
            self._generation += 1
            gen = self._generation
            old = [s for s, g in self._conns.items() if g != gen]
        for s in old:
            _shut(s)
        # the accept loop opens or closes the listener; wait so "refuse" holds on return
        with self._cond:
            ok = self._cond.wait_for(lambda: self._applied >= gen or self._stop.is_set(), 5)
        if not ok:
            raise RuntimeError(f"fault proxy on port {self.port} could not switch to {mode!r}")

    @property
    def accepted(self) -> int:
        """Connections accepted so far (in every mode)."""
        return self._accepted

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            _shut(s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy(port={self.port}, target={self.target}, mode={self._mode!r})"

    # --------------------------------------------------------------- listening

    def _listen(self) -> socket.socket:
        sock = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        sock.settimeout(_TICK)
        return sock

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    refuse, seen = self._mode == "refuse", self._generation
                if refuse and self._listener is not None:
                    self._listener.close()
                    self._listener = None
                elif not refuse and self._listener is None:
                    try:
                        self._listener = self._listen()
                    except OSError as e:  # port taken meanwhile: retry
                        logger.warning("fault proxy: cannot listen on %d again: %s", self.port, e)
                        self._stop.wait(_TICK)
                        continue
                with self._cond:
                    self._applied = seen
                    self._cond.notify_all()
                if self._listener is None:
                    self._stop.wait(_TICK)
                    continue
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    continue
                client.settimeout(None)
                with self._lock:
                    self._accepted += 1
                    mode, gen = self._mode, self._generation
                    self._conns[client] = gen
                threading.Thread(target=self._handle, args=(client, mode, gen), daemon=True).start()
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            with self._cond:
                self._cond.notify_all()

    # ----------------------------------------------------------------- handlers

    def _track(self, sock: socket.socket, gen: int) -> bool:
        with self._lock:
            if gen != self._generation or self._stop.is_set():
                return False
            self._conns[sock] = gen
            return True

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._conns.pop(s, None)
        for s in socks:
            _shut(s)
            s.close()

    def _handle(self, client: socket.socket, mode: Mode, gen: int) -> None:
        try:
            if mode in ("reset", "refuse"):  # refuse: accepted while the listener was closing
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with self._lock:
                    self._conns.pop(client, None)
                client.close()  # no FIN first: the peer sees a reset
                return
            if mode == "hang":
                while client.recv(65536) and not self._stop.is_set():
                    pass
            elif mode in ("http500", "html"):
                self._answer(client, mode)
            elif mode in ("pass", "drip"):
                self._forward(client, gen, drip=mode == "drip")
                return  # the pipes own both sockets now
        except OSError:
            pass
        self._forget(client)

    def _forward(self, client: socket.socket, gen: int, *, drip: bool) -> None:
        try:
            upstream = socket.create_connection((self.target_host, self.target), timeout=5)
        except OSError:
            self._forget(client)  # the service is down: the client sees the connection end
            return
        upstream.settimeout(None)
        if not self._track(upstream, gen):
            self._forget(client, upstream)
            return
        done = threading.Barrier(2, action=lambda: self._forget(client, upstream))
        threading.Thread(target=self._pipe, args=(client, upstream, 0.0, done), daemon=True).start()
        interval = self.drip_interval if drip else 0.0
        threading.Thread(
            target=self._pipe, args=(upstream, client, interval, done), daemon=True
        ).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, interval: float, done: threading.Barrier
    ) -> None:
        try:
            while data := src.recv(65536):
                if not interval:
                    dst.sendall(data)
                    continue
                for i in range(len(data)):
                    dst.sendall(data[i : i + 1])
                    if self._stop.wait(interval):
                        return
        except OSError:
            pass
        finally:
            for s in (src, dst):  # one side ended: end both directions
                _shut(s)
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait(timeout=10)

    def _answer(self, client: socket.socket, mode: Mode) -> None:
        client.settimeout(5)
        if self._tls is None:
            self._respond(client, mode)
            return
        with self._tls.wrap_socket(client, server_side=True) as conn:
            self._respond(conn, mode)
            with contextlib.suppress(OSError, ValueError):
                conn.unwrap()

    @staticmethod
    def _respond(conn: socket.socket, mode: Mode) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
            chunk = conn.recv(65536)
            if not chunk:
                return
            head += chunk
        header, _, body = head.partition(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        while len(body) < length:  # read the request body: closing on unread data resets
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        if mode == "http500":
            status, ctype, payload = b"500 Internal Server Error", b"text/plain", b"fault proxy\n"
        else:
            status, ctype, payload = b"200 OK", b"text/html; charset=utf-8", _PAGE
        conn.sendall(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(payload)).encode()
            + b"\r\nConnection: close\r\n\r\n" + payload
        )  # fmt: skip


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS server context from PEM bytes (the ssl module loads only files: a private tmp)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="faultproxy-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        ctx.load_cert_chain(cert, key)
    return ctx
