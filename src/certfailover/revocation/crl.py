"""CRLs: verify (signature, issuer, time window, scope) and index serials for O(1) lookup.

A `VerifiedCRL` is only ever built from a CRL whose signature verified against the issuer
certificate. Lookups re-check the time window, so a cached CRL that went stale answers
UNKNOWN, never GOOD.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .result import InvalidRevocationData, RevocationResult, Status

__all__ = ["VerifiedCRL", "cdp_urls", "load_crl", "verify_crl"]

DEFAULT_SKEW = timedelta(minutes=5)


def load_crl(data: bytes, *, source: str) -> x509.CertificateRevocationList:
    """Parse a DER or PEM CRL; InvalidRevocationData names `source` on garbage."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise InvalidRevocationData(source, f"not a CRL: {e}") from None


def cdp_urls(leaf: x509.Certificate) -> tuple[str, ...]:
    """http(s) full names from the leaf's CRL distribution points (no cRLIssuer DPs)."""
    try:
        ext = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for dp in ext.value:
        if dp.crl_issuer or not dp.full_name:
            continue
        for name in dp.full_name:
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
                ("http://", "https://")
            ):
                out.append(name.value)
    return tuple(out)


@dataclass(frozen=True)
class _Scope:
    only_ca: bool
    only_user: bool
    only_attr: bool
    complete_reasons: bool  # False: onlySomeReasons, "not listed" does not mean good
    names: frozenset[str]  # IDP fullName URIs (empty: the CRL is not partitioned by DP)


class VerifiedCRL:
    """A signature-verified CRL with its serials in a hash set."""

    __slots__ = (
        "_scope",
        "_serials",
        "crl",
        "issuer_subject",
        "next_update",
        "size",
        "this_update",
        "url",
    )

    def __init__(self, crl: x509.CertificateRevocationList, url: str, size: int,
                 scope: _Scope, next_update: datetime) -> None:
        self.crl = crl
        self.url = url
        self.size = size
        self.issuer_subject = crl.issuer
        self.this_update: datetime = crl.last_update_utc
        self.next_update: datetime = next_update
        self._scope = scope
        self._serials: frozenset[int] = frozenset(r.serial_number for r in crl)

    def __len__(self) -> int:
        return len(self._serials)

    def __contains__(self, serial: int) -> bool:
        return serial in self._serials

    def fresh(self, now: datetime, skew: timedelta = DEFAULT_SKEW) -> bool:
        return self.this_update - skew <= now <= self.next_update + skew

    def scope_problem(self, leaf: x509.Certificate) -> str | None:
        """Why this CRL does not cover `leaf` (None: it does)."""
        s = self._scope
        if s.only_ca or s.only_attr:
            return "CRL covers only CA or attribute certificates"
        if s.names:
            dps = set(cdp_urls(leaf))
            if dps and not (dps & s.names):
                return "CRL distribution point does not match the issuing distribution point"
            if not dps and self.url not in s.names:
                return "partitioned CRL does not name the URL it was fetched from"
        return None

    def status(self, leaf: x509.Certificate, now: datetime,
               skew: timedelta = DEFAULT_SKEW) -> RevocationResult:
        """The verdict of this CRL on `leaf` at `now` (UNKNOWN if stale or out of scope)."""
        if not self.fresh(now, skew):
            return RevocationResult(Status.UNKNOWN, "crl", self.url,
                                    f"CRL not current (thisUpdate {self.this_update.isoformat()},"
                                    f" nextUpdate {self.next_update.isoformat()})")
        problem = self.scope_problem(leaf)
        if problem:
            return RevocationResult(Status.UNKNOWN, "crl", self.url, problem)
        serial = leaf.serial_number
        if serial in self._serials:
            entry = self.crl.get_revoked_certificate_by_serial_number(serial)
            reason = "unspecified"
            revoked_at = None
            if entry is not None:
                revoked_at = entry.revocation_date_utc
                try:
                    flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                    reason = flag.name
                except x509.ExtensionNotFound:
                    pass
            if reason == "remove_from_crl":
                return RevocationResult(Status.GOOD, "crl", self.url)
            return RevocationResult(Status.REVOKED, "crl", self.url, reason, revoked_at)
        if not self._scope.complete_reasons:
            return RevocationResult(Status.UNKNOWN, "crl", self.url,
                                    "CRL covers only some reasons")
        return RevocationResult(Status.GOOD, "crl", self.url)


def verify_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, *, url: str,
               now: datetime, skew: timedelta = DEFAULT_SKEW, size: int = 0,
               require_crl_sign: bool = True) -> VerifiedCRL:
    """Check issuer name, signature, time window and extensions; build the index.

    `require_crl_sign=False` accepts an issuer whose keyUsage lacks cRLSign (Pebble's
    intermediates, in the lab only); the signature is verified either way.

    Raises InvalidRevocationData naming `url` for a CRL that must not be used.
    """
    if crl.issuer != issuer.subject:
        raise InvalidRevocationData(url, f"CRL issuer {crl.issuer.rfc4514_string()!r} is not "
                                         f"{issuer.subject.rfc4514_string()!r}")
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if require_crl_sign and not ku.crl_sign:
            raise InvalidRevocationData(url, "issuer key usage does not allow cRLSign")
    except x509.ExtensionNotFound:
        pass
    try:
        ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        raise InvalidRevocationData(url, f"CRL signature cannot be checked: {e}") from None
    if not ok:
        raise InvalidRevocationData(url, "CRL signature does not verify with the issuer key")
    next_update = crl.next_update_utc
    if next_update is None:
        raise InvalidRevocationData(url, "CRL has no nextUpdate")
    if crl.last_update_utc > now + skew:
        raise InvalidRevocationData(url, f"CRL thisUpdate {crl.last_update_utc.isoformat()} "
                                         "is in the future")
    if next_update < now - skew:
        raise InvalidRevocationData(url, f"CRL is stale: nextUpdate {next_update.isoformat()}")
    scope = _Scope(False, False, False, True, frozenset())
    for ext in crl.extensions:
        if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise InvalidRevocationData(url, "delta CRLs are not supported")
        if ext.oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT:
            idp = ext.value
            assert isinstance(idp, x509.IssuingDistributionPoint)
            if idp.indirect_crl:
                raise InvalidRevocationData(url, "indirect CRLs are not supported")
            names = frozenset(n.value for n in (idp.full_name or ())
                              if isinstance(n, x509.UniformResourceIdentifier))
            scope = _Scope(idp.only_contains_ca_certs, idp.only_contains_user_certs,
                           idp.only_contains_attribute_certs, idp.only_some_reasons is None,
                           names)
        elif ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise InvalidRevocationData(url, f"unknown critical CRL extension {ext.oid.dotted_string}")
    return VerifiedCRL(crl, url, size, scope, next_update)
