"""Email notifier: SMTP with STARTTLS (smtplib), optional AUTH."""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..model import Event
from .base import Limits, NotifyError, event_payload, event_severity

#: longest subject (the message in full is always in the body)
SUBJECT_MAX = 200

_BREAKS = re.compile(r"[\r\n\t\v\f\x00-\x08\x0e-\x1f\x7f\u0085\u2028\u2029]+")


def one_line(text: str, limit: int | None = None) -> str:
    """`text` folded to one header-safe line: every line break (and control character) becomes
    one space ("nginx -t" output has many lines; a header must never carry CR or LF)."""
    out = " ".join(_BREAKS.sub(" ", text).split())
    if limit is not None and len(out) > limit:
        out = out[: limit - 3].rstrip() + "..."
    return out


def _check_address(what: str, value: str) -> str:
    if _BREAKS.search(value) or not value.strip():
        raise ValueError(f"email notifier: {what} {value!r} must be one non-empty line")
    return value


def format_email(event: Event, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The mail of `event`: every header is one line; the full (multi-line) message is in the
    body."""
    sev = event_severity(event.kind)
    msg = EmailMessage()
    msg["Subject"] = one_line(
        f"[certfailover] {sev.upper()} {event.kind} {event.site}: {event.message}", SUBJECT_MAX)
    msg["From"] = one_line(sender)
    msg["To"] = ", ".join(one_line(r) for r in recipients)
    msg["Date"] = formatdate(event.time.timestamp(), usegmt=True)
    msg["Message-ID"] = make_msgid(domain="certfailover")
    msg["X-Certfailover-Event"] = one_line(event.kind, 100)
    msg["X-Certfailover-Severity"] = sev
    payload = event_payload(event)
    text = (
        f"{sev.upper()}: {event.kind} on {event.site}\n"
        f"time: {event.time.isoformat()}\n\n"
        f"{event.message}\n\n"
        f"event data:\n{json.dumps(payload, indent=2, sort_keys=True)}\n"
    )
    msg.set_content(text)
    return msg


class EmailNotifier:
    """Send each event as a plain-text mail.

    With `starttls` (the default) the session is upgraded before AUTH and before any data; a
    server that does not offer STARTTLS is an error, never a silent fallback to plain text.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        recipients: Sequence[str],
        starttls: bool = True,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 5.0,
        deadline: float | None = None,
    ) -> None:
        if not recipients:
            raise ValueError("email notifier: at least one recipient is required")
        if (username is None) != (password is None):
            raise ValueError("email notifier: username and password go together")
        if username is not None and not starttls:
            raise ValueError("email notifier: refusing to send a password without STARTTLS")
        self._host, self._port = host, port
        self._sender = _check_address("sender", sender)
        self._recipients = tuple(_check_address("recipient", r) for r in recipients)
        self._starttls = starttls
        self._username, self._password = username, password
        self._ssl_context = ssl_context
        self._timeout = timeout
        self.limits = Limits(timeout=timeout, retries=retries, backoff=backoff, deadline=deadline)
        self.name = f"email {host}:{port}"

    def __repr__(self) -> str:
        return f"EmailNotifier({self._host!r}, {self._port})"

    def send(self, event: Event) -> None:
        """One attempt (`limits` tells notify.routes.Routes how to retry)."""
        self.attempt(event)

    def attempt(self, event: Event, timeout: float | None = None) -> None:
        timeout = self._timeout if timeout is None else timeout
        try:
            msg = format_email(event, sender=self._sender, recipients=self._recipients)
        except ValueError as exc:  # never retried: the same event fails the same way
            raise NotifyError(f"{self.name}: cannot format the mail: {exc}",
                              retryable=False) from None
        try:
            with smtplib.SMTP(self._host, self._port, timeout=timeout) as smtp:
                smtp.ehlo()
                if self._starttls:
                    if not smtp.has_extn("starttls"):
                        raise NotifyError(f"{self.name}: server does not offer STARTTLS")
                    ctx = self._ssl_context or ssl.create_default_context()
                    smtp.starttls(context=ctx)
                    smtp.ehlo()
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                refused = smtp.send_message(msg, from_addr=self._sender,
                                            to_addrs=list(self._recipients))
        except NotifyError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(f"{self.name}: authentication failed (SMTP {exc.smtp_code})",
                              retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if refused:
            raise NotifyError(f"{self.name}: recipients refused: {', '.join(sorted(refused))}")
