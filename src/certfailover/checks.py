"""The Check protocol: one self-contained check of one certificate.

A check never raises for a bad certificate or a bad answer from the network: it returns
Findings. Anything it cannot verify is a WARN finding ("unknown"), never OK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from cryptography import x509

from .model import Cert, Finding


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
    trust: tuple[str, ...]  # trust stores / root programs the served chain must validate in
    distrusted_cas: frozenset[str] = frozenset()  # operator's "stop using CA X now" list
    options: Mapping[str, Any] = field(default_factory=dict)  # per-site knobs (renew_fraction, ...)


@runtime_checkable
class Check(Protocol):
    name: ClassVar[str]

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]: ...
