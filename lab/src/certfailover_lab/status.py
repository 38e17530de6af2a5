"""A status service for one Pebble CA: OCSP, a CRL and ARI `renewalInfo`, as a real CA has.

Pebble 2.4 serves none of them. This service reads revocation status live from Pebble's
management API (`/cert-status-by-serial/<hex>`) and signs OCSP responses and the CRL with
Pebble's intermediate key (`/intermediate-keys/0`), so revocation reaches certfailover
through the same channels as in production.

Endpoints (plain HTTP on `host:port`):

* `POST /ocsp` and `GET /ocsp/<url-encoded base64 request>`: RFC 6960, signed by the issuer.
* `GET /crl`: a DER CRL with an issuingDistributionPoint naming `crl_url`, revoked entries for
  every *known* serial that Pebble reports revoked. Pebble cannot list its certificates, so a
  serial becomes known when it is asked about over OCSP or ARI, or via `add_known_serial`.
  nextUpdate is thisUpdate + `crl_validity` (e.g. 7 days, as public CAs publish); the CRL is
  re-published (new thisUpdate, CRLNumber, ETag) at once when the revoked set changes, else at
  half its validity. Sends `ETag` and `Last-Modified`; answers `304` to a matching
  `If-None-Match` (or, without one, an `If-Modified-Since` not older than the CRL).
* `GET /renewalInfo/<ari-id>`: RFC 9773 JSON. The window is the one set with
  `suggest_window`, else two thirds into the certificate's lifetime; `Retry-After` is
  `retry_after` seconds.

Counters (`counters()`): requests, 200s / 304s and bytes sent (status line + headers +
body) per endpoint kind ("crl", "ocsp", "ari", "other"), for benchmarks.

Port choice (Pebble needs the OCSP URL at start, this service needs Pebble's management
URL): take `port = lab.ports.free_port()`, start Pebble with `ocsp_url_at(port)`, then
`StatusService(..., port=port).start()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

import requests
from asn1crypto.keys import PublicKeyInfo
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp

from certfailover.errors import CertFailoverError
from certfailover.model import Clock, utcnow
from certfailover.revocation.ari import ari_cert_id

__all__ = ["StatusService", "ocsp_url_at"]

_REASONS = {
    1: x509.ReasonFlags.key_compromise, 2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed, 4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation, 6: x509.ReasonFlags.certificate_hold,
    9: x509.ReasonFlags.privilege_withdrawn, 10: x509.ReasonFlags.aa_compromise,
}


def ocsp_url_at(port: int, host: str = "127.0.0.1") -> str:
    """The OCSP URL a StatusService on `host:port` will serve (give it to PebbleCA)."""
    return f"http://{host}:{port}/ocsp"


_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?\s*(Z|[+-]\d\d:?\d\d)?")


def _go_time(value: object, default: datetime) -> datetime:
    """Parse Pebble's times: Go's "2006-01-02 15:04:05.999999999 -0700 MST" or RFC 3339."""
    if not isinstance(value, str):
        return default
    m = _GO_TIME.match(value.strip())
    if not m:
        return default
    frac = (m.group(3) or "")[:7]
    zone = m.group(4) or "Z"
    zone = "+00:00" if zone == "Z" else zone[:3] + ":" + zone[-2:]
    try:
        t = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{zone}")
    except ValueError:
        return default
    if t.year < 2000:  # Go's zero time: not revoked
        return default
    return t.astimezone(UTC)


def _kind(path: str) -> str:
    p = path.split("?", 1)[0]
    if p == "/crl":
        return "crl"
    if p.startswith("/ocsp"):
        return "ocsp"
    if p.startswith("/renewalInfo/"):
        return "ari"
    return "other"


def _not_modified(if_none_match: str | None, if_modified_since: str | None, etag: str,
                  last_modified: datetime) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if if_none_match is not None:
        return etag in (t.strip() for t in if_none_match.split(","))
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= since


class StatusService:
    """OCSP + CRL + ARI for one Pebble CA. Threaded; start()/stop() or a context manager."""

    def __init__(self, ca_name: str, management_url: str, ca_bundle: str | Path | None, *,
                 host: str = "127.0.0.1", port: int = 0,
                 crl_validity: timedelta = timedelta(minutes=10),
                 ocsp_validity: timedelta = timedelta(hours=1), retry_after: int = 60,
                 clock: Clock = utcnow) -> None:
        self.ca_name = ca_name
        self.management_url = management_url.rstrip("/")
        self.ca_bundle = str(ca_bundle) if ca_bundle is not None else None
        self.host = host
        self.port = port
        self.crl_validity = crl_validity
        self.ocsp_validity = ocsp_validity
        self.retry_after = retry_after
        self.clock = clock
        self.requests_served = 0
        self.request_log: list[tuple[str, str]] = []  # (method, path) of every request
        self._counts: Counter[str] = Counter()  # "<kind>.requests", "<kind>.<status>", ...
        self._known: set[int] = set()
        self._windows: dict[str, tuple[datetime, datetime, str | None]] = {}
        self._lock = threading.Lock()
        self._crl_cache: tuple[frozenset[tuple[int, int, str]], datetime, bytes] | None = None
        self._crl_number = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.issuer: x509.Certificate | None = None
        self._key: CertificateIssuerPrivateKeyTypes | None = None

    # -- public ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ocsp_url(self) -> str:
        return ocsp_url_at(self.port, self.host)

    @property
    def crl_url(self) -> str:
        return f"{self.base_url}/crl"

    @property
    def ari_url(self) -> str:
        return f"{self.base_url}/renewalInfo"

    def counters(self) -> dict[str, int]:
        """Per endpoint kind (crl, ocsp, ari, other): "<kind>.requests", "<kind>.<status>"
        (e.g. "crl.200", "crl.304"), "<kind>.bytes" (status line + headers + body) and
        "<kind>.body_bytes"."""
        with self._lock:
            return dict(self._counts)

    def reset_counters(self) -> None:
        with self._lock:
            self._counts.clear()

    def add_known_serial(self, serial: int) -> None:
        """Make `serial` appear on the CRL once Pebble reports it revoked."""
        with self._lock:
            self._known.add(serial)

    def suggest_window(self, ari_id: str, start: datetime, end: datetime,
                       explanation_url: str | None = None) -> None:
        """Serve this renewalInfo window for `ari_id` from now on (e.g. in the past)."""
        if end <= start:
            raise ValueError("suggest_window: end must be after start")
        with self._lock:
            self._windows[ari_id] = (start, end, explanation_url)

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self.issuer = x509.load_pem_x509_certificate(self._mgmt("/intermediates/0").content)
        key = serialization.load_pem_private_key(self._mgmt("/intermediate-keys/0").content,
                                                 password=None)
        self._key = key  # type: ignore[assignment]
        self._httpd = ThreadingHTTPServer((self.host, self.port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name=f"status-{self.ca_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- Pebble ------------------------------------------------------------------------------

    def _mgmt(self, path: str) -> requests.Response:
        url = self.management_url + path
        try:
            resp = requests.get(url, verify=self.ca_bundle or True, timeout=5)
        except requests.RequestException as e:
            raise CertFailoverError(f"status service {self.ca_name}: {url}: {e}") from None
        if resp.status_code != 200 and resp.status_code != 404:
            raise CertFailoverError(f"status service {self.ca_name}: {url}: "
                                    f"HTTP {resp.status_code}")
        if resp.status_code == 200 or path.startswith("/cert-status-by-serial/"):
            return resp
        raise CertFailoverError(f"status service {self.ca_name}: {url}: HTTP 404")

    def cert_status(self, serial: int) -> dict[str, Any] | None:
        """Pebble's record for `serial` (None: Pebble never issued it)."""
        resp = self._mgmt(f"/cert-status-by-serial/{serial:x}")
        if resp.status_code == 404:
            return None
        data = resp.json()
        return data if isinstance(data, dict) else None

    # -- OCSP --------------------------------------------------------------------------------

    def ocsp_response(self, request_der: bytes) -> bytes:
        assert self.issuer is not None and self._key is not None
        try:
            req = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(serialization.Encoding.DER)
        own = self._own_hashes(req.hash_algorithm)
        if (req.issuer_name_hash, req.issuer_key_hash) != own:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
        now = self.clock()
        try:
            record = self.cert_status(req.serial_number)
        except CertFailoverError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(serialization.Encoding.DER)
        status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        if record is not None:
            self.add_known_serial(req.serial_number)
            if record.get("Status") == "Revoked":
                status = ocsp.OCSPCertStatus.REVOKED
                revoked_at = _go_time(record.get("RevokedAt"), now)
                reason = _REASONS.get(int(record.get("Reason") or 0))
            else:
                status = ocsp.OCSPCertStatus.GOOD
        this_update = now - timedelta(minutes=1)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=req.issuer_name_hash, issuer_key_hash=req.issuer_key_hash,
            serial_number=req.serial_number, algorithm=req.hash_algorithm, cert_status=status,
            this_update=this_update, next_update=this_update + self.ocsp_validity,
            revocation_time=revoked_at, revocation_reason=reason,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self.issuer)
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def _own_hashes(self, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        """(issuerNameHash, issuerKeyHash) of this CA's intermediate under `algorithm`."""
        assert self.issuer is not None
        name_hash = hashlib.new(algorithm.name, self.issuer.subject.public_bytes()).digest()
        spki = self.issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        key_bits = PublicKeyInfo.load(spki)["public_key"].contents[1:]  # skip unused-bits octet
        return name_hash, hashlib.new(algorithm.name, key_bits).digest()

    # -- CRL ---------------------------------------------------------------------------------

    def crl(self) -> tuple[bytes, str]:
        """The current DER CRL and its ETag (regenerated when the revoked set changes or at
        half of its validity)."""
        der, etag, _ = self.crl_with_time()
        return der, etag

    def crl_with_time(self) -> tuple[bytes, str, datetime]:
        """The current DER CRL, its ETag and its thisUpdate (for Last-Modified)."""
        assert self.issuer is not None and self._key is not None
        now = self.clock()
        with self._lock:
            known = sorted(self._known)
        revoked: set[tuple[int, int, str]] = set()
        for serial in known:
            record = self.cert_status(serial)
            if record is not None and record.get("Status") == "Revoked":
                revoked.add((serial, int(record.get("Reason") or 0),
                             _go_time(record.get("RevokedAt"), now).isoformat()))
        key = frozenset(revoked)
        with self._lock:
            cached = self._crl_cache
            if cached and cached[0] == key and now < cached[1] + self.crl_validity / 2:
                der = cached[2]
                return (der, '"' + hashlib.sha256(der).hexdigest()[:32] + '"',
                        cached[1] - timedelta(minutes=1))
            self._crl_number += 1
            number = self._crl_number
        this_update = now - timedelta(minutes=1)
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.issuer.subject)
             .last_update(this_update).next_update(this_update + self.crl_validity)
             .add_extension(x509.CRLNumber(number), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self.issuer.public_key()), critical=False)  # type: ignore[arg-type]
             .add_extension(x509.IssuingDistributionPoint(
                 full_name=[x509.UniformResourceIdentifier(self.crl_url)], relative_name=None,
                 only_contains_user_certs=False, only_contains_ca_certs=False,
                 only_some_reasons=None, indirect_crl=False,
                 only_contains_attribute_certs=False), critical=True))
        for serial, code, at in sorted(revoked):
            rb = (x509.RevokedCertificateBuilder().serial_number(serial)
                  .revocation_date(datetime.fromisoformat(at)))
            if code in _REASONS:
                rb = rb.add_extension(x509.CRLReason(_REASONS[code]), critical=False)
            b = b.add_revoked_certificate(rb.build())
        der = b.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        with self._lock:
            self._crl_cache = (key, now, der)
        return der, '"' + hashlib.sha256(der).hexdigest()[:32] + '"', this_update

    # -- ARI ---------------------------------------------------------------------------------

    def renewal_info(self, ari_id: str) -> dict[str, Any] | None:
        with self._lock:
            window = self._windows.get(ari_id)
        if window is None:
            leaf = self._leaf_for(ari_id)
            if leaf is None:
                return None
            nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
            life = na - nb
            window = (nb + life * 2 / 3, nb + life * 3 / 4, None)
        doc: dict[str, Any] = {"suggestedWindow": {
            "start": window[0].isoformat().replace("+00:00", "Z"),
            "end": window[1].isoformat().replace("+00:00", "Z")}}
        if window[2]:
            doc["explanationURL"] = window[2]
        return doc

    def _leaf_for(self, ari_id: str) -> x509.Certificate | None:
        try:
            _aki, serial_b64 = ari_id.split(".", 1)
            serial = int.from_bytes(base64.urlsafe_b64decode(serial_b64 + "=" * (-len(
                serial_b64) % 4)), "big", signed=True)
        except ValueError:
            return None
        record = self.cert_status(serial)
        if record is None or not isinstance(record.get("Certificate"), str):
            return None
        leaf = x509.load_pem_x509_certificate(record["Certificate"].encode())
        try:
            if ari_cert_id(leaf) != ari_id:
                return None
        except ValueError:
            return None
        self.add_known_serial(serial)
        return leaf

    # -- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                head = sum(len(b) for b in getattr(self, "_headers_buffer", [])) + 2
                self.end_headers()
                self.wfile.write(body)
                kind = _kind(self.path)
                with svc._lock:
                    svc._counts[f"{kind}.{status}"] += 1
                    svc._counts[f"{kind}.bytes"] += head + len(body)
                    svc._counts[f"{kind}.body_bytes"] += len(body)

            def _count(self) -> None:
                with svc._lock:
                    svc.requests_served += 1
                    svc.request_log.append((self.command, self.path[:80]))
                    svc._counts[f"{_kind(self.path)}.requests"] += 1

            def do_POST(self) -> None:
                self._count()
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(n, 65536))
                if self.path.rstrip("/") != "/ocsp":
                    self._send(404, b"", "text/plain")
                    return
                self._send(200, svc.ocsp_response(body), "application/ocsp-response")

            def do_GET(self) -> None:
                self._count()
                path = self.path.split("?", 1)[0]
                try:
                    if path.startswith("/ocsp/"):
                        try:
                            der = base64.b64decode(unquote(path[len("/ocsp/"):]), validate=True)
                        except ValueError:
                            der = b""
                        self._send(200, svc.ocsp_response(der), "application/ocsp-response")
                    elif path == "/crl":
                        der, etag, this_update = svc.crl_with_time()
                        validators = {"ETag": etag, "Last-Modified": format_datetime(
                            this_update.replace(microsecond=0), usegmt=True)}
                        if _not_modified(self.headers.get("If-None-Match"),
                                         self.headers.get("If-Modified-Since"), etag,
                                         this_update):
                            self._send(304, b"", "application/pkix-crl", validators)
                        else:
                            self._send(200, der, "application/pkix-crl", validators)
                    elif path.startswith("/renewalInfo/"):
                        doc = svc.renewal_info(path[len("/renewalInfo/"):])
                        if doc is None:
                            self._send(404, b'{"type":"urn:ietf:params:acme:error:malformed"}',
                                       "application/problem+json")
                        else:
                            self._send(200, json.dumps(doc).encode(), "application/json",
                                       {"Retry-After": str(svc.retry_after)})
                    else:
                        self._send(404, b"", "text/plain")
                except CertFailoverError as e:
                    self._send(503, str(e).encode(), "text/plain")

        return Handler
