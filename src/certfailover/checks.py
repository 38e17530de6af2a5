"""The Check protocol: one self-contained check of one certificate.

A check never raises for a bad certificate or a bad answer from the network: it returns
Findings. Anything it cannot verify is a WARN finding ("unknown"), never OK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

from cryptography import x509

from .model import Cert, Finding, RevocationMode, Signal
from .sitetrust import TrustAnchor


@dataclass(frozen=True)
class CertMaterial:
    """A certificate as loaded from the vault: metadata plus parsed X.509 objects."""

    cert: Cert
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # intermediates as served, leaf excluded, root excluded
    key_matches: bool  # the vault's private key belongs to the leaf


@dataclass(frozen=True)
class CheckContext:
    now: datetime
    domains: tuple[str, ...]  # the site's names the certificate must cover
    trust: tuple[TrustAnchor, ...]  # PEM bundles / root programs the chain must validate in
    distrusted_cas: frozenset[str] = frozenset()  # operator's "stop using CA X now" list
    renew_fraction: float = 1 / 3  # the renewal window: this last fraction of the lifetime
    revocation: RevocationMode = RevocationMode.SOFT_FAIL
    forecast_days: int = 90  # a root program's forecast this close is a warning
    #: (cert id, finding name) -> when that finding became unknown (stored by the engine)
    unknown_since: Mapping[tuple[str, str], datetime] = field(default_factory=dict)


@runtime_checkable
class Check(Protocol):
    """A check declares its name, the finding names it produces, the scheduler signals it
    answers (each with the findings that answer it), and whether it waits on remote parties
    (network: run off the switching path)."""

    name: ClassVar[str]
    findings: ClassVar[frozenset[str]]
    signals: ClassVar[Mapping[Signal, frozenset[str]]]
    remote: ClassVar[bool]

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]: ...
