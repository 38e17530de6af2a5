"""ACME Renewal Information (RFC 9773): certificate identifier and renewalInfo parsing."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from cryptography import x509

from .result import InvalidRevocationData

__all__ = ["RenewalInfo", "ari_cert_id", "parse_renewal_info", "parse_retry_after"]

# RFC 9773 4.3: clients should poll no more often than this, and at least this often.
MIN_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=6)
DEFAULT_RETRY = timedelta(hours=6)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ari_cert_id(leaf: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER bytes).

    Raises ValueError if the certificate has no authority key identifier.
    """
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no authorityKeyIdentifier: no ARI identifier") from None
    if aki.key_identifier is None:
        raise ValueError("authorityKeyIdentifier has no keyIdentifier: no ARI identifier")
    n = leaf.serial_number
    serial = n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)  # DER INTEGER content
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial)}"


@dataclass(frozen=True)
class RenewalInfo:
    ari_id: str
    window_start: datetime
    window_end: datetime
    explanation_url: str | None
    next_poll: datetime  # honour Retry-After: do not ask again before this

    def started(self, now: datetime) -> bool:
        return now >= self.window_start


def parse_retry_after(value: str | None, now: datetime) -> datetime:
    """Retry-After (seconds or HTTP-date), clamped to [1 minute, 6 hours] from now."""
    delay = DEFAULT_RETRY
    if value:
        v = value.strip()
        if v.isdigit():
            delay = timedelta(seconds=int(v))
        else:
            try:
                when = parsedate_to_datetime(v)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                delay = when - now
            except (TypeError, ValueError):
                delay = DEFAULT_RETRY
    return now + min(max(delay, MIN_RETRY), MAX_RETRY)


def _time(obj: dict[str, object], key: str, source: str) -> datetime:
    raw = obj.get(key)
    if not isinstance(raw, str):
        raise InvalidRevocationData(source, f"suggestedWindow.{key} missing or not a string")
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRevocationData(source, f"suggestedWindow.{key} is not RFC 3339: {raw!r}"
                                    ) from None
    if t.tzinfo is None:
        raise InvalidRevocationData(source, f"suggestedWindow.{key} has no time zone")
    return t.astimezone(UTC)


def parse_renewal_info(body: bytes, *, ari_id: str, source: str, now: datetime,
                       retry_after: str | None = None) -> RenewalInfo:
    """Parse a renewalInfo JSON document; InvalidRevocationData names `source`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRevocationData(source, f"renewalInfo is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("suggestedWindow"), dict):
        raise InvalidRevocationData(source, "renewalInfo has no suggestedWindow object")
    win = doc["suggestedWindow"]
    start, end = _time(win, "start", source), _time(win, "end", source)
    if end <= start:
        raise InvalidRevocationData(source, "suggestedWindow end is not after start")
    expl = doc.get("explanationURL")
    if expl is not None and not isinstance(expl, str):
        raise InvalidRevocationData(source, "explanationURL is not a string")
    return RenewalInfo(ari_id, start, end, expl, parse_retry_after(retry_after, now))
