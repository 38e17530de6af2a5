"""What every notifier shares: the Notifier protocol, event kinds, severities, the JSON payload."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..backoff import doubling
from ..errors import CertFailoverError
from ..events import CRITICAL, INFO, KINDS, SEVERITIES, WARNING, severity
from ..model import Event, to_jsonable

__all__ = ["CRITICAL", "EVENT_KINDS", "INFO", "SEVERITIES", "WARNING", "Limits", "Notifier",
           "NotifyError", "event_json", "event_payload", "event_severity", "redact_url",
           "severity_rank"]

#: kind -> severity, for `[notify] kinds` and the notifiers; the kinds live in events.py
EVENT_KINDS: dict[str, str] = {k.value: info.severity for k, info in KINDS.items()}


class NotifyError(CertFailoverError):
    """A notifier could not deliver an event. The message never holds a secret.

    `retryable=False` (e.g. a webhook's 4xx) tells the delivery worker not to try again.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class Notifier(Protocol):
    def send(self, event: Event) -> None: ...


#: cap of one backoff wait between two attempts
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Limits:
    """How long one delivery (one event to one notifier) may take.

    `timeout`: the total deadline of ONE attempt (connect, send, every byte of the answer);
    `retries`: further attempts after a retryable failure, waiting `backoff`, 2x, 4x ... seconds
    (capped at MAX_BACKOFF) between them; `deadline`: the total of the whole delivery, attempts
    and waits included (None: the sum of every attempt's timeout and every wait).
    """

    timeout: float = 30.0
    retries: int = 0
    backoff: float = 1.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError("limits: timeout > 0, retries >= 0 and backoff >= 0 are required")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("limits: deadline must be > 0")

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        return doubling(self.backoff, MAX_BACKOFF, attempt)

    @property
    def total(self) -> float:
        """The deadline of a whole delivery."""
        if self.deadline is not None:
            return self.deadline
        return (self.retries + 1) * self.timeout + sum(
            self.delay(a) for a in range(1, self.retries + 1))


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for critical; ValueError names an unknown severity."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(
            f"unknown severity {severity!r}: expected one of {', '.join(SEVERITIES)}"
        ) from None


def event_severity(kind: str) -> str:
    """Severity of an event kind (events.severity); unknown kinds are "warning"."""
    return severity(kind)


def event_payload(event: Event) -> dict[str, Any]:
    """The one JSON shape of an event sent out: model.to_jsonable plus `severity`."""
    out: dict[str, Any] = to_jsonable(event)
    out["severity"] = event_severity(event.kind)
    return out


def event_json(event: Event) -> bytes:
    # default=str: an odd value in event.data (a Path, a Decimal) must not lose the event
    return json.dumps(event_payload(event), sort_keys=True, separators=(",", ":"),
                      default=str).encode()


def redact_url(url: str) -> str:
    """scheme://host[:port] only: paths and queries of webhook URLs often carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "") + ("/..." if parts.path else "")
