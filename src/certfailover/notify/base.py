"""What every notifier shares: the Notifier protocol, event kinds, severities, the JSON payload."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..errors import CertFailoverError
from ..model import Event, to_jsonable

INFO = "info"
WARNING = "warning"
CRITICAL = "critical"
SEVERITIES: tuple[str, ...] = (INFO, WARNING, CRITICAL)

#: Every event kind the daemon emits, with the severity an operator sees.
EVENT_KINDS: dict[str, str] = {
    "failover": WARNING,  # switched to a standby (automatic, but a human should know why)
    "rollback": CRITICAL,  # a switch could not be verified and was undone
    "none_healthy": CRITICAL,  # no certificate of the site is healthy
    "standby_missing": WARNING,  # the site has no healthy standby from an independent CA
    "distrust_forecast": WARNING,  # a root program will stop trusting a cert we keep
    "issuance_failed": WARNING,  # a CA refused or failed to issue
    "ca_unreachable": WARNING,  # a CA has been unreachable for longer than the threshold
    "signal_unknown": WARNING,  # a revocation/trust signal has been unknown for long
    "activated": INFO,  # first activation of a certificate for a site
    "issued": INFO,  # a new certificate was issued
    "retired": INFO,  # a certificate left the rotation (expired, replaced)
    "deploy_failed": CRITICAL,  # a switch failed and could not be verified or rolled back
}


class NotifyError(CertFailoverError):
    """A notifier could not deliver an event. The message never holds a secret."""


@runtime_checkable
class Notifier(Protocol):
    def send(self, event: Event) -> None: ...


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for critical; ValueError names an unknown severity."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(
            f"unknown severity {severity!r}: expected one of {', '.join(SEVERITIES)}"
        ) from None


def event_severity(kind: str) -> str:
    """Severity of an event kind; kinds not in EVENT_KINDS are "warning" (never silently info)."""
    return EVENT_KINDS.get(kind, WARNING)


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
