"""Shared, thread-safe caches: one CRL request per URL for all certificates, OCSP and ARI
answers kept for as long as they may be used.

CRLs (`CRLCache`), one entry per URL (shard), whatever the issuer asking:

* Revalidated every `revalidate` (default 5 minutes) whatever the CRL's nextUpdate: a CA
  re-publishes its CRLs long before their nextUpdate (days away for public CAs), and a
  revocation must be seen within minutes. The request is conditional (If-None-Match with the
  ETag, If-Modified-Since with the Last-Modified of the body we hold), so an unchanged CRL
  costs a 304 and no body. A nextUpdate earlier than that brings the revalidation forward.
  An entry is due once it is older than `revalidate` minus 10% (at most 30 s): a caller
  asking every `revalidate` (the daemon's CRL signal) always revalidates, even when its
  clock reads a moment short of the period. An overdue CRL (nextUpdate passed, still within
  the skew allowance) is revalidated at every later ask, as before this cache kept periods.
* Single flight: one lock per URL, held across the request, so concurrent callers for the
  same URL (the certificates of one shard, in many threads, for any issuer) wait for one
  request and share its answer: a caller that waited while a request ran never sends its own.
* A 304 keeps the cached CRL only while that CRL is still within its own validity
  (thisUpdate - skew .. nextUpdate + skew); a 304 for an expired CRL is followed at once by
  an unconditional request.
* A failed request (network, HTTP error, unusable body) is remembered for `failure_backoff`
  (default 10 s): long enough to coalesce the burst of simultaneous asks of one tick, short
  enough never to hold back the next scheduled check. Meanwhile a previously fetched CRL
  keeps answering while it is within its validity (`VerifiedCRL.status` re-checks the time).
* Verification (signature, issuer, scope) is per issuer certificate and is cached with the
  body: an unchanged body is never verified twice for the same issuer.

With `directory`, the last body and its validators are also kept on disk
(`<sha256(url)>.crl` + `.json`, with the time of the last successful check) across restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..errors import FetchError
from ..fetch import Fetcher
from .crl import DEFAULT_SKEW, VerifiedCRL, load_crl, verify_crl
from .result import InvalidRevocationData

__all__ = ["DEFAULT_FAILURE_BACKOFF", "DEFAULT_REVALIDATE", "CRLCache", "TTLCache"]

V = TypeVar("V")

DEFAULT_REVALIDATE = timedelta(minutes=5)
DEFAULT_FAILURE_BACKOFF = timedelta(seconds=10)
_EARLY_FRACTION = 0.1  # revalidate an entry this fraction of `revalidate` early ...
_EARLY_MAX = timedelta(seconds=30)  # ... but at most this early


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
    """What we hold for one CRL URL."""

    body: bytes | None = None
    crl: x509.CertificateRevocationList | None = None  # parsed `body`
    etag: str | None = None
    last_modified: str | None = None
    checked_at: datetime | None = None  # last 200/304 from the server
    refresh_at: datetime | None = None  # next request (None: at the next ask)
    error: str | None = None  # the last request failed ...
    error_until: datetime | None = None  # ... and is not retried before this
    # verification of `body` per issuer (fingerprint + relaxed flag): a CRL or why not
    verified: dict[bytes, VerifiedCRL | InvalidRevocationData] = field(default_factory=dict)


class CRLCache:
    """Downloads, revalidates, verifies and shares CRLs; one entry (and one lock) per URL."""

    def __init__(self, fetcher: Fetcher, *, max_bytes: int = 128 << 20,
                 revalidate: timedelta = DEFAULT_REVALIDATE,
                 failure_backoff: timedelta = DEFAULT_FAILURE_BACKOFF,
                 skew: timedelta = DEFAULT_SKEW, directory: Path | None = None,
                 require_crl_sign: bool = True,
                 crl_max_age: timedelta | None = None) -> None:
        """`crl_max_age` is the former name of `revalidate` (it wins when given)."""
        self.fetcher = fetcher
        self.max_bytes = max_bytes
        self.revalidate = crl_max_age if crl_max_age is not None else revalidate
        if self.revalidate < timedelta(0) or failure_backoff < timedelta(0):
            raise ValueError("CRLCache: revalidate and failure_backoff must not be negative")
        self.failure_backoff = failure_backoff
        self.skew = skew
        self.directory = directory
        self.require_crl_sign = require_crl_sign
        self.requests = 0  # requests sent (for tests, metrics and benchmarks)
        self.downloads = 0  # full bodies received (200)
        self.not_modified = 0  # 304 answers
        self.failures = 0  # failed requests
        self.bytes = 0  # body bytes received
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._generation: dict[str, int] = {}  # requests made per URL (single flight)
        self._guard = threading.Lock()  # guards _locks and the counters
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    @property
    def crl_max_age(self) -> timedelta:
        """Former name of `revalidate`."""
        return self.revalidate

    def _count(self, **deltas: int) -> None:
        with self._guard:
            for name, n in deltas.items():
                setattr(self, name, getattr(self, name) + n)

    def _lock_for(self, url: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(url)
            if lock is None:
                lock = self._locks[url] = threading.Lock()
            return lock

    def get(self, url: str, issuer: x509.Certificate, now: datetime, *,
            require_crl_sign: bool = True) -> VerifiedCRL:
        """A verified CRL for `url` signed by `issuer`, or InvalidRevocationData.

        The issuer's cRLSign key usage is required unless this cache's or the caller's
        `require_crl_sign` is False. The CRL returned may have gone stale since (a failed
        revalidation keeps the last one): `VerifiedCRL.status` answers UNKNOWN then.
        """
        strict = self.require_crl_sign and require_crl_sign
        vkey = issuer.fingerprint(hashes.SHA256()) + (b"" if strict else b"r")
        lock = self._lock_for(url)
        seen = self._generation.get(url, 0)
        with lock:
            entry = self._entries.get(url)
            if entry is None:
                entry = self._entries[url] = self._from_disk(url)
            # a request that ended while we waited for the lock answers for us too
            if self._due(entry, now) and self._generation.get(url, 0) == seen:
                self._refresh(entry, url, now)
                self._generation[url] = seen + 1
            if entry.crl is None:
                raise InvalidRevocationData(url, entry.error or "no CRL")
            found = entry.verified.get(vkey)
            if found is None:
                try:
                    found = verify_crl(entry.crl, issuer, url=url, now=now, skew=self.skew,
                                       size=len(entry.body or b""), require_crl_sign=strict)
                except InvalidRevocationData as e:
                    found = e
                entry.verified[vkey] = found
            if isinstance(found, InvalidRevocationData):
                raise found
            return found

    def _due(self, entry: _Entry, now: datetime) -> bool:
        if entry.error_until is not None and now < entry.error_until:
            return False  # a request just failed: the asks of this burst share that answer
        return entry.refresh_at is None or now >= entry.refresh_at

    def _refresh(self, entry: _Entry, url: str, now: datetime) -> None:
        """One conditional request; on failure keep what we have (if still valid)."""
        try:
            self._request(entry, url, now, conditional=True)
        except (FetchError, InvalidRevocationData) as e:
            self._count(failures=1)
            entry.error = str(e).removeprefix(f"{url}: ")
            entry.error_until = now + self.failure_backoff
            entry.refresh_at = None  # retried at the first ask after error_until
            if entry.crl is not None and not self._valid(entry.crl, now):
                self._drop(entry)
            return
        entry.error = entry.error_until = None

    def _request(self, entry: _Entry, url: str, now: datetime, *, conditional: bool) -> None:
        headers: dict[str, str] = {}
        if conditional and entry.crl is not None:
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            if entry.last_modified:
                headers["If-Modified-Since"] = entry.last_modified
        self._count(requests=1)
        resp = self.fetcher.fetch(url, headers=headers, max_bytes=self.max_bytes)
        if resp.status == 304 and headers:
            assert entry.crl is not None
            self._count(not_modified=1)
            if not self._valid(entry.crl, now):  # "not modified" but no longer valid: ask again
                self._drop(entry)
                self._request(entry, url, now, conditional=False)
                return
            entry.checked_at = now
            entry.refresh_at = self._next_refresh(entry.crl, now)
            self._to_disk(url, entry, body=None)
            return
        if resp.status != 200:
            raise FetchError(url, f"HTTP {resp.status}")
        self._count(downloads=1, bytes=len(resp.body))
        if resp.body != entry.body or entry.crl is None:
            crl = load_crl(resp.body, source=url)
            entry.body, entry.crl, entry.verified = resp.body, crl, {}
        entry.etag = resp.headers.get("etag")
        entry.last_modified = resp.headers.get("last-modified")
        entry.checked_at = now
        entry.refresh_at = self._next_refresh(entry.crl, now)
        self._to_disk(url, entry, body=resp.body)

    def _valid(self, crl: x509.CertificateRevocationList, now: datetime) -> bool:
        nxt = crl.next_update_utc
        return (crl.last_update_utc - self.skew <= now
                and (nxt is None or now <= nxt + self.skew))

    @staticmethod
    def _drop(entry: _Entry) -> None:
        entry.body = entry.crl = entry.etag = entry.last_modified = None
        entry.verified = {}

    def _next_refresh(self, crl: x509.CertificateRevocationList, now: datetime) -> datetime:
        early = min(self.revalidate * _EARLY_FRACTION, _EARLY_MAX)
        at = now + self.revalidate - early
        nxt = crl.next_update_utc
        return min(at, nxt) if nxt is not None else at  # overdue: at the next ask

    # -- disk ----------------------------------------------------------------------------------

    def _paths(self, url: str) -> tuple[Path, Path]:
        assert self.directory is not None
        h = hashlib.sha256(url.encode()).hexdigest()
        return self.directory / f"{h}.crl", self.directory / f"{h}.json"

    def _to_disk(self, url: str, entry: _Entry, *, body: bytes | None) -> None:
        if self.directory is None:
            return
        crl_path, meta_path = self._paths(url)
        meta = {"url": url, "etag": entry.etag, "last_modified": entry.last_modified,
                "checked_at": entry.checked_at.isoformat() if entry.checked_at else None}
        writes = [(meta_path, json.dumps(meta).encode())]
        if body is not None:
            writes.insert(0, (crl_path, body))
        try:
            for path, data in writes:
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
        except OSError:
            pass  # the disk copy is an optimisation; the CRL in memory stands

    def _from_disk(self, url: str) -> _Entry:
        """The last body from disk, unverified (verified per issuer on use), due for
        revalidation `revalidate` after its last successful check."""
        if self.directory is None:
            return _Entry()
        crl_path, meta_path = self._paths(url)
        try:
            meta = json.loads(meta_path.read_text())
            body = crl_path.read_bytes()
            crl = load_crl(body, source=str(crl_path))
            checked = meta.get("checked_at")
            checked_at = (datetime.fromisoformat(checked) if isinstance(checked, str)
                          else datetime.fromtimestamp(meta_path.stat().st_mtime, UTC))
        except (OSError, ValueError, InvalidRevocationData):
            return _Entry()
        if checked_at.tzinfo is None:
            return _Entry()
        return _Entry(body, crl, meta.get("etag"), meta.get("last_modified"), checked_at,
                      self._next_refresh(crl, checked_at))
