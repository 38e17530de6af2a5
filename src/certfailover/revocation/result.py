"""Result types shared by the CRL, OCSP and ARI clients."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = ["InvalidRevocationData", "RevocationResult", "Status"]


class InvalidRevocationData(Exception):
    """A CRL, OCSP response or renewalInfo that cannot be trusted (names the source)."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class Status(str, enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RevocationResult:
    """One source's verified verdict on one certificate.

    `reason` is the revocation reason (e.g. "key_compromise") when REVOKED, and why the
    status could not be established when UNKNOWN.
    """

    status: Status
    source: str  # "crl" | "ocsp" | "none"
    url: str | None
    reason: str | None = None
    revoked_at: datetime | None = None

    @property
    def key_compromise(self) -> bool:
        return self.status is Status.REVOKED and self.reason == "key_compromise"
