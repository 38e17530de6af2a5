"""Health: run every check on a certificate and collect Findings. Checks never raise.

The checks here are the local ones (validity, key, names, chain against PEM trust stores,
operator distrust). Revocation (revocation/check.py) and root-program trust (trust/check.py)
plug in through the same Check protocol.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from .checks import CertMaterial, Check, CheckContext
from .model import Finding, Health, Severity, Signal
from .names import cert_names, name_matches
from .sitetrust import TrustAnchor, bundles

log = logging.getLogger(__name__)

SYSTEM_BUNDLE = Path(os.environ.get("CERTFAILOVER_SYSTEM_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))


def run_checks(material: CertMaterial, ctx: CheckContext, checks: Sequence[Check]) -> Health:
    found: list[Finding] = []
    for check in checks:
        try:
            found.extend(check.run(material, ctx))
        except Exception as exc:  # a broken check is an unknown, never a crash of the daemon
            log.exception("check %s crashed on %s", check.name, material.cert.id)
            found.append(Finding(check.name, Severity.WARN, f"check failed to run: {exc}",
                                 known=False))
    return Health(material.cert.id, tuple(found))


class ValidityCheck:
    """Not yet valid, expired, or inside the renewal window (last `renew_fraction` of life)."""

    name: ClassVar[str] = "validity"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.EXPIRY: findings}
    remote: ClassVar[bool] = False

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        leaf = material.leaf
        nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        if ctx.now < nb:
            return [Finding(self.name, Severity.FAIL, f"not valid before {nb.isoformat()}")]
        if ctx.now >= na:
            return [Finding(self.name, Severity.FAIL, f"expired at {na.isoformat()}")]
        renew_at = na - timedelta(seconds=(na - nb).total_seconds() * ctx.renew_fraction)
        days = (na - ctx.now).total_seconds() / 86400
        if ctx.now >= renew_at:
            return [Finding(self.name, Severity.WARN,
                            f"inside renewal window since {renew_at.isoformat()} ({days:.1f} days left)",
                            {"renew_at": renew_at.isoformat()}, renew=True)]
        return [Finding(self.name, Severity.OK, f"valid, {days:.1f} days left",
                        {"renew_at": renew_at.isoformat()}, next_due={Signal.EXPIRY: renew_at})]


class KeyCheck:
    name: ClassVar[str] = "key"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.EXPIRY: findings}
    remote: ClassVar[bool] = False

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        if not material.key_matches:
            return [Finding(self.name, Severity.FAIL, "private key does not match the certificate")]
        return [Finding(self.name, Severity.OK, "private key matches")]


class NameCheck:
    name: ClassVar[str] = "names"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.EXPIRY: findings}
    remote: ClassVar[bool] = False

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        names = cert_names(material.leaf)
        missing = [d for d in ctx.domains if not any(name_matches(n, d) for n in names)]
        if missing:
            return [Finding(self.name, Severity.FAIL, f"does not cover {', '.join(missing)}",
                            {"missing": missing, "names": names})]
        return [Finding(self.name, Severity.OK, f"covers {', '.join(ctx.domains)}")]


class DistrustCheck:
    """The operator's "stop using CA X now" switch."""

    name: ClassVar[str] = "distrust"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.EXPIRY: findings}
    remote: ClassVar[bool] = False

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        if material.cert.ca in ctx.distrusted_cas:
            return [Finding(self.name, Severity.FAIL,
                            f"CA {material.cert.ca} is distrusted by the operator")]
        return []


Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): a file changed when its stamp did


def file_stamp(path: Path) -> Stamp:
    """The stamp of `path`; OSError when it cannot be read."""
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int]
    store: Store | None
    error: str | None


class BundleStores:
    """PEM trust bundles, re-read when the file changes (mtime, size, inode), shared by threads."""

    def __init__(self) -> None:
        self._cache: dict[Path, _Loaded] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[Store | None, str | None]:
        try:
            stamp = file_stamp(path)
        except OSError as exc:
            return None, f"cannot read trust bundle {path}: {exc.strerror}"
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit.stamp == stamp:
                return hit.store, hit.error
        try:
            roots = x509.load_pem_x509_certificates(path.read_bytes())
            loaded = _Loaded(stamp, Store(roots), None)
        except (OSError, ValueError) as exc:
            loaded = _Loaded(stamp, None, f"trust bundle {path} is unreadable: {exc}")
        with self._lock:
            self._cache[path] = loaded
        return loaded.store, loaded.error


def verify_chain(store: Store, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
                 host: str, at: datetime) -> str | None:
    """None if leaf+chain validate for `host` at `at` in `store`, else the reason."""
    verifier = PolicyBuilder().store(store).time(at).build_server_verifier(x509.DNSName(host))
    try:
        verifier.verify(leaf, list(chain))
    except VerificationError as exc:
        return str(exc)
    return None


class StoreTrustCheck:
    """The chain validates (cryptography's verifier) in each PEM trust store the site names."""

    name: ClassVar[str] = "chain"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.EXPIRY: findings}
    remote: ClassVar[bool] = False

    def __init__(self, stores: BundleStores | None = None) -> None:
        self.stores = stores or BundleStores()

    def validate(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
                 trust: Sequence[TrustAnchor], host: str, at: datetime
                 ) -> list[tuple[str, str | None]]:
        """[(store name, error or None)] for each PEM bundle in `trust` (root programs are
        the trust check's)."""
        out: list[tuple[str, str | None]] = []
        for bundle in bundles(trust):
            store, err = self.stores.get(bundle.path)
            if store is None:
                out.append((str(bundle), err))
                continue
            out.append((str(bundle), verify_chain(store, leaf, chain, host, at)))
        return out

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        # due again just after the first intermediate of any stored path expires (a cross-sign
        # ending): the verdict, and which chain is served, may change at that moment
        ends = [c.not_valid_after_utc for c in material.chain if c.not_valid_after_utc > ctx.now]
        due = {Signal.EXPIRY: min(ends) + timedelta(seconds=1)} if ends else {}
        found: list[Finding] = []
        for name, err in self.validate(material.leaf, material.chain, ctx.trust, ctx.domains[0],
                                       ctx.now):
            if err is None:
                found.append(Finding(self.name, Severity.OK, f"chain validates in {name}",
                                     {"store": name}, next_due=due))
            else:
                found.append(Finding(self.name, Severity.FAIL, f"chain does not validate in {name}: {err}",
                                     {"store": name}, next_due=due))
        return found


def local_checks(stores: BundleStores | None = None) -> list[Check]:
    return [ValidityCheck(), KeyCheck(), NameCheck(), StoreTrustCheck(stores), DistrustCheck()]
