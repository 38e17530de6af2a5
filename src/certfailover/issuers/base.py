"""The Issuer port: anything that turns a CSR into a certificate from one named CA."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["Issued", "Issuer"]


@dataclass(frozen=True)
class Issued:
    """A freshly issued certificate, as the CA sent it."""

    leaf_pem: bytes  # the leaf only
    chain_pem: bytes  # intermediates (as the CA sent them, no root), concatenated PEM
    ca: str  # issuer (CA config) name
    alt_chains_pem: tuple[bytes, ...] = ()  # the CA's other chains for the leaf (docs/chains.md)

    @property
    def fullchain_pem(self) -> bytes:
        return self.leaf_pem + self.chain_pem


@runtime_checkable
class Issuer(Protocol):
    name: str

    def issue(self, csr_pem: bytes, *, deadline: datetime, replaces: str | None = None) -> Issued:
        """Issue a certificate for `csr_pem` before `deadline` (UTC-aware).

        `replaces` is the ARI CertID (RFC 9773) of the certificate this one replaces.
        Raises IssuanceError (permanent) or TransientIssuanceError (worth retrying later).
        """
        ...
