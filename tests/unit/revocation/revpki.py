"""Helpers for revocation unit tests: a small PKI made with cryptography, and a loopback
HTTP server with fault injection (imported as `revpki`; fixtures live in conftest.py)."""

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

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfailover.checks import CertMaterial, CheckContext
from certfailover.model import Cert, CertState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str, *, parent: tuple[x509.Certificate, Key] | None = None,
            crl_sign: bool = True) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = parent[0].subject if parent else _name(cn)
    signer = parent[1] if parent else key
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=365)).not_valid_after(NOW + timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, True, crl_sign, False,
                                      False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False))
    if parent:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            parent[1].public_key()), False)
    return b.sign(signer, hashes.SHA256()), key


@dataclass
class PKI:
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
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name("leaf.example"))
             .issuer_name(icert.subject).public_key(key.public_key())
             .serial_number(serial or x509.random_serial_number())
             .not_valid_before(NOW - timedelta(days=1)).not_valid_after(not_after)
             .add_extension(x509.ExtendedKeyUsage([eku]), critical=False))
        if aki:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ikey.public_key()), False)
        if cdp:
            b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(u) for u in cdp], None, None, None)]), False)
        if ocsp_urls:
            b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u))
                for u in ocsp_urls]), False)
        return b.sign(ikey, hashes.SHA256())

    def responder(self, *, eku: bool = True, by: tuple[x509.Certificate, Key] | None = None,
                  expired: bool = False) -> tuple[x509.Certificate, Key]:
        icert, ikey = by or (self.issuer, self.issuer_key)
        key = ec.generate_private_key(ec.SECP256R1())
        end = NOW - timedelta(days=1) if expired else NOW + timedelta(days=30)
        b = (x509.CertificateBuilder().subject_name(_name("ocsp responder"))
             .issuer_name(icert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(NOW - timedelta(days=10)).not_valid_after(end))
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False)
        return b.sign(ikey, hashes.SHA256()), key


def make_pki() -> PKI:
    root = make_ca("Test Root")
    inter = make_ca("Test Intermediate", parent=root)
    return PKI(root[0], root[1], inter[0], inter[1])


def make_crl(issuer: x509.Certificate, key: Key, revoked: dict[int, x509.ReasonFlags | None],
             *, this_update: datetime = NOW - timedelta(hours=1),
             next_update: datetime | None = NOW + timedelta(days=1),
             idp: x509.IssuingDistributionPoint | None = None,
             issuer_name: x509.Name | None = None) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer_name or issuer.subject)
         .last_update(this_update))
    if next_update is not None:
        b = b.next_update(next_update)
    if idp is not None:
        b = b.add_extension(idp, critical=True)
    for serial, reason in revoked.items():
        rb = (x509.RevokedCertificateBuilder().serial_number(serial)
              .revocation_date(this_update - timedelta(minutes=1)))
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(key, hashes.SHA256())


def make_ocsp(leaf: x509.Certificate, issuer: x509.Certificate, signer: x509.Certificate,
              signer_key: Key, *, status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
              reason: x509.ReasonFlags | None = None,
              this_update: datetime = NOW - timedelta(hours=1),
              next_update: datetime | None = NOW + timedelta(hours=11),
              include_signer: bool | None = None,
              algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    revoked_at = this_update - timedelta(minutes=5) if status is ocsp.OCSPCertStatus.REVOKED \
        else None
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=issuer, algorithm=algorithm or hashes.SHA1(), cert_status=status,
        this_update=this_update, next_update=next_update, revocation_time=revoked_at,
        revocation_reason=reason).responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
    if include_signer if include_signer is not None else signer is not issuer:
        b = b.certificates([signer])
    from cryptography.hazmat.primitives import serialization
    return b.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def material(leaf: x509.Certificate, issuer: x509.Certificate | None, *,
             ca: str = "ca-a", cid: str | None = None) -> CertMaterial:
    serial = format(leaf.serial_number, "x")
    cert = Cert(id=cid or f"site/{ca}/{serial}", site="site", ca=ca, serial=serial,
                not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
                sha256=leaf.fingerprint(hashes.SHA256()).hex(), key_type="ec-p256",
                issuer_dn=leaf.issuer.rfc4514_string(), state=CertState.ACTIVE,
                created=NOW, path="/nonexistent")
    return CertMaterial(cert=cert, leaf=leaf, chain=(issuer,) if issuer else (),
                        key_matches=True)


def context(now: datetime = NOW, **options: object) -> CheckContext:
    return CheckContext(now=now, domains=("leaf.example",), trust=(), options=options)


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
