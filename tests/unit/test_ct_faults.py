"""The CT log client, the tiled client and the log-list loader against a log that is down,
hangs, drips, answers 500, HTML or truncated/garbled data, forges or replays tree heads, or
serves entries, proofs and tiles that do not match its signed tree; and the watch's total
per-pass budget.

Each fault is served on loopback by `FaultServer`: the lab log (certfailover_lab.ctlog)
answers every path, unless a test replaced that path's answer by a fault. Every failing call
must raise the module's error, name the URL it asked, and return within its deadline (+ SLACK).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from certfailover.ct import loglist, positions
from certfailover.ct.client import LogClient, LogError
from certfailover.ct.merkle import CompactTree
from certfailover.ct.settings import CTSettings
from certfailover.ct.settings import from_table as ct_settings
from certfailover.ct.tiles import TiledClient
from certfailover.ct.watch import LogResult, Watch
from certfailover.errors import CertFailoverError, ConfigError
from certfailover.store.db import Database
from certfailover.tables import Table
from certfailover.testing import pki
from certfailover_lab.ctlog import CTLog

TIMEOUT = 1.0  # every client's per-request deadline here
SLACK = 0.5  # how late a failing call may return
DRIP = 0.2  # seconds between the bytes of a dripped answer
PAGE = b"<!doctype html><title>Maintenance</title><p>We will be back soon.</p>\n"
SITES = {"shop": ("shop.example.test",)}


# ---------------------------------------------------------------------------- the server

class Request(BaseHTTPRequestHandler):
    """One request to a FaultServer; a fault answers it through `send`/`raw`/`real`."""

    protocol_version = "HTTP/1.1"  # keep-alive, like production logs
    srv: FaultServer

    def real(self) -> tuple[int, str, bytes]:
        """What the lab log answers: (status, content type, body)."""
        parts = urlsplit(self.path)
        if parts.path in self.srv.files:
            return 200, "application/json", json.dumps(self.srv.files[parts.path]).encode()
        try:
            status, data = self.srv.log.handle("GET", parts.path, parse_qs(parts.query), b"")
        except (KeyError, ValueError, IndexError) as exc:
            status, data = 400, {"error": str(exc)}
        if isinstance(data, bytes):
            return status, "application/octet-stream", data
        if isinstance(data, str):
            return status, "text/plain; charset=utf-8", data.encode()
        return status, "application/json", json.dumps(data).encode()

    @staticmethod
    def head(status: int, ctype: str, length: int) -> bytes:
        return (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()

    def send(self, status: int, ctype: str, body: bytes) -> None:
        self.raw(self.head(status, ctype, len(body)) + body)

    def raw(self, data: bytes, *, drip: float = 0.0) -> None:
        if not drip:
            self.wfile.write(data)
            return
        self.close_connection = True
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            if self.srv.stop.wait(drip):
                return

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.srv.hits[path] += 1
        fault = self.srv.faults.get(path)
        if fault is None:
            fault = next((f for p, f in self.srv.faults.items()
                          if p.endswith("/") and path.startswith(p)), None)
        try:
            if fault is None:
                self.send(*self.real())
            else:
                fault(self)
        except ConnectionError:  # the client gave up (its deadline): nothing to tell
            self.close_connection = True

    def log_message(self, *_args: Any) -> None:
        pass


Fault = Callable[[Request], None]


class FaultServer:
    """The lab log `log` on loopback; `faults[path]` (a path, or a prefix ending in "/")
    answers instead of the log; `files[path]` serves a JSON document (a log list)."""

    def __init__(self, log: CTLog) -> None:
        self.log = log
        self.faults: dict[str, Fault] = {}
        self.files: dict[str, Any] = {}
        self.hits: Counter[str] = Counter()
        self.stop = threading.Event()
        handler = type("Handler", (Request,), {"srv": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # hung handlers end with `stop`
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def listed(self, *, tiled: bool = False, url: str | None = None,
               **fields: Any) -> dict[str, Any]:
        """The v3 log list naming the log at this server (or `url`), `fields` changed."""
        data = self.log.log_list(tiled=tiled)
        entry = data["operators"][0]["tiled_logs" if tiled else "logs"][0]
        entry["monitoring_url" if tiled else "url"] = url or self.url
        entry.update(fields)
        return data

    def info(self, *, tiled: bool = False, url: str | None = None,
             **fields: Any) -> loglist.LogInfo:
        (info,) = loglist.parse(self.listed(tiled=tiled, url=url, **fields), "test")
        return info

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[CTLog], FaultServer]]:
    """serve(log): a FaultServer in front of a started lab log; all closed after the test."""
    made: list[tuple[CTLog, FaultServer]] = []

    def start(log: CTLog) -> FaultServer:
        log.start()  # its own server is not used: its URL is the checkpoint's origin
        made.append((log, FaultServer(log)))
        return made[-1][1]
    yield start
    for log, srv in made:
        srv.close()
        log.stop()


def closed_url() -> str:
    """A loopback URL where nothing listens: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------------------- the faults

def hang(r: Request) -> None:
    r.srv.stop.wait(30)
    r.close_connection = True


def drip(r: Request) -> None:
    status, ctype, body = r.real()
    r.raw(r.head(status, ctype, len(body)) + body, drip=DRIP)


def http500(r: Request) -> None:
    r.send(500, "text/plain", b"internal error\n")


def html(r: Request) -> None:
    r.send(200, "text/html; charset=utf-8", PAGE)


def truncated(r: Request) -> None:
    """The real answer cut in half, the HTTP message itself complete."""
    status, ctype, body = r.real()
    r.send(status, ctype, body[:len(body) // 2])


def cut(r: Request) -> None:
    """The real answer's length announced, half of it sent, the connection closed."""
    status, ctype, body = r.real()
    r.raw(r.head(status, ctype, len(body)) + body[:len(body) // 2])
    r.close_connection = True


def slow(seconds: float) -> Fault:
    def fault(r: Request) -> None:
        r.srv.stop.wait(seconds)
        r.send(*r.real())
    return fault


def body(data: bytes, ctype: str = "application/json") -> Fault:
    return lambda r: r.send(200, ctype, data)


def edit(change: Callable[[Any], Any]) -> Fault:
    """The real JSON answer as `change(answer)` makes it."""
    def fault(r: Request) -> None:
        status, ctype, data = r.real()
        r.send(status, ctype, json.dumps(change(json.loads(data))).encode())
    return fault


def after(n: int, fault: Fault) -> Fault:
    """The real answer to the first `n` requests of the path, then `fault`."""
    seen = Counter[str]()

    def wrapped(r: Request) -> None:
        path = urlsplit(r.path).path
        seen[path] += 1
        if seen[path] <= n:
            r.send(*r.real())
        else:
            fault(r)
    return wrapped


def _set(key: str, value: Any) -> Callable[[Any], Any]:
    def change(d: Any) -> Any:
        d[key] = value
        return d
    return change


def _drop(key: str) -> Callable[[Any], Any]:
    def change(d: Any) -> Any:
        d.pop(key)
        return d
    return change


TRANSPORT: dict[str, Fault | None] = {  # None: nothing listens
    "refused": None, "hang": hang, "drip": drip, "http500": http500, "html": html,
    "truncated": truncated, "cut": cut,
}
SLOW_FAULTS = {"hang", "drip"}  # these end at the deadline, not before


def _cases(paths: list[str], slow_on: set[str]) -> list[tuple[str, str]]:
    """(path, fault) pairs: every fault on `slow_on` paths; the fast ones on every path (the
    slow ones take the whole deadline, and the paths share one request function)."""
    return [(p, f) for p in paths for f in TRANSPORT if f not in SLOW_FAULTS or p in slow_on]


def _fails(call: Callable[[], object], error: type[Exception], url: str, *, slow: bool = False,
           limit: float = TIMEOUT, words: str = "") -> Exception:
    """`call()` raises `error` naming `url` (and `words`) within `limit` + SLACK (not much
    before `limit` when `slow`: the deadline ended it)."""
    started = time.monotonic()
    with pytest.raises(error) as info:
        call()
    took = time.monotonic() - started
    msg = str(info.value)
    assert took < limit + SLACK, f"took {took:.2f}s: {msg}"
    if slow:
        assert took >= limit - 0.1, f"took {took:.2f}s: {msg}"
    assert url in msg, msg
    assert words in msg, msg
    return info.value


def _opaque(log: CTLog, n: int, salt: str = "") -> None:
    """n entries whose "certificates" are opaque bytes (hashed and counted, never matched)."""
    for _ in range(n):
        log.add_chain([hashlib.sha256(f"{salt}{log.size}".encode()).digest() * 8])


def _rogue_leaf(ca: pki.Authority, names: list[str]) -> bytes:
    """The MerkleTreeLeaf bytes of a certificate for `names` (logged by a scratch log)."""
    scratch = CTLog()
    leaf, _ = pki.make_leaf(ca, names)
    scratch.add_chain([leaf, ca.cert])
    return scratch._entries[0][0]


def _signed_sth(log: CTLog, *, size: int | None = None, ts: int | None = None) -> dict[str, Any]:
    """A tree head of the log signed with its key, at `size` and timestamp `ts` (ms)."""
    n = log.size if size is None else size
    root = log._tree.mth(0, n)
    ts = int(time.time() * 1000) if ts is None else ts
    sig = log._sign(struct.pack(">BBQQ", 0, 1, ts, n) + root)
    return {"tree_size": n, "timestamp": ts, "sha256_root_hash": base64.b64encode(root).decode(),
            "tree_head_signature": base64.b64encode(sig).decode()}


def _checkpoint(log: CTLog, *, ts: int, size: str = "", root: str = "",
                sig_flip: bool = False) -> str:
    """The log's checkpoint signed at `ts` (ms); `size`/`root`: shown instead of the signed
    ones (the signature is over the real ones)."""
    real_root = log._tree.mth(0, log.size)
    ds = log._sign(struct.pack(">BBQQ", 0, 1, ts, log.size) + real_root)
    if sig_flip:
        ds = ds[:-1] + bytes([ds[-1] ^ 1])
    key_id = hashlib.sha256(log.origin.encode() + b"\n\x05" + log.log_id).digest()[:4]
    sig = key_id + struct.pack(">Q", ts) + ds
    return (f"{log.origin}\n{size or log.size}\n{root or base64.b64encode(real_root).decode()}"
            f"\n\n\u2014 {log.origin} {base64.b64encode(sig).decode()}\n")


def _old_ms(days: float) -> int:
    return int((time.time() - days * 86400) * 1000)


# ------------------------------------------------------------------ RFC 6962 log client

ENDPOINTS: dict[str, Callable[[LogClient, CTLog], object]] = {
    "ct/v1/get-sth": lambda c, _log: c.sth(),
    "ct/v1/get-sth-consistency": lambda c, _log: c.consistency(2, 5),
    "ct/v1/get-entries": lambda c, _log: c.entries(0, 3),
    "ct/v1/get-proof-by-hash": lambda c, log: c.proof_by_hash(log._tree.leaves[4], 5),
}


@pytest.fixture(scope="module")
def _shared() -> Iterator[FaultServer]:
    log = CTLog().start()
    _opaque(log, 6)
    srv = FaultServer(log)
    yield srv
    srv.close()
    log.stop()


@pytest.fixture
def rfc(_shared: FaultServer) -> Iterator[FaultServer]:
    """A lab log of 6 entries behind a FaultServer, shared by the tests of this module that
    do not add entries; each test's faults are cleared (and its hung answers ended) after it."""
    yield _shared
    _shared.faults.clear()
    _shared.files.clear()
    _shared.hits.clear()
    _shared.stop.set()
    _shared.stop = threading.Event()


@pytest.fixture
def own(serve: Callable[[CTLog], FaultServer]) -> FaultServer:
    """Like `rfc`, for a test that adds entries: a log of its own."""
    log = CTLog()
    _opaque(log, 6)
    return serve(log)


def test_the_client_reads_the_lab_log(rfc: FaultServer) -> None:
    """The baseline the fault tests change one thing of."""
    c = LogClient(rfc.info(), timeout=TIMEOUT)
    assert c.sth().tree_size == 6
    assert len(c.consistency(2, 5)) > 0
    assert len(c.entries(0, 3)) == 4
    assert c.proof_by_hash(rfc.log._tree.leaves[4], 5)[0] == 4


@pytest.mark.parametrize(("endpoint", "fault"), _cases(
    list(ENDPOINTS), {"ct/v1/get-sth", "ct/v1/get-entries"}))
def test_log_client_transport_faults(rfc: FaultServer, endpoint: str, fault: str) -> None:
    mode = TRANSPORT[fault]
    url = closed_url() if mode is None else rfc.url
    if mode is not None:
        rfc.faults["/" + endpoint] = mode
    c = LogClient(rfc.info(url=url), timeout=TIMEOUT)
    words = {"http500": "HTTP 500", "html": "not JSON", "truncated": "not JSON"}.get(fault, "")
    _fails(lambda: ENDPOINTS[endpoint](c, rfc.log), LogError, url + endpoint,
           slow=fault in SLOW_FAULTS, words=words)


def _b64(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


BAD_ANSWERS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("ct/v1/get-sth", lambda _d: [1, 2], "not an object"),
    ("ct/v1/get-sth", _drop("tree_size"), "tree_size is None"),
    ("ct/v1/get-sth", _set("tree_size", "6"), "tree_size is '6'"),
    ("ct/v1/get-sth", _set("tree_size", -1), "tree_size is -1"),
    ("ct/v1/get-sth", _set("tree_size", 1 << 64), "not an integer in 0..2^64-1"),
    ("ct/v1/get-sth", _set("timestamp", -1), "timestamp is -1"),
    ("ct/v1/get-sth", _set("timestamp", 1.5), "timestamp is 1.5"),
    ("ct/v1/get-sth", _set("tree_size", True), "tree_size is True"),
    ("ct/v1/get-sth", _set("sha256_root_hash", "not base64!"), "sha256_root_hash is not base64"),
    ("ct/v1/get-sth", _set("sha256_root_hash", _b64(31)), "is 31 bytes, not 32"),
    ("ct/v1/get-sth", _drop("tree_head_signature"), "tree_head_signature is not a base64"),
    ("ct/v1/get-sth", _set("tree_head_signature", "AA=="), "tree head signature: truncated"),
    ("ct/v1/get-sth", _set("tree_head_signature", "AAAAAA=="), "signed with hash 0, not SHA-256"),
    ("ct/v1/get-sth-consistency", _drop("consistency"), "no 'consistency' list"),
    ("ct/v1/get-sth-consistency", _set("consistency", "AAAA"), "no 'consistency' list"),
    ("ct/v1/get-sth-consistency", _set("consistency", ["%%"]), "proof node is not base64"),
    ("ct/v1/get-sth-consistency", _set("consistency", [_b64(31)]), "is 31 bytes, not 32"),
    ("ct/v1/get-entries", _drop("entries"), "no 'entries' list"),
    ("ct/v1/get-entries", _set("entries", []), "0 entries, want 1 to 4"),
    ("ct/v1/get-entries", lambda d: {"entries": d["entries"] * 2}, "8 entries, want 1 to 4"),
    ("ct/v1/get-entries", _set("entries", [1]), "entry 0 is not an object"),
    ("ct/v1/get-entries", _set("entries", [{"extra_data": ""}]), "entry 0 leaf_input is not"),
    ("ct/v1/get-entries", _set("entries", [{"leaf_input": "**"}]), "entry 0 leaf_input is not"),
    ("ct/v1/get-entries", _set("entries", [{"leaf_input": "", "extra_data": 7}]),
     "entry 0 extra_data is not a base64"),
    ("ct/v1/get-proof-by-hash", _drop("audit_path"), "no 'audit_path' list"),
    ("ct/v1/get-proof-by-hash", _drop("leaf_index"), "leaf_index is None"),
    ("ct/v1/get-proof-by-hash", _set("leaf_index", True), "leaf_index is True"),
    ("ct/v1/get-proof-by-hash", _set("leaf_index", -4), "leaf_index is -4"),
    ("ct/v1/get-proof-by-hash", _set("audit_path", [_b64(16)]), "is 16 bytes, not 32"),
]


@pytest.mark.parametrize(("endpoint", "change", "words"), BAD_ANSWERS,
                         ids=[f"{e.rsplit('/', 1)[1]}-{w}" for e, _, w in BAD_ANSWERS])
def test_log_client_wrong_types_and_missing_fields(
        rfc: FaultServer, endpoint: str, change: Callable[[Any], Any], words: str) -> None:
    rfc.faults["/" + endpoint] = edit(change)
    c = LogClient(rfc.info(), timeout=TIMEOUT)
    _fails(lambda: ENDPOINTS[endpoint](c, rfc.log), LogError, rfc.url + endpoint, words=words)


def test_a_number_too_long_for_python_is_not_json(rfc: FaultServer) -> None:
    """json refuses integers of more than 4300 digits (a ValueError, not a JSONDecodeError)."""
    rfc.faults["/ct/v1/get-sth"] = body(b'{"tree_size": ' + b"9" * 5000 + b"}")
    _fails(LogClient(rfc.info(), timeout=TIMEOUT).sth, LogError, rfc.url + "ct/v1/get-sth",
           words="not JSON")
    rfc.files["/list.json"] = {"x": 1}
    rfc.faults["/list.json"] = body(b'{"operators": ' + b"9" * 5000 + b"}")
    _fails(lambda: loglist.load(rfc.url + "list.json", timeout=TIMEOUT), loglist.LogListError,
           rfc.url + "list.json")


def test_json_nested_too_deeply_is_not_json(rfc: FaultServer, tmp_path: Path) -> None:
    """A small answer of 100,000 "[" overflows json's recursion: an error naming the URL (or
    the file), never a RecursionError out of the pass."""
    deep = b"[" * 100_000 + b"]" * 100_000
    rfc.faults["/ct/v1/get-sth"] = body(deep)
    _fails(LogClient(rfc.info(), timeout=TIMEOUT).sth, LogError, rfc.url + "ct/v1/get-sth",
           words="not JSON (nested too deeply)")
    rfc.files["/list.json"] = {"x": 1}
    rfc.faults["/list.json"] = body(deep)
    _fails(lambda: loglist.load(rfc.url + "list.json", timeout=TIMEOUT), loglist.LogListError,
           rfc.url + "list.json", words="the log list is not JSON (nested too deeply)")
    local = tmp_path / "logs.json"
    local.write_bytes(deep)
    _fails(lambda: loglist.load(str(local)), loglist.LogListError, str(local),
           words="the log list is not JSON (nested too deeply)")
    local.write_text("{not json")
    _fails(lambda: loglist.load(str(local)), loglist.LogListError, str(local),
           words="the log list is not JSON (")


def test_a_tree_head_whose_signature_does_not_verify(rfc: FaultServer) -> None:
    url = rfc.url + "ct/v1/get-sth"
    c = LogClient(rfc.info(), timeout=TIMEOUT)
    good = _signed_sth(rfc.log)

    def flipped(d: Any) -> Any:
        sig = bytearray(base64.b64decode(d["tree_head_signature"]))
        sig[-1] ^= 1
        return d | {"tree_head_signature": base64.b64encode(sig).decode()}
    for change in (flipped,  # a damaged signature
                   lambda d: d | {"tree_size": d["tree_size"] + 1},  # signed for another size
                   lambda d: d | {"sha256_root_hash": _b64(32)},  # or another root
                   lambda d: d | {"timestamp": d["timestamp"] - 1}):  # or another time
        rfc.faults["/ct/v1/get-sth"] = body(json.dumps(change(dict(good))).encode())
        _fails(c.sth, LogError, url, words="the signature does not verify with the log's key")
    other = CTLog()  # a well-formed signature by another key
    rfc.faults["/ct/v1/get-sth"] = body(json.dumps(_signed_sth(other)).encode())
    _fails(c.sth, LogError, url, words="does not verify")
    # an RSA signature algorithm for the log's EC key
    rsa_sig = base64.b64decode(good["tree_head_signature"])
    rsa_sig = rsa_sig[:1] + b"\x01" + rsa_sig[2:]
    bad = good | {"tree_head_signature": base64.b64encode(rsa_sig).decode()}
    rfc.faults["/ct/v1/get-sth"] = body(json.dumps(bad).encode())
    _fails(c.sth, LogError, url, words="does not fit the log's key")


def test_a_stale_tree_head_is_refused(rfc: FaultServer) -> None:
    """Properly signed, but older than the log's MMD (RFC 6962 3.5): a replayed old head
    would hide every entry logged since."""
    url = rfc.url + "ct/v1/get-sth"
    rfc.faults["/ct/v1/get-sth"] = body(json.dumps(_signed_sth(rfc.log, ts=_old_ms(2))).encode())
    c = LogClient(rfc.info(), timeout=TIMEOUT)
    _fails(c.sth, LogError, url, words="stale tree head")
    assert "86400 s" in str(pytest.raises(LogError, c.sth).value)
    # the MMD comes from the log list: 60 s there, and a head 2 minutes old is stale
    rfc.faults["/ct/v1/get-sth"] = body(json.dumps(
        _signed_sth(rfc.log, ts=_old_ms(120 / 86400))).encode())
    _fails(LogClient(rfc.info(mmd=60), timeout=TIMEOUT).sth, LogError, url, words="(60 s)")
    assert c.sth().tree_size == 6  # within 24 h: fine
    # a frozen log's last tree head is as old as the log is frozen: not stale
    rfc.faults["/ct/v1/get-sth"] = body(json.dumps(_signed_sth(rfc.log, ts=_old_ms(90))).encode())
    for state in ("readonly", "retired"):
        frozen = rfc.info(state={state: {"timestamp": "2024-01-01T00:00:00Z"}})
        assert LogClient(frozen, timeout=TIMEOUT).sth().tree_size == 6


# ------------------------------------------------------------------ static-ct-api client

TILED: dict[str, Callable[[TiledClient], object]] = {
    "checkpoint": lambda c: c.checkpoint(),
    "tile/data/000.p/6": lambda c: c.data_tile(0, 6),
    "tile/0/000.p/6": lambda c: c.hash_tile(0, 0, 6),
}


@pytest.mark.parametrize(("path", "fault"), _cases(
    list(TILED), {"checkpoint", "tile/data/000.p/6"}))
def test_tiled_client_transport_faults(rfc: FaultServer, path: str, fault: str) -> None:
    mode = TRANSPORT[fault]
    url = closed_url() if mode is None else rfc.url
    if mode is not None:
        rfc.faults["/" + path] = mode
    c = TiledClient(rfc.info(tiled=True, url=url), timeout=TIMEOUT)
    _fails(lambda: TILED[path](c), LogError, url + path, slow=fault in SLOW_FAULTS,
           words="HTTP 500" if fault == "http500" else "")


@pytest.mark.parametrize(("note", "words"), [
    (lambda log: "", "not a signed checkpoint"),
    (lambda log: _checkpoint(log, ts=_old_ms(0)).split("\n\n")[0], "not a signed checkpoint"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), size="six"),
     "tree size 'six' is not a decimal number"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), size="-6"),
     "tree size '-6' is not a decimal number"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), size=str(1 << 64)), "out of range"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), size="9" * 5000), "is not a decimal number"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), root=_b64(31)), "is 31 bytes, not 32"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), root="not base64!"), "is not base64"),
    (lambda log: _checkpoint(log, ts=_old_ms(0)).replace("\u2014 ", "- "),
     "no signature by this log's key"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), sig_flip=True), "does not verify"),
    (lambda log: _checkpoint(log, ts=_old_ms(0), root=_b64(32)), "does not verify"),
    (lambda log: _checkpoint(log, ts=_old_ms(2)), "stale tree head"),
], ids=["empty", "unsigned", "size-word", "size-negative", "size-huge", "size-digits", "root-short",
        "root-not-base64", "no-signature-line", "signature-flipped", "root-forged", "stale"])
def test_tiled_checkpoint_bad_notes(rfc: FaultServer, note: Callable[[CTLog], str],
                                    words: str) -> None:
    rfc.faults["/checkpoint"] = body(note(rfc.log).encode(), "text/plain")
    c = TiledClient(rfc.info(tiled=True), timeout=TIMEOUT)
    _fails(c.checkpoint, LogError, rfc.url + "checkpoint", words=words)


def test_tiled_checkpoint_baseline(rfc: FaultServer) -> None:
    c = TiledClient(rfc.info(tiled=True), timeout=TIMEOUT)
    rfc.faults["/checkpoint"] = body(_checkpoint(rfc.log, ts=_old_ms(0.5)).encode(), "text/plain")
    assert c.checkpoint().sth.tree_size == 6  # 12 h old: within the MMD


def test_tiled_garbled_tiles(rfc: FaultServer) -> None:
    c = TiledClient(rfc.info(tiled=True), timeout=TIMEOUT)
    tile = rfc.log.data_tile(0, 6)
    for data, words in ((tile[:-3], "not a data tile: truncated"),
                        (tile + b"\x00", "not a data tile"),
                        (tile + tile[:len(tile) // 6 + 3], "not a data tile"),
                        (rfc.log.data_tile(0, 5), "5 entries, want 6")):
        rfc.faults["/tile/data/000.p/6"] = body(data, "application/octet-stream")
        _fails(lambda: c.data_tile(0, 6), LogError, rfc.url + "tile/data/000.p/6", words=words)
    rfc.faults["/tile/0/000.p/6"] = body(bytes(32 * 5), "application/octet-stream")
    _fails(lambda: c.hash_tile(0, 0, 6), LogError, rfc.url + "tile/0/000.p/6",
           words="160 bytes, want 192")


# ------------------------------------------------------------------------- the log list

@pytest.mark.parametrize("fault", list(TRANSPORT))
def test_log_list_transport_faults(rfc: FaultServer, fault: str) -> None:
    mode = TRANSPORT[fault]
    rfc.files["/list.json"] = rfc.listed()
    url = (closed_url() if mode is None else rfc.url) + "list.json"
    if mode is not None:
        rfc.faults["/list.json"] = mode
    words = {"http500": "HTTP 500", "html": "not JSON", "truncated": "not JSON"}.get(fault, "")
    _fails(lambda: loglist.load(url, timeout=TIMEOUT), loglist.LogListError, url,
           slow=fault in SLOW_FAULTS, words=words)


def _entry(change: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
    def edit_list(d: Any) -> Any:
        change(d["operators"][0]["logs"][0])
        return d
    return edit_list


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: [d], "not a CT log list v3"),
    (_drop("operators"), "not a CT log list v3"),
    (_set("operators", ["x"]), "operators[0]: must be an object"),
    (lambda d: d | {"operators": [{"logs": {}}]}, "operators[0].logs: must be a list"),
    (_entry(lambda e: e.update(key="**")), "logs[0].key: not base64"),
    (_entry(lambda e: e.update(key=7)), "logs[0].key: must be a base64 string"),
    (_entry(lambda e: e.update(log_id=_b64(32))), "is not the SHA-256 of the log's key"),
    (_entry(lambda e: e.update(url="ftp://x")), "logs[0].url: must be an http(s) URL"),
    (_entry(lambda e: e.pop("url")), "logs[0].url: must be an http(s) URL"),
    (_entry(lambda e: e.update(mmd="1d")), "logs[0].mmd: must be a positive number"),
    (_entry(lambda e: e.update(mmd=0)), "logs[0].mmd: must be a positive number"),
    (lambda d: d | {"operators": d["operators"] * 2}, "listed twice"),
])
def test_log_list_wrong_types_and_missing_fields(
        rfc: FaultServer, change: Callable[[Any], Any], words: str) -> None:
    rfc.files["/list.json"] = change(rfc.listed())
    url = rfc.url + "list.json"
    _fails(lambda: loglist.load(url, timeout=TIMEOUT), loglist.LogListError, url, words=words)


def test_log_list_baseline_and_its_mmd(rfc: FaultServer) -> None:
    rfc.files["/list.json"] = rfc.listed(mmd=3600)
    (info,) = loglist.load(rfc.url + "list.json", timeout=TIMEOUT)
    assert info.url == rfc.url and info.mmd == 3600
    rfc.files["/list.json"] = rfc.listed()
    assert loglist.load(rfc.url + "list.json", timeout=TIMEOUT)[0].mmd == 86400


# -------------------------------------------------- what the watch verifies against the tree

class Lab:
    def __init__(self, tmp: Path) -> None:
        self.db = Database(f"sqlite:///{tmp / 'state.db'}")
        self.db.migrate()
        self.ca = pki.make_intermediate(pki.make_root("Some Root"), "Some CA")
        self.events: list[tuple[Any, ...]] = []

    def watch(self, logs: list[loglist.LogInfo], *, start: str = "beginning", batch: int = 2,
              pass_budget: float = 60.0, clock: Callable[[], datetime] | None = None) -> Watch:
        settings = CTSettings(log_list="-", timeout=TIMEOUT, batch=batch, start=start,
                              pass_budget=pass_budget)
        return Watch(settings, self.db, SITES, logs=logs, record=lambda *e: self.events.append(e),
                     clock=clock or (lambda: datetime.now(UTC)))

    def kinds(self) -> list[str]:
        return [str(e[1]) for e in self.events]

    def size(self, info: loglist.LogInfo) -> int | None:
        pos = positions.load(self.db, info.id_b64)
        return None if pos is None else pos.tree_size


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def _inconsistent(lab: Lab, res: LogResult, url: str, words: str) -> None:
    assert res.inconsistent and words in res.problem, res
    (ev,) = [e for e in lab.events if str(e[1]) == "ct_log_inconsistent"]
    assert url in ev[2] and words in ev[2] and ev[3]["log"] == url


def test_a_consistency_proof_that_does_not_verify(own: FaultServer, lab: Lab) -> None:
    w = lab.watch([own.info()])
    (res,) = w.poll()
    assert res.to_size == 6 and not res.problem
    _opaque(own.log, 3)
    own.faults["/ct/v1/get-sth-consistency"] = edit(
        lambda d: {"consistency": [_b64(32)] * len(d["consistency"])})
    (res,) = w.poll()
    _inconsistent(lab, res, own.url, "consistency proof fails")
    assert lab.size(own.info()) == 6


def test_entries_that_do_not_match_the_signed_tree(rfc: FaultServer, lab: Lab) -> None:
    """A forged entry naming the site: the root does not match, so the log is inconsistent
    and the forged certificate is not reported as an unexpected one."""
    forged = base64.b64encode(_rogue_leaf(lab.ca, ["shop.example.test"])).decode()

    def forge(d: Any) -> Any:
        d["entries"][0]["leaf_input"] = forged
        return d
    rfc.faults["/ct/v1/get-entries"] = after(1, edit(forge))  # the second batch: entries 2-3
    (res,) = lab.watch([rfc.info()]).poll()
    _inconsistent(lab, res, rfc.url, "do not hash to its signed root of size 6")
    assert lab.kinds() == ["ct_log_inconsistent"] and lab.size(rfc.info()) is None


def test_an_audit_path_that_does_not_lead_to_the_signed_root(rfc: FaultServer,
                                                             lab: Lab) -> None:
    rfc.faults["/ct/v1/get-proof-by-hash"] = edit(
        lambda d: d | {"audit_path": [_b64(32)] * len(d["audit_path"])})
    (res,) = lab.watch([rfc.info()], start="end").poll()
    _inconsistent(lab, res, rfc.url, "does not lead to the signed root of size 6")
    assert lab.size(rfc.info()) is None
    rfc.faults["/ct/v1/get-proof-by-hash"] = edit(lambda d: d | {"leaf_index": 2})
    (res,) = lab.watch([rfc.info()], start="end").poll()
    assert res.inconsistent and "the last leaf is at index 2, not 5" in res.problem


def test_a_smaller_tree_than_the_verified_one(rfc: FaultServer, lab: Lab) -> None:
    w = lab.watch([rfc.info()])
    w.poll()
    rfc.faults["/ct/v1/get-sth"] = body(json.dumps(_signed_sth(rfc.log, size=4)).encode())
    (res,) = w.poll()
    _inconsistent(lab, res, rfc.url, "signed a tree of size 4, smaller than the 6")
    assert lab.size(rfc.info()) == 6


def test_the_watch_reports_a_stale_log_by_its_clock(rfc: FaultServer, lab: Lab) -> None:
    later = datetime.now(UTC) + timedelta(days=2)
    (res,) = lab.watch([rfc.info()], clock=lambda: later).poll()
    assert "stale tree head" in res.problem and rfc.url + "ct/v1/get-sth" in res.problem
    assert not res.inconsistent and lab.events == [] and lab.size(rfc.info()) is None


def test_tiled_entries_and_hash_tiles_that_do_not_match(rfc: FaultServer, lab: Lab) -> None:
    other = CTLog()
    _opaque(other, 6, salt="other")  # other entries than rfc.log's 6, same size
    other_tile = other.data_tile(0, 6)
    info = rfc.info(tiled=True)
    rfc.faults["/tile/data/"] = body(other_tile, "application/octet-stream")
    (res,) = lab.watch([info]).poll()
    assert res.inconsistent and "do not hash to its signed root of size 6" in res.problem
    rfc.faults.clear()
    rfc.faults["/tile/0/"] = body(bytes(32 * 6), "application/octet-stream")
    (res,) = lab.watch([info], start="end").poll()
    assert res.inconsistent and "hash tiles do not lead to the signed root" in res.problem
    assert lab.size(info) is None


def test_a_log_failing_mid_way_keeps_the_proven_entries(own: FaultServer, lab: Lab) -> None:
    """get-entries fails at the third batch: the two read are proven the start of the signed
    tree (get-sth-consistency) and kept, the error names the URL, the next pass goes on."""
    rogue, _ = pki.make_leaf(lab.ca, ["shop.example.test"])
    _opaque(own.log, 1)
    own.log.add_chain([rogue, lab.ca.cert])  # index 7: in the second pass
    own.faults["/ct/v1/get-entries"] = after(2, http500)
    w = lab.watch([own.info()])
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.entries) == (0, 4, 4)
    assert own.url + "ct/v1/get-entries?start=4&end=5: HTTP 500" in res.problem
    assert not res.inconsistent and not res.budget and lab.size(own.info()) == 4
    assert own.hits["/ct/v1/get-sth-consistency"] == 1
    own.faults.clear()
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.problem) == (4, 8, "")
    assert [e[3]["index"] for e in lab.events] == [7]


def test_a_prefix_the_log_cannot_prove_is_inconsistent(
        serve: Callable[[CTLog], FaultServer], lab: Lab) -> None:
    """Entries 0-5 read, then get-entries fails, and the consistency proof from 6 does not
    verify: the log is inconsistent, nothing is kept, and the rogue certificate among the
    unproven entries is not reported."""
    log = CTLog()
    rogue, _ = pki.make_leaf(lab.ca, ["shop.example.test"])
    log.add_chain([rogue, lab.ca.cert])
    _opaque(log, 6)
    srv = serve(log)
    srv.faults["/ct/v1/get-entries"] = after(3, http500)  # 0-1, 2-3, 4-5 read; 6 fails
    srv.faults["/ct/v1/get-sth-consistency"] = edit(
        lambda d: {"consistency": [_b64(32)] * len(d["consistency"])})
    (res,) = lab.watch([srv.info()]).poll()
    _inconsistent(lab, res, srv.url, "entries 0 to 5 it served are not the start of its "
                                     "signed tree of size 7")
    assert lab.size(srv.info()) is None and lab.kinds() == ["ct_log_inconsistent"]


# ------------------------------------------------------------------------ the pass budget

def test_pass_budget_setting() -> None:
    def parse(**keys: Any) -> CTSettings:
        s = ct_settings(Table("c.toml", "[ct]", {"log_list": "https://logs.test/list.json",
                                                 **keys}), base=Path("/"), sites=())
        assert s is not None
        return s
    assert parse().pass_budget == 600.0
    assert parse(pass_budget="90s").pass_budget == 90.0
    assert parse(pass_budget=30).pass_budget == 30.0
    for bad, words in ((0, "must be > 0"), ("soon", "not a duration"), (True, "boolean")):
        with pytest.raises(ConfigError, match=words) as info:
            parse(pass_budget=bad)
        assert "[ct].pass_budget" in str(info.value)


BUDGET = 2.5  # seconds per pass; a slow log answers each request after 0.8 s of a 1 s deadline
LAG = 0.8


def test_a_slow_log_cannot_hold_a_pass_beyond_its_budget(
        serve: Callable[[CTLog], FaultServer], lab: Lab) -> None:
    """Log A answers every get-entries just under its deadline; B is fast. Pass 1 stops A
    within the budget, keeps (proven) what it read, reports the rogue certificate in it, and
    does not reach B. Pass 2 (a restarted watch) polls B first, then goes on with A from where
    it stopped. Once A is fast, a pass reads it to its signed tree head."""
    a_log, b_log = CTLog(), CTLog()
    rogue, _ = pki.make_leaf(lab.ca, ["shop.example.test"])
    a_log.add_chain([rogue, lab.ca.cert])  # index 0
    _opaque(a_log, 38)
    late, _ = pki.make_leaf(lab.ca, ["shop.example.test"])
    a_log.add_chain([late, lab.ca.cert])  # index 39
    _opaque(b_log, 5)
    a, b = serve(a_log), serve(b_log)
    a.faults["/ct/v1/get-entries"] = slow(LAG)
    logs = [a.info(), b.info()]

    started = time.monotonic()
    res_a, res_b = lab.watch(logs, pass_budget=BUDGET).poll()
    took = time.monotonic() - started
    assert took < BUDGET + SLACK, took
    assert res_a.budget and res_a.from_size == 0 and 0 < res_a.to_size < 40, res_a
    assert a.url in res_a.problem and "the pass budget (2.5 s) ran out at entry" in res_a.problem
    stopped = res_a.to_size
    assert lab.size(logs[0]) == stopped  # proven by a consistency proof
    assert a.hits["/ct/v1/get-sth-consistency"] == 1
    assert [(str(e[1]), e[3]["index"]) for e in lab.events] == [("unexpected_certificate", 0)]
    assert res_b.budget and res_b.problem.startswith("not reached") and b.hits.total() == 0
    assert lab.size(logs[1]) is None

    started = time.monotonic()
    res_a, res_b = lab.watch(logs, pass_budget=BUDGET).poll()
    assert time.monotonic() - started < BUDGET + SLACK
    assert (res_b.from_size, res_b.to_size, res_b.problem) == (0, 5, "")
    assert res_a.budget and res_a.from_size == stopped and stopped < res_a.to_size < 40
    assert lab.size(logs[0]) == res_a.to_size

    a.faults.clear()
    res_a, _ = lab.watch(logs, pass_budget=BUDGET).poll()
    assert (res_a.to_size, res_a.problem, res_a.budget) == (40, "", False)
    assert [e[3]["index"] for e in lab.events] == [0, 39]


def test_a_slow_tiled_log_keeps_the_tiles_read(serve: Callable[[CTLog], FaultServer],
                                               lab: Lab) -> None:
    """Data tiles each answered after 0.8 s: the pass stops after two tiles (one on a loaded
    machine), the entries read are proven by the hash tiles and kept; the next pass reads the
    rest."""
    log = CTLog()
    _opaque(log, 1000)
    srv = serve(log)
    srv.faults["/tile/data/"] = slow(LAG)
    info = srv.info(tiled=True)
    started = time.monotonic()
    (res,) = lab.watch([info], pass_budget=BUDGET).poll()
    assert time.monotonic() - started < BUDGET + SLACK
    stopped = res.to_size
    assert res.budget and stopped in (256, 512) and lab.size(info) == stopped, res
    assert srv.hits["/tile/1/000.p/3"] == 1  # the proof: hash tiles from there to 1000
    srv.faults.clear()
    (res,) = lab.watch([info], pass_budget=BUDGET).poll()
    assert (res.from_size, res.to_size, res.problem) == (stopped, 1000, "")


def test_a_log_list_that_drips_is_bounded_by_the_pass(
        rfc: FaultServer, tmp_path: Path) -> None:
    rfc.files["/list.json"] = rfc.listed()
    rfc.faults["/list.json"] = drip
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    db.migrate()
    url = rfc.url + "list.json"
    w = Watch(CTSettings(log_list=url, timeout=5, pass_budget=1.0), db, SITES,
              record=lambda *e: None)
    _fails(w.poll, CertFailoverError, url, slow=True, limit=1.0)


def test_compact_tree_add_subtree() -> None:
    log = CTLog()
    _opaque(log, 13)
    t = CompactTree()
    t.add_subtree(log._tree.mth(0, 8), 3)
    t.add_subtree(log._tree.mth(8, 12), 2)
    t.add(log._tree.leaves[12])
    assert t.size == 13 and t.root() == log._tree.mth(0, 13)
    with pytest.raises(ValueError, match="cannot follow 13 leaves"):
        t.add_subtree(log._tree.mth(0, 2), 1)



# ------------------------------------------------------------------------- size limits

LIMIT = 4096


def _oversized(declared: bool) -> Fault:
    """A JSON answer of more than LIMIT bytes: its length declared, or a body that runs to
    the end of the connection (no Content-Length) and must be cut off while it streams."""
    big = b'{"x": "' + b"a" * (4 * LIMIT) + b'"}'

    def fault(r: Request) -> None:
        if declared:
            r.send(200, "application/json", big)
        else:
            r.raw(b"HTTP/1.1 200 X\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\n\r\n" + big)
            r.close_connection = True
    return fault


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_an_answer_over_the_size_limit_is_refused(rfc: FaultServer, declared: bool) -> None:
    """Every CT request is bounded in size as in time: an endless or huge answer from a log or
    a log list ends with an error naming the URL, never a process that grows without bound."""
    rfc.files["/list.json"] = rfc.listed()
    for path in ("ct/v1/get-sth", "ct/v1/get-entries", "checkpoint", "tile/data/000.p/6",
                 "list.json"):
        rfc.faults["/" + path] = _oversized(declared)
    words = "exceeds the limit of 4096"
    c = LogClient(rfc.info(), timeout=TIMEOUT, max_bytes=LIMIT)
    _fails(c.sth, LogError, rfc.url + "ct/v1/get-sth", words=words)
    _fails(lambda: c.entries(0, 3), LogError, rfc.url + "ct/v1/get-entries?start=0&end=3",
           words=words)
    t = TiledClient(rfc.info(tiled=True), timeout=TIMEOUT, max_bytes=LIMIT)
    _fails(t.checkpoint, LogError, rfc.url + "checkpoint", words=words)
    _fails(lambda: t.data_tile(0, 6), LogError, rfc.url + "tile/data/000.p/6", words=words)
    url = rfc.url + "list.json"
    _fails(lambda: loglist.load(url, timeout=TIMEOUT, max_bytes=LIMIT), loglist.LogListError,
           url, words="cannot fetch the log list: body")


def test_an_answer_within_the_size_limit_is_read(rfc: FaultServer) -> None:
    """The same clients with the default limit read the same log: the limit is what refused."""
    assert LogClient(rfc.info(), timeout=TIMEOUT).sth().tree_size == 6
    assert len(TiledClient(rfc.info(tiled=True), timeout=TIMEOUT).data_tile(0, 6)) == 6


def test_a_proof_by_hash_is_asked_for_with_the_hash_url_encoded(rfc: FaultServer) -> None:
    """A leaf hash in base64 has "+", "/" and "=": the query must encode them, or the log
    reads another hash (a "+" is a space in a query)."""
    c = LogClient(rfc.info(), timeout=TIMEOUT)
    for i in range(6):
        leaf = rfc.log._tree.leaves[i]
        assert c.proof_by_hash(leaf, 6)[0] == i
    assert "%2B" in c.url("ct/v1/get-proof-by-hash", {"hash": "a+b/c="})
