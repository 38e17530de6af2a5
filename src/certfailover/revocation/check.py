"""RevocationCheck: CRL + OCSP + ARI for one certificate, or many concurrently.

Findings (never exceptions):

* check "revocation": FAIL `revoked` when a verified source says revoked; OK when a verified
  source says good; WARN `known=False` otherwise (FAIL once unknown for `hard_fail_after` on
  a site with `revocation = "hard-fail"`; when it became unknown is the engine's stored
  clock, `ctx.unknown_since`). Its `next_due` hints for the crl / ocsp signals: the earliest
  nextUpdate of the CRLs / OCSP responses that gave a verdict, when there is one.
* check "ari": WARN `replace` once the CA's suggested renewal window has started, with the
  certificate's `ari_id`; OK before; WARN `known=False` when renewal info cannot be read.
  Its ari `next_due` hint is Retry-After.

The issuer used to verify CRLs and OCSP responses is `material.chain[0]`.

Freshness: a CRL is revalidated (conditional request, 304 when unchanged) every
`crl_revalidate` whatever its nextUpdate, one request per URL shared by all certificates
(see cache.py); a good or revoked OCSP answer is reused until min(half its validity,
`ocsp_max_age` after it was fetched); a failed CRL or ACME-directory request is remembered for
`failure_backoff` only (10 s: it coalesces one tick's burst, never the next scheduled check).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..checks import CertMaterial, CheckContext
from ..errors import FetchError
from ..fetch import Fetcher
from ..model import Finding, RevocationMode, Severity, Signal
from .ari import RenewalInfo, ari_cert_id, parse_renewal_info
from .cache import DEFAULT_FAILURE_BACKOFF, DEFAULT_REVALIDATE, CRLCache, TTLCache
from .crl import cdp_urls
from .ocsp import OCSPAnswer, aia_ocsp_urls, build_request, get_url, verify_response
from .result import InvalidRevocationData, RevocationResult, Status

__all__ = ["CASources", "RevocationCheck", "RevocationConfig", "ari_cert_id"]


@dataclass(frozen=True)
class CASources:
    """Per-CA revocation sources in addition to what the certificate itself names.

    crl_urls: CRLs to consult for every certificate of this CA (Pebble writes no CRL DP).
    ocsp_urls: OCSP responders to ask in addition to the certificate's AIA.
    ari_url: the CA's renewalInfo base URL (".../renewalInfo"); wins over directory_url.
    directory_url: the CA's ACME directory; its "renewalInfo" entry is used.
    require_crl_sign: False accepts CRLs from an issuer without the cRLSign key usage
        (Pebble's intermediates lack it; lab only). The signature is always verified.
    """

    crl_urls: tuple[str, ...] = ()
    ocsp_urls: tuple[str, ...] = ()
    ari_url: str | None = None
    directory_url: str | None = None
    require_crl_sign: bool = True


@dataclass(frozen=True)
class RevocationConfig:
    """Knobs of RevocationCheck; the defaults suit production.

    cas: CASources by CA name (model.Cert.ca). timeout: seconds per fetch, all included.
    ca_bundle: PEM of extra https trust anchors (e.g. Pebble's) for all fetches.
    hard_fail_after: how long "unknown" may last before a hard-fail site fails.
    crl_revalidate: a cached CRL is revalidated (conditionally) once this old, whatever its
        nextUpdate. crl_max_age: its former name (wins when set).
    failure_backoff: how long a failed CRL / directory request is remembered (coalesces the
        asks of one tick; keep it well under the schedule's intervals).
    ocsp_max_age: an OCSP answer is reused at most this long (and at most until half its
        validity).
    cache_dir: keep verified CRLs on disk across restarts (None: memory only).
    use_crl / use_ocsp: consult that kind of source at all.
    """

    cas: Mapping[str, CASources] = field(default_factory=dict)
    timeout: float = 5.0
    max_crl_bytes: int = 128 << 20
    max_ocsp_bytes: int = 64 << 10
    max_ari_bytes: int = 64 << 10
    max_redirects: int = 3
    clock_skew: timedelta = timedelta(minutes=5)
    hard_fail_after: timedelta = timedelta(hours=24)
    crl_revalidate: timedelta = DEFAULT_REVALIDATE  # 5 minutes
    crl_max_age: timedelta | None = None  # former name of crl_revalidate
    failure_backoff: timedelta = DEFAULT_FAILURE_BACKOFF  # 10 seconds
    ocsp_max_age: timedelta = timedelta(hours=1)
    workers: int = 8
    cache_dir: Path | None = None
    ca_bundle: str | None = None
    ocsp_get_max: int = 255  # RFC 5019: GET when the encoded request is shorter
    use_crl: bool = True
    use_ocsp: bool = True  # False: CRLs only (as for Let's Encrypt since 2025)
    require_crl_sign: bool = True  # False: for every CA (prefer CASources.require_crl_sign)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


class RevocationCheck:
    """The revocation and CA-signal check; one instance shares its caches across calls."""

    name: ClassVar[str] = "revocation"
    findings: ClassVar[frozenset[str]] = frozenset({name, "ari"})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {
        Signal.CRL: frozenset({name}), Signal.OCSP: frozenset({name}),
        Signal.ARI: frozenset({"ari"})}
    remote: ClassVar[bool] = True

    def __init__(self, config: RevocationConfig | None = None, *,
                 fetcher: Fetcher | None = None, crl_cache: CRLCache | None = None) -> None:
        self.config = config if config is not None else RevocationConfig()
        c = self.config
        self.fetcher = fetcher or Fetcher(timeout=c.timeout, max_bytes=c.max_ocsp_bytes,
                                          max_redirects=c.max_redirects, ca_bundle=c.ca_bundle)
        self.crls = crl_cache or CRLCache(self.fetcher, max_bytes=c.max_crl_bytes,
                                          revalidate=c.crl_revalidate,
                                          crl_max_age=c.crl_max_age,
                                          failure_backoff=c.failure_backoff,
                                          skew=c.clock_skew, directory=c.cache_dir,
                                          require_crl_sign=c.require_crl_sign)
        self._ocsp: TTLCache[OCSPAnswer] = TTLCache()
        self._ari: TTLCache[RenewalInfo] = TTLCache()
        self._dirs: TTLCache[tuple[str | None, str | None]] = TTLCache()  # (url, error)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- one certificate -------------------------------------------------------------------

    def _sources(self, material: CertMaterial) -> CASources:
        return self.config.cas.get(material.cert.ca, CASources())

    def crl_status(self, material: CertMaterial, now: datetime) -> list[RevocationResult]:
        return [r for r, _ in self._crl_results(material, now)]

    def _crl_results(self, material: CertMaterial,
                     now: datetime) -> list[tuple[RevocationResult, datetime | None]]:
        """Each CRL's verdict with that CRL's nextUpdate (None when there is no CRL)."""
        issuer = material.chain[0]
        src = self._sources(material)
        urls = list(dict.fromkeys(cdp_urls(material.leaf) + src.crl_urls))
        out: list[tuple[RevocationResult, datetime | None]] = []
        for url in urls:
            try:
                crl = self.crls.get(url, issuer, now, require_crl_sign=src.require_crl_sign)
            except (InvalidRevocationData, FetchError) as e:
                out.append((RevocationResult(Status.UNKNOWN, "crl", url, str(e)), None))
                continue
            out.append((crl.status(material.leaf, now, self.config.clock_skew),
                        crl.next_update))
        return out

    def ocsp_status(self, material: CertMaterial, now: datetime) -> list[RevocationResult]:
        return [r for r, _ in self._ocsp_results(material, now)]

    def _ocsp_results(self, material: CertMaterial,
                      now: datetime) -> list[tuple[RevocationResult, datetime | None]]:
        """Each responder's verdict with the response's nextUpdate (None when unknown)."""
        issuer, leaf = material.chain[0], material.leaf
        urls = list(dict.fromkeys(aia_ocsp_urls(leaf) + self._sources(material).ocsp_urls))
        out: list[tuple[RevocationResult, datetime | None]] = []
        for url in urls:
            key = (url, leaf.serial_number, issuer.fingerprint(hashes.SHA256()))
            answer = self._ocsp.get(key, now)
            if answer is None:
                try:
                    answer = self._query_ocsp(url, leaf, issuer, now)
                except (InvalidRevocationData, FetchError) as e:
                    out.append((RevocationResult(Status.UNKNOWN, "ocsp", url, str(e)), None))
                    continue
                if answer.result.status is not Status.UNKNOWN:
                    self._ocsp.put(key, answer, self.ocsp_cache_until(answer, now))
            out.append((answer.result, answer.next_update))
        return out

    def ocsp_cache_until(self, answer: OCSPAnswer, fetched: datetime) -> datetime:
        """How long a fetched OCSP answer is reused: min(half its validity, ocsp_max_age)."""
        return min(answer.cache_until, fetched + self.config.ocsp_max_age)

    def _query_ocsp(self, url: str, leaf: x509.Certificate, issuer: x509.Certificate,
                    now: datetime) -> OCSPAnswer:
        req = build_request(leaf, issuer)
        der = req.public_bytes(serialization.Encoding.DER)
        target = get_url(url, der)
        if len(target) - len(url) <= self.config.ocsp_get_max:
            resp = self.fetcher.fetch(target, max_bytes=self.config.max_ocsp_bytes)
        else:
            resp = self.fetcher.fetch(url, method="POST", body=der,
                                      headers={"Content-Type": "application/ocsp-request"},
                                      max_bytes=self.config.max_ocsp_bytes)
        if resp.status != 200:
            raise FetchError(url, f"HTTP {resp.status}")
        return verify_response(resp.body, leaf=leaf, issuer=issuer, request=req, now=now,
                               source=url, skew=self.config.clock_skew)

    def status(self, material: CertMaterial, now: datetime) -> tuple[RevocationResult, ...]:
        """Every source's verdict (CRLs first, then OCSP); empty if none is known."""
        return tuple(r for r, _ in self._status(material, now))

    def _status(self, material: CertMaterial,
                now: datetime) -> list[tuple[RevocationResult, datetime | None]]:
        if not material.chain:
            return [(RevocationResult(Status.UNKNOWN, "none", None,
                                      "no issuer certificate in the chain"), None)]
        crl = self._crl_results(material, now) if self.config.use_crl else []
        ocsp_ = self._ocsp_results(material, now) if self.config.use_ocsp else []
        return crl + ocsp_

    def renewal_info(self, material: CertMaterial, now: datetime) -> RenewalInfo | None:
        """The CA's renewalInfo (cached until Retry-After); None if the CA offers no ARI."""
        base = self._ari_base(material, now)
        if base is None:
            return None
        ari_id = ari_cert_id(material.leaf)
        key = (base, ari_id)
        info = self._ari.get(key, now)
        if info is None:
            url = base.rstrip("/") + "/" + ari_id
            resp = self.fetcher.fetch(url, max_bytes=self.config.max_ari_bytes)
            if resp.status != 200:
                raise FetchError(url, f"HTTP {resp.status}")
            info = parse_renewal_info(resp.body, ari_id=ari_id, source=url, now=now,
                                      retry_after=resp.headers.get("retry-after"))
            self._ari.put(key, info, info.next_poll)
        return info

    def _ari_base(self, material: CertMaterial, now: datetime) -> str | None:
        src = self._sources(material)
        if src.ari_url:
            return src.ari_url
        if not src.directory_url:
            return None
        cached = self._dirs.get(src.directory_url, now)
        if cached is not None:  # one look-up per CA directory, failures and "no ARI" included
            url, error = cached
            if error is not None:
                raise FetchError(src.directory_url, f"{error} (cached; retried after backoff)")
            return url
        try:
            resp = self.fetcher.fetch(src.directory_url, max_bytes=self.config.max_ari_bytes)
            try:
                doc = json.loads(resp.body) if resp.status == 200 else None
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                raise FetchError(src.directory_url, "not an ACME directory")
        except FetchError as exc:
            self._dirs.put(src.directory_url, (None, str(exc).removeprefix(f"{src.directory_url}: ")),
                           now + self.config.failure_backoff)
            raise
        url = doc.get("renewalInfo")
        found = url if isinstance(url, str) else None
        self._dirs.put(src.directory_url, (found, None), now + timedelta(hours=1))
        return found

    # -- findings ----------------------------------------------------------------------------

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        """The "revocation" finding, then the "ari" finding if the CA offers ARI. Never raises."""
        try:
            findings = [self._revocation_finding(material, ctx)]
        except Exception as e:  # noqa: BLE001 - a check never raises: unknown, never good
            findings = [Finding("revocation", Severity.WARN, f"revocation check failed: {e}",
                                known=False)]
        try:
            ari = self._ari_finding(material, ctx)
        except Exception as e:  # noqa: BLE001
            ari = Finding("ari", Severity.WARN, f"renewal information check failed: {e}",
                          known=False)
        if ari is not None:
            findings.append(ari)
        return findings

    def run_many(self, materials: Sequence[CertMaterial],
                 ctx: CheckContext) -> dict[str, list[Finding]]:
        """Check many certificates concurrently (shared CRL downloads); keyed by Cert.id."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.config.workers,
                                                    thread_name_prefix="revocation")
        futures = [self._pool.submit(self.run, m, ctx) for m in materials]
        return {m.cert.id: f.result() for m, f in zip(materials, futures)}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _revocation_finding(self, material: CertMaterial, ctx: CheckContext) -> Finding:
        now = ctx.now
        timed = self._status(material, now)
        results = [r for r, _ in timed]
        hints: dict[Signal, datetime] = {}
        for kind, sig in (("crl", Signal.CRL), ("ocsp", Signal.OCSP)):
            nexts = [t for r, t in timed if r.source == kind and t is not None
                     and r.status is not Status.UNKNOWN]
            if nexts:
                hints[sig] = min(nexts)
        revoked = next((r for r in results if r.status is Status.REVOKED), None)
        good = next((r for r in results if r.status is Status.GOOD), None)
        if revoked is not None:
            detail: dict[str, Any] = {
                "status": "revoked", "source": revoked.source, "reason": revoked.reason,
                "key_compromise": revoked.key_compromise, "url": revoked.url,
                "revoked_at": _iso(revoked.revoked_at)}
            return Finding("revocation", Severity.FAIL,
                           f"revoked ({revoked.reason}) according to {revoked.source} "
                           f"{revoked.url}", detail, revoked=True, next_due=hints)
        if good is not None:
            return Finding("revocation", Severity.OK,
                           f"not revoked according to {good.source} {good.url}",
                           {"status": "good", "source": good.source, "url": good.url},
                           next_due=hints)
        since = ctx.unknown_since.get((material.cert.id, self.name), now)
        why = "; ".join(f"{r.source}: {r.reason}" for r in results) or "no CRL, OCSP or " \
            "configured revocation source"
        detail = {"status": "unknown", "since": since.isoformat(),
                  "sources": [{"source": r.source, "url": r.url, "reason": r.reason}
                              for r in results]}
        hard = ctx.revocation is RevocationMode.HARD_FAIL
        if hard and now - since >= self.config.hard_fail_after:
            return Finding("revocation", Severity.FAIL,
                           f"revocation status unknown since {since.isoformat()} (hard-fail): "
                           f"{why}", detail, known=False, next_due=hints)
        return Finding("revocation", Severity.WARN, f"revocation status unknown: {why}", detail,
                       known=False, next_due=hints)

    def _ari_finding(self, material: CertMaterial, ctx: CheckContext) -> Finding | None:
        try:
            info = self.renewal_info(material, ctx.now)
        except ValueError as e:  # no AKI: ARI cannot name this certificate
            return Finding("ari", Severity.WARN, f"no renewal information: {e}", known=False)
        except (FetchError, InvalidRevocationData) as e:
            return Finding("ari", Severity.WARN, f"renewal information unavailable: {e}",
                           known=False)
        if info is None:
            return None
        detail: dict[str, Any] = {
            "window_start": info.window_start.isoformat(),
            "window_end": info.window_end.isoformat(), "explanation_url": info.explanation_url}
        replace = info.started(ctx.now)
        if replace:
            why = f"; see {info.explanation_url}" if info.explanation_url else ""
            severity = Severity.WARN
            text = f"CA suggests replacement since {info.window_start.isoformat()}{why}"
        else:
            severity, text = Severity.OK, f"renewal window starts {info.window_start.isoformat()}"
        return Finding("ari", severity, text, detail, replace=replace, ari_id=info.ari_id,
                       next_due={Signal.ARI: info.next_poll})

