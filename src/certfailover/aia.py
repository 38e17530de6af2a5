"""Completing a chain that misses an intermediate, from the AIA `caIssuers` URL (RFC 5280
4.2.2.1) of its top certificate: each fetch is bounded by a total deadline (net.py, through
fetch.Fetcher), a size limit and a few redirects, cached per URL, and a fetched certificate is
used only if it really signed the one below it. A root (self-issued) is never added: anchors
are the trust stores' business. All the fetches of one completion may also share a caller's
deadline (`until`: an order's issue_timeout), which no fetch outlasts. docs/chains.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from .errors import FetchError
from .fetch import Fetcher

__all__ = ["IssuerFetcher", "ca_issuers_urls", "parse_certs"]

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024  # a certificate or a small PKCS#7 bundle
MAX_ADDED = 4  # intermediates added to one chain at most


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) caIssuers URLs of `cert` (none: no AIA extension or no such entry)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in aia
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
            and d.access_location.value.lower().startswith(("http://", "https://"))]


def parse_certs(data: bytes, source: str) -> list[x509.Certificate]:
    """DER, PEM or a PKCS#7 certs-only bundle (DER or PEM); ValueError naming `source`."""
    loaders = (
        lambda d: [x509.load_der_x509_certificate(d)],
        x509.load_pem_x509_certificates,
        pkcs7.load_der_pkcs7_certificates,
        pkcs7.load_pem_pkcs7_certificates,
    )
    for load in loaders:
        try:
            certs = load(data)
        except ValueError:
            continue
        if certs:
            return list(certs)
    raise ValueError(f"{source}: not a certificate (DER, PEM or PKCS#7)")


class IssuerFetcher:
    """Issuers by caIssuers URL, cached (`ttl` seconds; a failure for `retry` seconds)."""

    def __init__(self, *, timeout: float = 5.0, ttl: float = 86400.0, retry: float = 600.0,
                 max_bytes: int = MAX_BYTES) -> None:
        self.ttl, self.retry, self.timeout = ttl, retry, timeout
        self._http = Fetcher(timeout=timeout, max_bytes=max_bytes,
                             user_agent="certfailover-aia/0.1")
        self._cache: dict[str, tuple[float, list[x509.Certificate]]] = {}
        self._lock = threading.Lock()

    def _get(self, url: str, until: float | None = None) -> list[x509.Certificate]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and hit[0] > now:
                return hit[1]
        timeout = self.timeout if until is None else min(self.timeout, until - now)
        if timeout <= 0:  # the caller's time is up: not fetched, nothing remembered
            log.warning("AIA caIssuers %s: not fetched, the order's time is up", url)
            return []
        certs: list[x509.Certificate] = []
        try:
            # bounded: total deadline (net.py), size, redirects
            resp = self._http.fetch(url, timeout=timeout)
            if resp.status != 200:
                raise FetchError(url, f"HTTP {resp.status}")
            certs = parse_certs(resp.body, url)
        except (FetchError, ValueError) as exc:
            log.warning("AIA caIssuers %s: %s", url, exc)
        with self._lock:
            self._cache[url] = (now + (self.ttl if certs else self.retry), certs)
        return certs

    def issuer_of(self, cert: x509.Certificate,
                  until: float | None = None) -> x509.Certificate | None:
        """The certificate that signed `cert`, from its caIssuers URLs (None: not found)."""
        for url in ca_issuers_urls(cert):
            for cand in self._get(url, until):
                if cand.subject != cert.issuer:
                    continue
                try:
                    cert.verify_directly_issued_by(cand)
                except (InvalidSignature, ValueError, TypeError):
                    log.warning("AIA caIssuers %s: %s did not sign %s", url,
                                cand.subject.rfc4514_string(), cert.subject.rfc4514_string())
                    continue
                return cand
        return None

    def complete(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
                 until: float | None = None) -> tuple[x509.Certificate, ...] | None:
        """`chain` with the intermediates it misses above its top certificate, or None when
        it misses none (the top's issuer is a root, or nothing could be fetched by `until`,
        a time.monotonic() deadline for every fetch together)."""
        out = list(chain)
        for _ in range(MAX_ADDED):
            top = out[-1] if out else leaf
            if top.issuer == top.subject:
                break  # a root was sent along: nothing above it
            parent = self.issuer_of(top, until)
            if parent is None or parent.issuer == parent.subject or parent in out:
                break  # nothing found, or a root: the trust store's business
            out.append(parent)
        return tuple(out) if len(out) > len(chain) else None

    def completions(self, leaf: x509.Certificate, chains: Sequence[Sequence[x509.Certificate]],
                    until: float | None = None) -> list[bytes]:
        """PEM of each of `chains` completed from AIA, for the ones that missed an
        intermediate and are not already among `chains` (kept as extra alternates: what the
        CA sent is never rewritten); every fetch ends by `until` (time.monotonic())."""
        have = [tuple(c) for c in chains]
        out: list[bytes] = []
        for chain in chains:
            done = self.complete(leaf, chain, until)
            if done is not None and done not in have:
                have.append(done)
                out.append(b"".join(c.public_bytes(Encoding.PEM) for c in done))
        return out
