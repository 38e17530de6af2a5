"""certfailover-lab: the local lab for tests and `make demo` (real Pebble CAs, challtestsrv DNS,
nginx/Apache/HAProxy, PostgreSQL, fault proxies). A separate distribution in the repository
(`pip install ./lab`); the product package `certfailover` never imports it.

Import the processes from `certfailover_lab.pebble`; this module only holds small value types
shared by the test fixtures and the demo (it imports nothing heavy).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["BLOCKED_DOMAIN", "EabCredentials", "KeyAndCsr"]

BLOCKED_DOMAIN = "blocked.test"  # on every lab CA's domainBlocklist; 2 labels (see PebbleCA)


@dataclass(frozen=True)
class KeyAndCsr:
    """A fresh private key and a CSR for `domains` signed by it."""

    key: PrivateKeyTypes
    key_pem: bytes
    csr_pem: bytes
    domains: tuple[str, ...]


@dataclass(frozen=True)
class EabCredentials:
    """External Account Binding credentials as a CA hands them out."""

    kid: str
    hmac_key: str  # base64url

    def __repr__(self) -> str:  # never show the MAC key
        return f"EabCredentials(kid={self.kid!r}, hmac_key=<hidden>)"
