"""Root programs as data: which roots a client population trusts, and on what terms.

Every upstream format (Mozilla certdata.txt, Chrome root_store.textproto, Microsoft
authroot.stl, PEM bundles) is imported into the same shape: a ``RootProgram`` holding
``RootEntry`` values keyed by the SHA-256 of the root certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
ANY_EKU = "2.5.29.37.0"

#: Root programs this package models. Other names in a site's ``trust`` list ("system",
#: a PEM bundle path) are handled outside the trust engine.
KNOWN_PROGRAMS: frozenset[str] = frozenset(
    {"mozilla", "chrome", "microsoft", "apple", "android", "java", "openjdk"}
)


@dataclass(frozen=True)
class ConstraintSet:
    """One Chrome Root Store ``ConstraintSet``: every field that is set must hold.

    A root with several sets is trusted for a certificate if any one set holds.
    """

    sct_not_after: datetime | None = None  # some embedded SCT at or before this time
    sct_all_after: datetime | None = None  # every embedded SCT strictly after this time
    validity_starts_not_after: datetime | None = None  # notBefore <= this
    validity_starts_after: datetime | None = None  # notBefore > this
    min_version: str | None = None  # client version >= this
    max_version_exclusive: str | None = None  # client version < this
    permitted_dns_names: tuple[str, ...] = ()  # every DNS name at or under one of these


@dataclass(frozen=True)
class RootEntry:
    """One root as a program sees it."""

    sha256: str  # lower-case hex fingerprint of the root certificate DER
    name: str
    # Certificates whose notBefore is after this are distrusted (Mozilla
    # CKA_NSS_SERVER_DISTRUST_AFTER, Microsoft NotBefore cut-off).
    distrust_after: datetime | None = None
    # The root stops being trusted at this time for every certificate (Microsoft disallowed date).
    removed_at: datetime | None = None
    # Explicitly distrusted (Mozilla CKT_NSS_NOT_TRUSTED): a blocklist entry, not an anchor.
    distrusted: bool = False
    # EKUs the root is enabled for (Microsoft); None means no restriction.
    ekus: frozenset[str] | None = None
    # Chrome constraint sets: any one must hold; empty means unconstrained.
    constraints: tuple[ConstraintSet, ...] = ()

    def constraint_summary(self) -> str:
        """A stable, human-readable description of every constraint (used by diff)."""
        parts: list[str] = []
        if self.distrusted:
            parts.append("distrusted")
        if self.distrust_after is not None:
            parts.append(f"distrust_after={self.distrust_after.isoformat()}")
        if self.removed_at is not None:
            parts.append(f"removed_at={self.removed_at.isoformat()}")
        if self.ekus is not None:
            parts.append("ekus=" + ",".join(sorted(self.ekus)))
        for i, cs in enumerate(self.constraints):
            fields = [
                f"{k}={v.isoformat() if isinstance(v, datetime) else v}"
                for k, v in vars(cs).items()
                if v not in (None, ())
            ]
            parts.append(f"set{i}(" + " ".join(fields) + ")")
        return "; ".join(parts)


@dataclass(frozen=True)
class Provenance:
    """Where a program's data came from."""

    source: str  # file path or URL as given
    sha256: str  # of the upstream bytes
    version: str | None = None  # commit, version_major, CTL sequence number, ...
    date: str | None = None  # upstream date (ISO 8601) when the data says so
    fetched: str | None = None  # when certfailover read it (ISO 8601)


@dataclass(frozen=True)
class RootProgram:
    name: str
    provenance: Provenance
    roots: Mapping[str, RootEntry]  # by sha256; treat as read-only
    unresolved: tuple[str, ...] = ()  # sha256 of entries whose certificate is not available

    def trusted_count(self) -> int:
        return sum(1 for e in self.roots.values() if not e.distrusted)


@dataclass(frozen=True)
class ImportedProgram:
    """What an importer returns: the program plus the certificates the source carried."""

    program: RootProgram
    certs: Mapping[str, bytes] = field(default_factory=dict)  # sha256 -> DER
