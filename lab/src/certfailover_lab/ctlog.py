"""A Certificate Transparency log on loopback for tests and the demo (no CT log server is
packaged for Debian): RFC 6962 `/ct/v1/` (get-sth, get-sth-consistency, get-proof-by-hash,
get-entries, get-roots, add-chain, add-pre-chain) over a real Merkle tree (RFC 6962 2.1
hashing, PROOF/PATH of 2.1.1-2.1.2), tree heads and SCTs signed with ECDSA P-256 as
`digitally-signed` structs (RFC 6962 3.2, 3.5); and the same tree through the static-ct-api
read side: `/checkpoint` (a signed note with an RFC6962NoteSignature), `/tile/data/<N>`,
`/tile/<L>/<N>` (full and `.p/<W>` partial tiles) and `/issuer/<fingerprint>`. (Lab
simplification: one tree for both interfaces, so the TimestampedEntry carries no leaf_index
extension.) The TLS-presentation encoding is written by
hand with `struct`; the tree code here is independent of the product's verifier
(certfailover.ct.merkle), so the two check each other, and certspotter checks both.

`rewrite(index, chain)` makes the log fork its history (a different entry at an old index,
a new tree head signed over it), for tests that the watch refuses to trust it.

    with CTLog() as log:
        log.add_chain([leaf, intermediate])      # or submit(log.url, ...) over HTTP
        json.dump(log.log_list(), open("logs.json", "w"))
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import requests
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["CTLog", "log_pem", "make_precert", "precert_tbs", "submit"]

POISON_OID = "1.3.6.1.4.1.11129.2.4.3"
MAX_ENTRIES = 1000  # per get-entries call, like production logs


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _vec(data: bytes, length_bytes: int) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def precert_tbs(precert_der: bytes) -> bytes:
    """The precertificate's TBSCertificate without the CT poison extension (RFC 6962 3.2)."""
    tbs = asn1x509.Certificate.load(precert_der)["tbs_certificate"]
    exts = [e for e in tbs["extensions"] if e["extn_id"].dotted != POISON_OID]
    new = tbs.copy()
    new["extensions"] = asn1x509.Extensions(exts)
    return bytes(new.dump(force=True))


class _Tree:
    """Leaf hashes and the hash of every aligned perfect subtree computed so far."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self._perfect: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[lo]
        perfect = n & (n - 1) == 0
        if perfect and (lo, n) in self._perfect:
            return self._perfect[(lo, n)]
        k = _split(n)
        h = _node(self.mth(lo, lo + k), self.mth(lo + k, hi))
        if perfect:
            self._perfect[(lo, n)] = h
        return h

    def subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [self.mth(lo, hi)]
        k = _split(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, whole) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n <= 1:
            return []
        k = _split(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def forget_from(self, index: int) -> None:
        self._perfect = {key: h for key, h in self._perfect.items() if key[0] + key[1] <= index}


class CTLog:
    """The log's state and its HTTP server (started by `start()` or `with`)."""

    def __init__(self, *, description: str = "certfailover lab log") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.log_id = hashlib.sha256(self.key_der).digest()
        self.description = description
        self.roots: list[bytes] = []  # get-roots; empty: any chain is accepted (a test log)
        self._tree = _Tree()
        self._entries: list[tuple[bytes, bytes]] = []  # (leaf_input, extra_data)
        self._tile_extra: list[bytes] = []  # per entry: what follows it in a data tile
        self._issuers: dict[str, bytes] = {}  # hex SHA-256 -> DER (chain certificates)
        self._seen: dict[bytes, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.requests = 0

    # -- the log ----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._entries)

    def _sign(self, data: bytes) -> bytes:
        sig = self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return struct.pack(">BB", 4, 3) + _vec(sig, 2)  # sha256, ecdsa

    def _tile_chain(self, chain: Sequence[bytes]) -> bytes:
        fps = []
        for c in chain:
            fp = hashlib.sha256(c).digest()
            self._issuers[fp.hex()] = c
            fps.append(fp)
        return _vec(b"".join(fps), 2)

    def _append(self, entry_type: int, signed_entry: bytes, extra: bytes, dedup: bytes,
                tile_extra: bytes = b"") -> dict[str, Any]:
        with self._lock:
            if dedup in self._seen:
                return self._seen[dedup]
            ts = int(time.time() * 1000)
            if self._entries:  # timestamps never go back within the log
                ts = max(ts, int.from_bytes(self._entries[-1][0][2:10], "big"))
            tail = struct.pack(">Q", ts) + struct.pack(">H", entry_type) + signed_entry + _vec(b"", 2)
            leaf = b"\x00\x00" + tail
            sct_sig = self._sign(b"\x00\x00" + tail)  # v1, certificate_timestamp, ...
            self._entries.append((leaf, extra))
            self._tile_extra.append(tile_extra)
            self._tree.leaves.append(_leaf_hash(leaf))
            sct = {"sct_version": 0, "id": base64.b64encode(self.log_id).decode(),
                   "timestamp": ts, "extensions": "",
                   "signature": base64.b64encode(sct_sig).decode()}
            self._seen[dedup] = sct
            return sct

    def add_chain(self, chain: Sequence[bytes | x509.Certificate]) -> dict[str, Any]:
        """Log a certificate (chain[0]) with its chain; returns the SCT as add-chain does."""
        ders = [c.public_bytes(serialization.Encoding.DER) if isinstance(c, x509.Certificate)
                else c for c in chain]
        if not ders:
            raise ValueError("empty chain")
        extra = _vec(b"".join(_vec(c, 3) for c in ders[1:]), 3)
        return self._append(0, _vec(ders[0], 3), extra, ders[0], self._tile_chain(ders[1:]))

    def add_pre_chain(self, chain: Sequence[bytes | x509.Certificate]) -> dict[str, Any]:
        """Log a precertificate (chain[0], with the poison extension) issued directly by
        chain[1] (precertificate signing certificates are not supported)."""
        ders = [c.public_bytes(serialization.Encoding.DER) if isinstance(c, x509.Certificate)
                else c for c in chain]
        if len(ders) < 2:
            raise ValueError("a precertificate chain needs the issuer")
        issuer = x509.load_der_x509_certificate(ders[1])
        ikh = hashlib.sha256(issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
        tbs = precert_tbs(ders[0])
        extra = _vec(ders[0], 3) + _vec(b"".join(_vec(c, 3) for c in ders[1:]), 3)
        return self._append(1, ikh + _vec(tbs, 3), extra, ders[0],
                            _vec(ders[0], 3) + self._tile_chain(ders[1:]))

    def rewrite(self, index: int, chain: Sequence[bytes | x509.Certificate]) -> None:
        """Fork: replace entry `index` by another certificate (history rewritten); later tree
        heads are signed over the rewritten tree."""
        ders = [c.public_bytes(serialization.Encoding.DER) if isinstance(c, x509.Certificate)
                else c for c in chain]
        with self._lock:
            old_leaf = self._entries[index][0]
            leaf = old_leaf[:12] + _vec(ders[0], 3) + _vec(b"", 2)
            self._entries[index] = (leaf, _vec(b"".join(_vec(c, 3) for c in ders[1:]), 3))
            self._tile_extra[index] = self._tile_chain(ders[1:])
            self._tree.leaves[index] = _leaf_hash(leaf)
            self._tree.forget_from(index)

    def sth(self, size: int | None = None) -> dict[str, Any]:
        with self._lock:
            n = self.size if size is None else size
            root = self._tree.mth(0, n)
            ts = int(time.time() * 1000)
            if n:
                ts = max(ts, int.from_bytes(self._entries[n - 1][0][2:10], "big"))
        sig = self._sign(struct.pack(">BBQQ", 0, 1, ts, n) + root)
        return {"tree_size": n, "timestamp": ts,
                "sha256_root_hash": base64.b64encode(root).decode(),
                "tree_head_signature": base64.b64encode(sig).decode()}

    @property
    def origin(self) -> str:
        """The checkpoint origin: the log's URL without its scheme and trailing slash."""
        return self.url.split("://", 1)[1].rstrip("/")

    def checkpoint(self) -> str:
        """The signed checkpoint (C2SP tlog-checkpoint, RFC6962NoteSignature)."""
        sth = self.sth()
        n, root = sth["tree_size"], base64.b64decode(sth["sha256_root_hash"])
        key_id = hashlib.sha256(self.origin.encode() + b"\n\x05" + self.log_id).digest()[:4]
        sig = key_id + struct.pack(">Q", sth["timestamp"]) + base64.b64decode(
            sth["tree_head_signature"])
        return (f"{self.origin}\n{n}\n{base64.b64encode(root).decode()}\n\n"
                f"\u2014 {self.origin} {base64.b64encode(sig).decode()}\n")

    def data_tile(self, n: int, width: int) -> bytes:
        with self._lock:
            if not 0 < width <= 256 or n * 256 + width > self.size:
                raise ValueError(f"no data tile {n} of width {width} at size {self.size}")
            return b"".join(self._entries[i][0][2:] + self._tile_extra[i]
                            for i in range(n * 256, n * 256 + width))

    def hash_tile(self, level: int, n: int, width: int) -> bytes:
        span = 256 ** level
        with self._lock:
            if not 0 < width <= 256 or (n * 256 + width) * span > self.size:
                raise ValueError(f"no tile {level}/{n} of width {width} at size {self.size}")
            return b"".join(self._tree.mth(i * span, (i + 1) * span)
                            for i in range(n * 256, n * 256 + width))

    def consistency(self, first: int, second: int) -> list[bytes]:
        with self._lock:
            if not 0 < first <= second <= self.size:
                raise ValueError(f"bad range first={first} second={second} size={self.size}")
            return [] if first == second else self._tree.subproof(first, 0, second, True)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        with self._lock:
            return self._tree.path(index, 0, size)

    # -- the log list --------------------------------------------------------------------
    def log_list(self, *, tiled: bool = False) -> dict[str, Any]:
        """A CT log list v3 naming this log (certspotter -logs, certfailover [ct] log_list):
        under `logs` (RFC 6962), or with `tiled` under `tiled_logs` (static-ct-api)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry: dict[str, Any] = {"description": self.description,
                                 "log_id": base64.b64encode(self.log_id).decode(),
                                 "key": base64.b64encode(self.key_der).decode(), "mmd": 86400,
                                 "state": {"usable": {"timestamp": now}}}
        if tiled:
            entry |= {"submission_url": self.url, "monitoring_url": self.url}
        else:
            entry["url"] = self.url
        return {"version": "1.0", "log_list_timestamp": now, "operators": [{
            "name": "certfailover lab", "email": ["lab@example.invalid"],
            "tiled_logs" if tiled else "logs": [entry]}]}

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the log first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="ctlog").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        def arg(name: str) -> int:
            return int(query[name][0])

        self.requests += 1
        if method == "GET" and path == "/ct/v1/get-sth":
            return 200, self.sth()
        if method == "GET" and path == "/ct/v1/get-sth-consistency":
            proof = self.consistency(arg("first"), arg("second"))
            return 200, {"consistency": [base64.b64encode(p).decode() for p in proof]}
        if method == "GET" and path == "/ct/v1/get-entries":
            start, end = arg("start"), arg("end")
            with self._lock:
                if start < 0 or end < start or start >= self.size:
                    return 400, {"error": f"bad range start={start} end={end} size={self.size}"}
                rows = self._entries[start:min(end + 1, self.size, start + MAX_ENTRIES)]
            return 200, {"entries": [{"leaf_input": base64.b64encode(leaf).decode(),
                                      "extra_data": base64.b64encode(extra).decode()}
                                     for leaf, extra in rows]}
        if method == "GET" and path == "/ct/v1/get-proof-by-hash":
            digest, size = base64.b64decode(query["hash"][0]), arg("tree_size")
            with self._lock:
                try:
                    index = self._tree.leaves.index(digest, 0, size)
                except ValueError:
                    return 404, {"error": "hash not in the tree"}
            return 200, {"leaf_index": index, "audit_path": [
                base64.b64encode(p).decode() for p in self.inclusion(index, size)]}
        if method == "GET" and path == "/checkpoint":
            return 200, self.checkpoint()
        if method == "GET" and path.startswith("/tile/"):
            rest = path[len("/tile/"):]
            level_s, _, tile = rest.partition("/")
            tile, _, partial = tile.partition(".p/")
            n = int("".join(part.removeprefix("x") for part in tile.split("/")))
            width = int(partial) if partial else 256
            if level_s == "data":
                return 200, self.data_tile(n, width)
            return 200, self.hash_tile(int(level_s), n, width)
        if method == "GET" and path.startswith("/issuer/"):
            der = self._issuers.get(path[len("/issuer/"):])
            return (200, der) if der is not None else (404, {"error": "no such issuer"})
        if method == "GET" and path == "/ct/v1/get-roots":
            return 200, {"certificates": [base64.b64encode(r).decode() for r in self.roots]}
        if method == "POST" and path in ("/ct/v1/add-chain", "/ct/v1/add-pre-chain"):
            chain = [base64.b64decode(c) for c in json.loads(body)["chain"]]
            add = self.add_chain if path.endswith("add-chain") else self.add_pre_chain
            return 200, add(chain)
        return 404, {"error": f"no such endpoint {method} {path}"}


def _handler(log: CTLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as production logs

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                status, data = log.handle(method, parts.path, parse_qs(parts.query), body)
            except (KeyError, ValueError, IndexError) as exc:
                status, data = 400, {"error": str(exc)}
            kind = "application/json"
            if isinstance(data, bytes):
                out, kind = data, "application/octet-stream"
            elif isinstance(data, str):
                out, kind = data.encode(), "text/plain; charset=utf-8"
            else:
                out = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


def submit(log_url: str, chain: Sequence[x509.Certificate], *, precert: bool = False,
           timeout: float = 10.0) -> dict[str, Any]:
    """Submit a chain (leaf first) to a log over HTTP (add-chain or add-pre-chain); the SCT."""
    path = "ct/v1/add-pre-chain" if precert else "ct/v1/add-chain"
    body = {"chain": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                      for c in chain]}
    resp = requests.post(log_url + path, json=body, timeout=timeout)
    resp.raise_for_status()
    sct: dict[str, Any] = resp.json()
    return sct


def make_precert(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey,
                 domains: Sequence[str], *, serial: int | None = None) -> x509.Certificate:
    """A precertificate (critical CT poison extension) for `domains`, signed by `issuer`."""
    from datetime import timedelta

    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
            .issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                           critical=False)
            .add_extension(x509.PrecertPoison(), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def log_pem(log_url: str, fullchain_pem: bytes, *, timeout: float = 10.0) -> dict[str, Any]:
    """Log a certificate as a CA would: `fullchain_pem` (leaf first, then its chain, e.g. a
    store's fullchain.pem or an ACME download) submitted with add-chain; the SCT."""
    return submit(log_url, x509.load_pem_x509_certificates(fullchain_pem), timeout=timeout)
