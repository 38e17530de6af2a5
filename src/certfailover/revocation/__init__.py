"""Revocation and CA signals: CRL, OCSP and ACME Renewal Information (RFC 9773)."""

from .ari import RenewalInfo, ari_cert_id
from .check import CASources, RevocationCheck, RevocationConfig
from .result import InvalidRevocationData, RevocationResult, Status

__all__ = [
    "CASources",
    "InvalidRevocationData",
    "RenewalInfo",
    "RevocationCheck",
    "RevocationConfig",
    "RevocationResult",
    "Status",
    "ari_cert_id",
]
