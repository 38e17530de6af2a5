"""Bounded HTTP: http(s) only, limited in size, time and redirects (revocation data, AIA
issuers, CT logs).

Every failure (refused, reset, slow, oversized, bad scheme, too many redirects, 5xx) is a
`FetchError` naming the URL; callers turn it into an "unknown" status, never a crash.
A fetch runs inside `net.deadline(timeout)` on a `net.session()`, so a server that drips its
handshake, status line or headers one byte at a time still ends on time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from . import net
from .errors import FetchError

__all__ = ["Fetcher", "Response", "check_url"]

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Response:
    url: str  # final URL after redirects
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


def check_url(url: str) -> None:
    """Raise FetchError unless `url` is an absolute http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(url, "only absolute http(s) URLs are fetched")


class Fetcher:
    """A small, thread-safe HTTP client with hard bounds.

    `timeout` is the whole budget of one fetch (connect, redirects and body), in seconds.
    `max_bytes` bounds the body; `max_redirects` the number of 3xx hops followed.
    `ca_bundle` is a PEM file of extra trust anchors for https (None: system store).
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_bytes: int = 1 << 20,
        max_redirects: int = 3,
        ca_bundle: str | None = None,
        user_agent: str = "certfailover-revocation/0.1",
    ) -> None:
        if timeout <= 0 or max_bytes <= 0 or max_redirects < 0:
            raise ValueError("timeout and max_bytes must be positive, max_redirects >= 0")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.ca_bundle = ca_bundle
        self.user_agent = user_agent
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = net.session()
            s.trust_env = False  # no proxies from the environment
            self._local.session = s
        return s

    def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Fetch `url`; return any final status (2xx, 304, 4xx) or raise FetchError."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with net.deadline(at=deadline):
            return self._fetch(url, method, body, headers, max_bytes, deadline)

    def _fetch(
        self,
        url: str,
        method: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        max_bytes: int | None,
        deadline: float,
    ) -> Response:
        limit = self.max_bytes if max_bytes is None else max_bytes
        hdrs = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        hdrs.update(headers or {})
        current = url
        for _hop in range(self.max_redirects + 1):
            check_url(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(current, "timed out")
            try:
                resp = self._session().request(
                    method,
                    current,
                    data=body,
                    headers=hdrs,
                    timeout=(remaining, remaining),
                    allow_redirects=False,
                    stream=True,
                    verify=self.ca_bundle if self.ca_bundle else True,
                )
            except net.DeadlineExceeded:
                raise FetchError(current, "timed out") from None
            except requests.RequestException as e:
                raise FetchError(current, f"request failed: {type(e).__name__}: {e}") from None
            try:
                if resp.status_code in (301, 302, 303, 307, 308):
                    loc = resp.headers.get("Location")
                    if not loc:
                        raise FetchError(current, f"HTTP {resp.status_code} without Location")
                    current = urljoin(current, loc)
                    if resp.status_code == 303:
                        method, body = "GET", None
                    continue
                return self._read(current, resp, limit, deadline)
            finally:
                resp.close()
        raise FetchError(url, f"more than {self.max_redirects} redirects")

    def _read(
        self, url: str, resp: requests.Response, limit: int, deadline: float
    ) -> Response:
        if resp.status_code >= 500:
            raise FetchError(url, f"HTTP {resp.status_code}")
        enc = resp.headers.get("Content-Encoding", "identity").lower()
        if enc not in ("identity", ""):
            raise FetchError(url, f"unexpected Content-Encoding {enc!r}")
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise FetchError(url, f"body of {declared} bytes exceeds the limit of {limit}")
        parts: list[bytes] = []
        size = 0
        raw = resp.raw
        try:
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(url, "timed out while reading the body")
                chunk = raw.read1(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise FetchError(url, f"body exceeds the limit of {limit} bytes")
                parts.append(chunk)
        except FetchError:
            raise
        except Exception as e:  # noqa: BLE001 - urllib3 / socket errors: reset, timeout, protocol
            if time.monotonic() >= deadline:  # the deadline's watchdog shut the socket
                raise FetchError(url, "timed out while reading the body") from None
            raise FetchError(url, f"reading the body failed: {type(e).__name__}: {e}") from None
        if time.monotonic() >= deadline:  # EOF from the deadline's watchdog: maybe truncated
            raise FetchError(url, "timed out while reading the body")
        if declared is not None and declared.isdigit() and size != int(declared):
            raise FetchError(url, f"body truncated: {size} of {declared} bytes")
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return Response(url=url, status=resp.status_code, headers=headers, body=b"".join(parts))
