"""The CT log list v3 JSON format (the one Chrome and Apple publish, schema
https://www.gstatic.com/ct/log_list/v3/log_list_schema.json): `operators[].logs[]` are RFC 6962
logs (`url`), `operators[].tiled_logs[]` static-ct-api logs (`monitoring_url`). Each log's
`key` is its DER SubjectPublicKeyInfo, and `log_id` must be the SHA-256 of it; `mmd` is its
maximum merge delay in seconds (a tree head older than that is stale).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ..errors import CertFailoverError
from . import http

__all__ = ["LogInfo", "LogListError", "load", "parse"]

DEFAULT_MMD = 86400  # every log of the Chrome and Apple lists has 24 h


class LogListError(CertFailoverError):
    """A log list that cannot be read or does not follow the v3 schema: names the source."""


@dataclass(frozen=True)
class LogInfo:
    log_id: bytes  # SHA-256 of the key
    key_der: bytes = field(repr=False)
    url: str  # RFC 6962: the prefix before ct/v1/; tiled: the monitoring prefix
    description: str
    operator: str
    tiled: bool = False
    state: str = ""
    mmd: int = DEFAULT_MMD  # seconds: the log's maximum merge delay

    @property
    def id_b64(self) -> str:
        return base64.b64encode(self.log_id).decode()

    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        key = load_der_public_key(self.key_der)
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise LogListError(f"log {self.url}: key is {type(key).__name__}, not ECDSA or RSA")
        return key


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise LogListError(f"{where}: must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LogListError(f"{where}: not base64 ({exc})") from None


def _log(item: Any, operator: str, where: str, *, tiled: bool) -> LogInfo:
    if not isinstance(item, dict):
        raise LogListError(f"{where}: must be an object")
    key = _b64(item.get("key"), f"{where}.key")
    log_id = _b64(item.get("log_id"), f"{where}.log_id")
    if hashlib.sha256(key).digest() != log_id:
        raise LogListError(f"{where}.log_id: is not the SHA-256 of the log's key")
    try:
        load_der_public_key(key)
    except ValueError as exc:
        raise LogListError(f"{where}.key: not a DER public key ({exc})") from None
    url_key = "monitoring_url" if tiled else "url"
    url = item.get(url_key)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise LogListError(f"{where}.{url_key}: must be an http(s) URL")
    mmd = item.get("mmd", DEFAULT_MMD)
    if not isinstance(mmd, int) or isinstance(mmd, bool) or mmd <= 0:
        raise LogListError(f"{where}.mmd: must be a positive number of seconds, not {mmd!r}")
    state = item.get("state") or {}
    return LogInfo(log_id=log_id, key_der=key, url=url if url.endswith("/") else url + "/",
                   description=str(item.get("description", "")), operator=operator,
                   tiled=tiled, state=next(iter(state), "") if isinstance(state, dict) else "",
                   mmd=mmd)


def parse(data: Any, source: str) -> list[LogInfo]:
    if not isinstance(data, dict) or not isinstance(data.get("operators"), list):
        raise LogListError(f"{source}: not a CT log list v3 (no 'operators' list)")
    out: list[LogInfo] = []
    seen: set[bytes] = set()
    for i, op in enumerate(data["operators"]):
        where = f"{source}: operators[{i}]"
        if not isinstance(op, dict):
            raise LogListError(f"{where}: must be an object")
        name = str(op.get("name", ""))
        for key, tiled in (("logs", False), ("tiled_logs", True)):
            items = op.get(key, [])
            if not isinstance(items, list):
                raise LogListError(f"{where}.{key}: must be a list")
            for j, item in enumerate(items):
                info = _log(item, name, f"{where}.{key}[{j}]", tiled=tiled)
                if info.log_id in seen:
                    raise LogListError(f"{where}.{key}[{j}]: log {info.id_b64} listed twice")
                seen.add(info.log_id)
                out.append(info)
    return out


def load(source: str, *, timeout: float = 30.0, max_bytes: int = http.MAX_BYTES) -> list[LogInfo]:
    """The logs of the list at `source`: a file path or an http(s) URL (fetched under
    net's total deadline: `timeout` seconds in all, however the server drips; at most
    `max_bytes`)."""
    raw: bytes | str
    if source.startswith(("http://", "https://")):
        raw = http.get(http.fetcher(timeout, max_bytes), source, LogListError,
                       "cannot fetch the log list: ")
    else:
        try:
            raw = Path(source).read_text()
        except OSError as exc:
            raise LogListError(f"{source}: cannot read the log list: {exc.strerror}") from None
    return parse(http.json_of(raw, source, LogListError, "the log list is "), source)
