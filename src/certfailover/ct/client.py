"""An RFC 6962 log client: signed tree heads (signature verified with the log's key from the
log list), consistency proofs and entries. Every request runs under net's total deadline.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .. import net
from ..errors import CertFailoverError
from . import tls
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


def _b64(value: Any, what: str, url: str) -> bytes:
    if not isinstance(value, str):
        raise LogError(f"{url}: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise LogError(f"{url}: {what} is not base64") from None


class LogClient:
    def __init__(self, log: LogInfo, *, timeout: float = 30.0, batch: int = 1000) -> None:
        self.log, self.timeout, self.batch = log, timeout, batch
        self._key = log.public_key()
        self._session = net.session(user_agent="certfailover-ct")

    def _get(self, path: str, params: dict[str, int] | None = None) -> Any:
        url = self.log.url + path
        try:
            with net.deadline(self.timeout):
                resp = self._session.get(url, params=params, timeout=self.timeout)
                if resp.status_code != 200:
                    raise LogError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]!r}")
                return resp.json()
        except requests.RequestException as exc:
            raise LogError(f"{url}: {exc}") from None
        except ValueError as exc:
            raise LogError(f"{url}: not JSON ({exc})") from None

    def verify_sth(self, sth: STH) -> None:
        signed = tls.tree_head_input(sth.timestamp, sth.tree_size, sth.root)
        try:
            ds = tls.parse_digitally_signed(sth.signature)
        except tls.TLSDecodeError as exc:
            raise LogError(f"{self.log.url}: tree head signature: {exc}") from None
        if ds.hash_alg != tls.SHA256:
            raise LogError(f"{self.log.url}: tree head signed with hash {ds.hash_alg}, not SHA-256")
        try:
            if isinstance(self._key, ec.EllipticCurvePublicKey) and ds.sig_alg == tls.ECDSA:
                self._key.verify(ds.signature, signed, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self._key, rsa.RSAPublicKey) and ds.sig_alg == tls.RSA:
                self._key.verify(ds.signature, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise LogError(f"{self.log.url}: tree head signature algorithm {ds.sig_alg} does "
                               "not fit the log's key")
        except InvalidSignature:
            raise LogError(f"{self.log.url}: tree head of size {sth.tree_size}: the signature does "
                           "not verify with the log's key") from None

    def sth(self) -> STH:
        """The log's latest tree head, its signature verified."""
        data = self._get("ct/v1/get-sth")
        try:
            size, ts = int(data["tree_size"]), int(data["timestamp"])
        except (KeyError, TypeError, ValueError):
            raise LogError(f"{self.log.url}ct/v1/get-sth: no tree_size/timestamp") from None
        root = _b64(data.get("sha256_root_hash"), "sha256_root_hash", self.log.url)
        if len(root) != 32 or size < 0:
            raise LogError(f"{self.log.url}ct/v1/get-sth: malformed tree head")
        sth = STH(size, ts, root, _b64(data.get("tree_head_signature"), "tree_head_signature",
                                       self.log.url))
        self.verify_sth(sth)
        return sth

    def consistency(self, first: int, second: int) -> list[bytes]:
        data = self._get("ct/v1/get-sth-consistency", {"first": first, "second": second})
        proof = data.get("consistency") if isinstance(data, dict) else None
        if not isinstance(proof, list):
            raise LogError(f"{self.log.url}ct/v1/get-sth-consistency: no 'consistency' list")
        return [_b64(p, "consistency proof node", self.log.url) for p in proof]

    def proof_by_hash(self, leaf_digest: bytes, tree_size: int) -> tuple[int, list[bytes]]:
        """(leaf index, audit path) of the leaf with this hash in the tree of `tree_size`."""
        url = self.log.url + "ct/v1/get-proof-by-hash"
        try:
            with net.deadline(self.timeout):
                resp = self._session.get(url, params={
                    "hash": base64.b64encode(leaf_digest).decode(), "tree_size": str(tree_size)},
                    timeout=self.timeout)
                if resp.status_code != 200:
                    raise LogError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]!r}")
                data = resp.json()
        except requests.RequestException as exc:
            raise LogError(f"{url}: {exc}") from None
        except ValueError as exc:
            raise LogError(f"{url}: not JSON ({exc})") from None
        path = data.get("audit_path") if isinstance(data, dict) else None
        if not isinstance(path, list) or not isinstance(data.get("leaf_index"), int):
            raise LogError(f"{url}: no leaf_index/audit_path")
        return data["leaf_index"], [_b64(p, "audit path node", self.log.url) for p in path]

    def entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """(leaf_input, extra_data) of entries start..end inclusive; a log may return fewer
        (never none)."""
        data = self._get("ct/v1/get-entries", {"start": start, "end": end})
        items = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items or len(items) > end - start + 1:
            raise LogError(f"{self.log.url}ct/v1/get-entries?start={start}&end={end}: "
                           "no entries or too many")
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise LogError(f"{self.log.url}ct/v1/get-entries: an entry is not an object")
            out.append((_b64(item.get("leaf_input"), "leaf_input", self.log.url),
                        _b64(item.get("extra_data", ""), "extra_data", self.log.url)))
        return out
