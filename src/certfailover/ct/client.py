"""An RFC 6962 log client: signed tree heads (signature verified with the log's key from the
log list, not older than the log's maximum merge delay), consistency proofs and entries. Every
request runs under net's total deadline; every error is a `LogError` naming the request's URL.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..errors import CertFailoverError
from . import http, tls
from .loglist import LogInfo

__all__ = ["STH", "LogClient", "LogError"]


class LogError(CertFailoverError):
    """A log that cannot be read or whose answer does not verify: names the log's URL."""


@dataclass(frozen=True)
class STH:
    tree_size: int
    timestamp: int  # ms since the epoch
    root: bytes
    signature: bytes


UINT64 = 1 << 64
#: log list states of a log that no longer grows: its last tree head may be as old as it is
FROZEN = ("readonly", "retired")


def _b64(value: Any, what: str, url: str, *, size: int | None = None) -> bytes:
    """`value` base64-decoded; `size`: the decoded length it must have (a hash: 32)."""
    if not isinstance(value, str):
        raise LogError(f"{url}: {what} is not a base64 string")
    try:
        out = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise LogError(f"{url}: {what} is not base64") from None
    if size is not None and len(out) != size:
        raise LogError(f"{url}: {what} is {len(out)} bytes, not {size}")
    return out


def _uint64(value: Any, what: str, url: str) -> int:
    """A JSON integer in 0..2^64-1 (the range of the signed struct's fields)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < UINT64:
        raise LogError(f"{url}: {what} is {value!r}, not an integer in 0..2^64-1")
    return value


def _dict(data: Any, url: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise LogError(f"{url}: the answer is a JSON {type(data).__name__}, not an object")
    return data


class LogClient:
    def __init__(self, log: LogInfo, *, timeout: float = 30.0, batch: int = 1000,
                 now: Callable[[], float] = time.time, max_bytes: int = http.MAX_BYTES) -> None:
        """`now`: the wall clock (seconds since the epoch) a tree head's age is judged by;
        `timeout`: each request's total deadline; `max_bytes`: each answer's size limit."""
        self.log, self.timeout, self.batch, self.now = log, timeout, batch, now
        self._key = log.public_key()
        self._http = http.fetcher(timeout, max_bytes)

    def url(self, path: str, params: Mapping[str, int | str] | None = None) -> str:
        """The request's URL, as fetched and as error messages name it."""
        return self.log.url + path + ("?" + urlencode(params) if params else "")

    def _get(self, path: str, params: Mapping[str, int | str] | None = None) -> dict[str, Any]:
        """The JSON object at `path`, in at most `timeout` seconds in all and `max_bytes`."""
        url = self.url(path, params)
        return _dict(http.json_of(http.get(self._http, url, LogError), url, LogError), url)

    def verify_sth(self, sth: STH, *, where: str = "") -> None:
        """The tree head's signature verifies with the log's key, and the tree head is not
        older than the log's maximum merge delay (RFC 6962 3.5: a log MUST produce on demand
        a tree head no older than that; an older one is stale or replayed), unless the log
        list says the log is frozen (readonly or retired). `where`: the URL it came from
        (default: the log's)."""
        where = where or self.log.url
        if not (0 <= sth.tree_size < UINT64 and 0 <= sth.timestamp < UINT64):
            raise LogError(f"{where}: tree head size {sth.tree_size} or timestamp "
                           f"{sth.timestamp} out of range")
        signed = tls.tree_head_input(sth.timestamp, sth.tree_size, sth.root)
        try:
            ds = tls.parse_digitally_signed(sth.signature)
        except tls.TLSDecodeError as exc:
            raise LogError(f"{where}: tree head signature: {exc}") from None
        if ds.hash_alg != tls.SHA256:
            raise LogError(f"{where}: tree head signed with hash {ds.hash_alg}, not SHA-256")
        try:
            if isinstance(self._key, ec.EllipticCurvePublicKey) and ds.sig_alg == tls.ECDSA:
                self._key.verify(ds.signature, signed, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self._key, rsa.RSAPublicKey) and ds.sig_alg == tls.RSA:
                self._key.verify(ds.signature, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise LogError(f"{where}: tree head signature algorithm {ds.sig_alg} does "
                               "not fit the log's key")
        except InvalidSignature:
            raise LogError(f"{where}: tree head of size {sth.tree_size}: the signature does "
                           "not verify with the log's key") from None
        age = self.now() - sth.timestamp / 1000
        if age > self.log.mmd and self.log.state not in FROZEN:
            raise LogError(f"{where}: stale tree head: size {sth.tree_size} signed {age:.0f} s "
                           f"ago, older than the log's maximum merge delay ({self.log.mmd} s)")

    def sth(self) -> STH:
        """The log's latest tree head, its signature and age verified."""
        path = "ct/v1/get-sth"
        url = self.url(path)
        data = self._get(path)
        size = _uint64(data.get("tree_size"), "tree_size", url)
        ts = _uint64(data.get("timestamp"), "timestamp", url)
        root = _b64(data.get("sha256_root_hash"), "sha256_root_hash", url, size=32)
        sth = STH(size, ts, root, _b64(data.get("tree_head_signature"), "tree_head_signature",
                                       url))
        self.verify_sth(sth, where=url)
        return sth

    def consistency(self, first: int, second: int) -> list[bytes]:
        params = {"first": first, "second": second}
        url = self.url("ct/v1/get-sth-consistency", params)
        proof = self._get("ct/v1/get-sth-consistency", params).get("consistency")
        if not isinstance(proof, list):
            raise LogError(f"{url}: no 'consistency' list")
        return [_b64(p, "consistency proof node", url, size=32) for p in proof]

    def proof_by_hash(self, leaf_digest: bytes, tree_size: int) -> tuple[int, list[bytes]]:
        """(leaf index, audit path) of the leaf with this hash in the tree of `tree_size`."""
        params = {"hash": base64.b64encode(leaf_digest).decode(), "tree_size": str(tree_size)}
        url = self.url("ct/v1/get-proof-by-hash", params)
        data = self._get("ct/v1/get-proof-by-hash", params)
        path = data.get("audit_path")
        if not isinstance(path, list):
            raise LogError(f"{url}: no 'audit_path' list")
        index = _uint64(data.get("leaf_index"), "leaf_index", url)
        return index, [_b64(p, "audit path node", url, size=32) for p in path]

    def entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """(leaf_input, extra_data) of entries start..end inclusive; a log may return fewer
        (never none)."""
        url = self.url("ct/v1/get-entries", {"start": start, "end": end})
        items = self._get("ct/v1/get-entries", {"start": start, "end": end}).get("entries")
        if not isinstance(items, list) or not items or len(items) > end - start + 1:
            got = f"{len(items)} entries" if isinstance(items, list) else "no 'entries' list"
            raise LogError(f"{url}: {got}, want 1 to {end - start + 1}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise LogError(f"{url}: entry {start + i} is not an object")
            out.append((_b64(item.get("leaf_input"), f"entry {start + i} leaf_input", url),
                        _b64(item.get("extra_data", ""), f"entry {start + i} extra_data", url)))
        return out
