"""Revocation and CA signals: CRL, OCSP and ACME Renewal Information (RFC 9773)."""

from .ari import RenewalInfo, ari_cert_id
from .check import CASources, RevocationCheck, RevocationConfig
from .fetch import Fetcher, Response
from .result import InvalidRevocationData, RevocationResult, Status

__all__ = [
    "CASources",
    "Fetcher",
    "InvalidRevocationData",
    "RenewalInfo",
    "Response",
    "RevocationCheck",
    "RevocationConfig",
    "RevocationResult",
    "Status",
    "ari_cert_id",
]
