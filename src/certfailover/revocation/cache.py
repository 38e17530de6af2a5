"""Shared, thread-safe caches: one CRL download per URL for all certificates, OCSP and ARI
answers kept for as long as they may be used.

CRLs are refreshed at min(nextUpdate, fetched + `crl_max_age`) with a conditional request
(If-None-Match / If-Modified-Since). Concurrent callers asking for the same CRL wait for a
single download (single flight). A failed download is retried after `failure_backoff`; a
previously verified CRL keeps answering until its nextUpdate. With `directory`, verified CRLs
and their validators are also kept on disk (`<sha256(url)>.crl` + `.json`) across restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..errors import FetchError
from .crl import DEFAULT_SKEW, VerifiedCRL, load_crl, verify_crl
from .fetch import Fetcher
from .result import InvalidRevocationData

__all__ = ["CRLCache", "TTLCache"]

V = TypeVar("V")


class TTLCache(Generic[V]):
    """key -> value until an expiry time given per entry (compared with the caller's `now`)."""

    def __init__(self) -> None:
        self._data: dict[Hashable, tuple[datetime, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: datetime) -> V | None:
        with self._lock:
            hit = self._data.get(key)
        if hit is None or now >= hit[0]:
            return None
        return hit[1]

    def put(self, key: Hashable, value: V, until: datetime) -> None:
        with self._lock:
            self._data[key] = (until, value)

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class _Entry:
    crl: VerifiedCRL | None = None
    etag: str | None = None
    last_modified: str | None = None
    refresh_at: datetime | None = None  # next network check
    error: str | None = None


class CRLCache:
    """Downloads, verifies and shares CRLs, keyed by (URL, issuer certificate)."""

    def __init__(self, fetcher: Fetcher, *, max_bytes: int = 128 << 20,
                 crl_max_age: timedelta = timedelta(hours=1),
                 failure_backoff: timedelta = timedelta(minutes=1),
                 skew: timedelta = DEFAULT_SKEW, directory: Path | None = None,
                 require_crl_sign: bool = True) -> None:
        self.fetcher = fetcher
        self.max_bytes = max_bytes
        self.crl_max_age = crl_max_age
        self.failure_backoff = failure_backoff
        self.skew = skew
        self.directory = directory
        self.require_crl_sign = require_crl_sign
        self.downloads = 0  # full bodies fetched (for tests and metrics)
        self._entries: dict[tuple[str, bytes], _Entry] = {}
        self._locks: dict[tuple[str, bytes], threading.Lock] = {}
        self._guard = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def _lock_for(self, key: tuple[str, bytes]) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def get(self, url: str, issuer: x509.Certificate, now: datetime, *,
            require_crl_sign: bool = True) -> VerifiedCRL:
        """A verified CRL for `url` signed by `issuer`, or InvalidRevocationData/FetchError.

        The issuer's cRLSign key usage is required unless this cache's or the caller's
        `require_crl_sign` is False.
        """
        relax = not (self.require_crl_sign and require_crl_sign)
        key = (url, issuer.fingerprint(hashes.SHA256()) + (b"r" if relax else b""))
        with self._lock_for(key):
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = self._from_disk(url, issuer, now, not relax)
            if entry.refresh_at is None or now >= entry.refresh_at:
                self._refresh(entry, url, issuer, now, not relax)
            if entry.crl is not None:
                return entry.crl
            raise InvalidRevocationData(url, entry.error or "no CRL")

    def _refresh(self, entry: _Entry, url: str, issuer: x509.Certificate, now: datetime,
                 require_crl_sign: bool) -> None:
        headers: dict[str, str] = {}
        if entry.crl is not None:
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            if entry.last_modified:
                headers["If-Modified-Since"] = entry.last_modified
        try:
            resp = self.fetcher.fetch(url, headers=headers, max_bytes=self.max_bytes)
            if resp.status == 304 and entry.crl is not None:
                entry.refresh_at = self._next_refresh(entry.crl, now)
                entry.error = None
                return
            if resp.status != 200:
                raise FetchError(url, f"HTTP {resp.status}")
            self.downloads += 1
            crl = verify_crl(load_crl(resp.body, source=url), issuer, url=url, now=now,
                             skew=self.skew, size=len(resp.body),
                             require_crl_sign=require_crl_sign)
        except (FetchError, InvalidRevocationData) as e:
            message = str(e).removeprefix(f"{url}: ")
            entry.error = message
            entry.refresh_at = now + self.failure_backoff
            if entry.crl is not None and not entry.crl.fresh(now, self.skew):
                entry.crl = None
            if entry.crl is None:
                raise InvalidRevocationData(url, message) from None
            return
        entry.crl, entry.error = crl, None
        entry.etag = resp.headers.get("etag")
        entry.last_modified = resp.headers.get("last-modified")
        entry.refresh_at = self._next_refresh(crl, now)
        self._to_disk(url, entry, resp.body)

    def _next_refresh(self, crl: VerifiedCRL, now: datetime) -> datetime:
        return min(crl.next_update, now + self.crl_max_age)

    def _paths(self, url: str) -> tuple[Path, Path]:
        assert self.directory is not None
        h = hashlib.sha256(url.encode()).hexdigest()
        return self.directory / f"{h}.crl", self.directory / f"{h}.json"

    def _to_disk(self, url: str, entry: _Entry, body: bytes) -> None:
        if self.directory is None:
            return
        crl_path, meta_path = self._paths(url)
        for path, data in ((crl_path, body), (meta_path, json.dumps(
                {"url": url, "etag": entry.etag, "last_modified": entry.last_modified}).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def _from_disk(self, url: str, issuer: x509.Certificate, now: datetime,
                   require_crl_sign: bool) -> _Entry:
        if self.directory is None:
            return _Entry()
        crl_path, meta_path = self._paths(url)
        try:
            meta = json.loads(meta_path.read_text())
            body = crl_path.read_bytes()
            crl = verify_crl(load_crl(body, source=str(crl_path)), issuer, url=url, now=now,
                             skew=self.skew, size=len(body),
                             require_crl_sign=require_crl_sign)
        except (OSError, ValueError, InvalidRevocationData):
            return _Entry()
        return _Entry(crl, meta.get("etag"), meta.get("last_modified"),
                      self._next_refresh(crl, now))
