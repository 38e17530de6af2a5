"""Plain, frozen data shared by every part of certfailover."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PathVerdict holds certificates; model itself parses none
    from cryptography import x509

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real clock. Code takes a Clock argument so tests can move time."""
    return datetime.now(UTC)


class Severity(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return {"ok": 0, "warn": 1, "fail": 2}[self.value]


class CertState(str, enum.Enum):
    ACTIVE = "active"
    STANDBY = "standby"
    RETIRED = "retired"


class Signal(str, enum.Enum):
    """What the scheduler checks on its own clock (schedule.SIGNALS)."""

    CRL = "crl"
    OCSP = "ocsp"
    ARI = "ari"
    TRUST = "trust"
    EXPIRY = "expiry"


class RevocationMode(str, enum.Enum):
    """A site's `revocation` setting: how long "unknown" may last."""

    SOFT_FAIL = "soft-fail"  # unknown stays a warning
    HARD_FAIL = "hard-fail"  # unknown for the revocation check's `hard_fail_after`: FAIL


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one certificate.

    The typed fields are what the policy, the scheduler, the engine and status read; `detail`
    is free-form display data that only the producing check writes and nobody else reads.
    """

    check: str
    severity: Severity
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    _: KW_ONLY
    renew: bool = False  # inside its renewal window: to be replaced in time
    replace: bool = False  # its CA (ARI) or a root program's forecast asks for a replacement
    revoked: bool = False  # a verified source says it is revoked
    known: bool = True  # False: the signal could not be obtained (unknown, never "good")
    next_due: Mapping[Signal, datetime] = field(default_factory=dict)  # scheduler hints
    program: str | None = None  # the root program this finding is the verdict of
    forecast: datetime | None = None  # when that program stops trusting it (or new issuance)
    cannot_issue_for: str | None = None  # a root program the CA can no longer issue for
    ari_id: str | None = None  # RFC 9773 certificate id (the `replaces` of the next order)

    @property
    def flagged(self) -> bool:
        """To be replaced: inside its renewal window, or a replacement was asked for."""
        return self.renew or self.replace


@dataclass(frozen=True)
class Health:
    cert_id: str
    findings: tuple[Finding, ...]

    @property
    def severity(self) -> Severity:
        worst = Severity.OK
        for f in self.findings:
            if f.severity.rank > worst.rank:
                worst = f.severity
        return worst

    @property
    def healthy(self) -> bool:
        return self.severity is not Severity.FAIL

    def reasons(self, at_least: Severity = Severity.WARN) -> list[str]:
        return [f"{f.check}: {f.reason}" for f in self.findings if f.severity.rank >= at_least.rank]


@dataclass(frozen=True)
class Cert:
    """A certificate certfailover keeps for a site (metadata; material lives in the vault)."""

    id: str  # "<site>/<ca>/<serial hex>"
    site: str
    ca: str
    serial: str  # lower-case hex
    not_before: datetime
    not_after: datetime
    sha256: str  # hex fingerprint of the leaf DER
    key_type: str  # "ec-p256", "rsa-2048", ...
    issuer_dn: str
    state: CertState
    created: datetime
    path: str  # the archive directory holding cert.pem, chain.pem, fullchain.pem, privkey.pem

    def remaining(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds()


class Action(str, enum.Enum):
    KEEP = "keep"
    ACTIVATE = "activate"  # first activation: nothing served yet
    FAILOVER = "failover"
    NONE_HEALTHY = "none_healthy"


@dataclass(frozen=True)
class Decision:
    site: str
    action: Action
    active: str | None  # cert id active now
    target: str | None  # cert id to activate
    reason: str
    replenish_from: tuple[str, ...] = ()  # CA names to try for new certificates, in order
    need: int = 0  # how many new certificates the site needs (from distinct CAs in replenish_from)
    retire: tuple[str, ...] = ()  # cert ids no longer worth keeping (expired, superseded)
    #: the site's certificates this decision was made on (the engine fills it): a certificate
    #: from the CA not among them when its order starts (another fleet controller's, stored
    #: since) makes the order needless; None: not known, no such re-check
    seen: frozenset[str] | None = None


@dataclass(frozen=True)
class Order:
    """One order sent to a CA: what the issuance budget counts."""

    id: int
    site: str
    ca: str
    started: datetime
    finished: datetime | None
    outcome: str  # pending, issued, failed, unusable
    transient: bool  # the CA could not be reached or answered with a transient error
    reason: str
    cert_id: str | None


@dataclass(frozen=True)
class RevokedFact:
    """A verified revocation: recorded once, never undone by later unknown answers."""

    cert_id: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class Event:
    time: datetime
    site: str
    kind: str  # issued, failover, rollback, none_healthy, activated, replenish_failed, ...
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def to_jsonable(obj: Any) -> Any:
    """One JSON shape per result, derived from the dataclasses."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Health):
            out["severity"] = obj.severity.value
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {k.value if isinstance(k, enum.Enum) else str(k): to_jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return obj


@dataclass(frozen=True)
class PathVerdict:
    """One stored chain of a certificate, judged at one time."""

    index: int  # the vault's chain index (0: the chain chosen at issuance)
    length: int  # certificates sent after the leaf
    top: str  # the issuer of the chain's last certificate (the root it is meant to reach)
    failed: tuple[str, ...]  # "anchor: why" for each required anchor that does not accept it
    until: datetime | None  # when it stops working: a program's forecast, a path cert's expiry
    until_why: str = ""
    roots: tuple[x509.Certificate, ...] = ()  # anchors it reaches in the site's PEM bundles
    root_sha256: tuple[str, ...] = ()  # roots it reaches in the required root programs

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ServedChain:
    """Which chain of a certificate to serve, and why (policy.choose_chain)."""

    index: int | None  # None: no stored chain satisfies every required anchor
    reason: str
