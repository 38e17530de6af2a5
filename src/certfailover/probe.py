"""What a server really serves: a TLS handshake, no verification, the chain as sent.

`key_type` ("ec" / "rsa") restricts the handshake to TLS 1.2 with ECDSA- or RSA-
authenticated cipher suites, so a server holding both an ECDSA and an RSA certificate for one
name shows each of them in turn.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from .servers.base import Endpoint

__all__ = ["KEY_TYPES", "ProbeError", "leaf_sha256", "served_chain"]

KEY_TYPES = {
    "ec": b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
          b"ECDHE-ECDSA-CHACHA20-POLY1305",
    "rsa": b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
           b"ECDHE-RSA-CHACHA20-POLY1305",
}


class ProbeError(OSError):
    """The handshake failed: names the endpoint and SNI."""


def leaf_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _wait(sock: socket.socket, deadline: float, *, read: bool, where: str) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProbeError(f"{where}: TLS handshake timed out")
    r, w, _ = select.select([sock] if read else [], [] if read else [sock], [], left)
    if not r and not w:
        raise ProbeError(f"{where}: TLS handshake timed out")


_CONTEXTS: dict[str | None, SSL.Context] = {}
_CONTEXTS_LOCK = threading.Lock()


def _context(key_type: str | None) -> SSL.Context:
    """One client context per key type, made once: a context is read-only once set up, so
    concurrent handshakes share it (each has its own connection), and a client context never
    resumes a session unless told to, so every handshake shows what the server serves now."""
    if key_type is not None and key_type not in KEY_TYPES:
        raise ValueError(f"key_type must be one of {sorted(KEY_TYPES)}, not {key_type!r}")
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key_type)
        if ctx is None:
            ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
            ctx.set_verify(SSL.VERIFY_NONE)  # no callback: nothing is judged here
            if key_type is not None:
                ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
                ctx.set_cipher_list(KEY_TYPES[key_type])
            _CONTEXTS[key_type] = ctx
        return ctx


def served_chain(endpoint: Endpoint, sni: str, *, timeout: float = 5.0,
                 key_type: str | None = None) -> list[x509.Certificate]:
    """Handshake with `endpoint` sending `sni`; return the certificates served, leaf first."""
    ctx = _context(key_type)
    where = f"{endpoint} (SNI {sni})"
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"{where}: cannot connect: {exc}") from exc
    try:
        sock.settimeout(timeout)
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(sni.encode("idna"))
        conn.set_connect_state()
        deadline = time.monotonic() + timeout
        while True:  # the socket has a timeout, so it is non-blocking underneath
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                _wait(sock, deadline, read=True, where=where)
            except SSL.WantWriteError:
                _wait(sock, deadline, read=False, where=where)
            except (SSL.Error, OSError) as exc:
                raise ProbeError(f"{where}: TLS handshake failed: {exc!r}") from exc
        chain = conn.get_peer_cert_chain(as_cryptography=True)
        if not chain:
            raise ProbeError(f"{where}: the server sent no certificate")
        try:
            conn.shutdown()
        except (SSL.Error, OSError):  # close_notify is a courtesy; the chain is what counts
            pass
        return list(chain)
    finally:
        sock.close()
