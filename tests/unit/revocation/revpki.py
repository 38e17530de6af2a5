"""Helpers for revocation unit tests: the kit's PKI (certfailover.testing.pki) at a fixed time
in the (certificate, key) shape these tests use, and a loopback HTTP server with fault
injection (imported as `revpki`; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfailover.checks import CheckContext
from certfailover.testing import pki

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Key = ec.EllipticCurvePrivateKey


def make_ca(cn: str, *, crl_sign: bool = True) -> tuple[x509.Certificate, Key]:
    """A root valid a year either side of NOW, as (certificate, key)."""
    ca = pki.make_root(cn, key=ec.generate_private_key(ec.SECP256R1()),
                       not_before=NOW - timedelta(days=365), days=730, crl_sign=crl_sign)
    return ca.cert, ca.key  # type: ignore[return-value]  # an EC key, made just above


@dataclass
class PKI:
    """The revocation tests' shape: a root and an issuing CA, each as (certificate, key)."""

    root: x509.Certificate
    root_key: Key
    issuer: x509.Certificate
    issuer_key: Key

    def leaf(self, *, serial: int | None = None, cdp: tuple[str, ...] = (),
             ocsp_urls: tuple[str, ...] = (), aki: bool = True,
             issuer: tuple[x509.Certificate, Key] | None = None,
             eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
             not_after: datetime = NOW + timedelta(days=90)) -> x509.Certificate:
        icert, ikey = issuer or (self.issuer, self.issuer_key)
        leaf, _ = pki.make_leaf(pki.Authority(icert, ikey), ["leaf.example"], serial=serial,
                                not_before=NOW - timedelta(days=1), not_after=not_after,
                                crl_urls=cdp, ocsp_url=ocsp_urls[0] if ocsp_urls else None,
                                ekus=[eku], aki=aki)
        return leaf

    def responder(self, *, eku: bool = True, by: tuple[x509.Certificate, Key] | None = None,
                  expired: bool = False) -> tuple[x509.Certificate, Key]:
        """A delegated OCSP responder certificate issued by `by` (default: the issuing CA)."""
        icert, ikey = by or (self.issuer, self.issuer_key)
        key = ec.generate_private_key(ec.SECP256R1())
        end = NOW - timedelta(days=1) if expired else NOW + timedelta(days=30)
        b = (x509.CertificateBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocsp responder")]))
             .issuer_name(icert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(NOW - timedelta(days=10)).not_valid_after(end))
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False)
        return b.sign(ikey, hashes.SHA256()), key


def make_pki() -> PKI:
    root = pki.make_root("Test Root", not_before=NOW - timedelta(days=365), days=730)
    inter = pki.make_intermediate(root, "Test Intermediate", path_length=None,
                                  not_before=NOW - timedelta(days=365), days=730)
    return PKI(root.cert, root.key, inter.cert, inter.key)  # type: ignore[arg-type]


def make_crl(issuer: x509.Certificate, key: Key, revoked: dict[int, x509.ReasonFlags | None],
             **kw: Any) -> x509.CertificateRevocationList:
    """The kit's CRL, with NOW as the time (see certfailover.testing.pki.make_crl)."""
    return pki.make_crl(pki.Authority(issuer, key), revoked, now=NOW, **kw)


def make_ocsp(leaf: x509.Certificate, issuer: x509.Certificate, signer: x509.Certificate,
              signer_key: Key, **kw: Any) -> bytes:
    """The kit's OCSP response, with NOW as the time (see certfailover.testing.pki.make_ocsp)."""
    return pki.make_ocsp(leaf, issuer, signer, signer_key, now=NOW, **kw)


def context(now: datetime = NOW, **fields: Any) -> CheckContext:
    """A check context for leaf.example at `now`; `fields` are CheckContext's other fields."""
    return CheckContext(now=now, domains=("leaf.example",), trust=(), **fields)


# -- loopback HTTP server -------------------------------------------------------------------

Handler = Callable[[BaseHTTPRequestHandler, bytes], None]


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the body
    trickle: float = 0.0  # seconds between single bytes of the body
    reset: bool = False  # close the connection abruptly after the headers
    hits: int = 0


class TestServer:
    __test__ = False

    def __init__(self) -> None:
        self.routes: dict[str, Route | Handler] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    prefix = next((p for p in outer.routes if p.endswith("/*")
                                   and self.path.startswith(p[:-1])), None)
                    route = outer.routes.get(prefix) if prefix else None
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if callable(route):
                    route(self, body)
                    return
                route.hits += 1
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in route.headers:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if route.reset:
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    os.close(self.connection.detach())  # RST, not FIN
                    self.close_connection = True
                    return
                if route.trickle:
                    for i in range(len(route.body)):
                        self.wfile.write(route.body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(route.trickle)
                else:
                    self.wfile.write(route.body)

            do_GET = do_POST = _serve

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
