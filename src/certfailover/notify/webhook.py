"""Webhook notifier: JSON POST, optional HMAC-SHA256 signature, bounded retries with backoff."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import requests

from .. import net
from ..model import Event
from .base import Limits, NotifyError, event_json, redact_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Certfailover-Signature"


def sign(body: bytes, secret: str) -> str:
    """Header value for `body`: "sha256=" + hex HMAC-SHA256 keyed with `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """POST each event as JSON to `url`.

    `attempt(event, timeout)` is one POST that must end within `timeout` seconds in total
    (certfailover.net's deadline).
    `send(event)` retries on connection errors, timeouts and 5xx: at most `retries` more
    attempts, waiting backoff, 2*backoff, 4*backoff, ... (capped at 60 s) between them. A 4xx
    is not retried. notify.routes.Routes does the retries itself from `limits`.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        deadline: float | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url {redact_url(url)!r}: must be http:// or https://")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("webhook: retries >= 0, timeout > 0 and backoff >= 0 are required")
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self.limits = Limits(timeout=timeout, retries=retries, backoff=backoff, deadline=deadline)
        self._session: requests.Session = session if session is not None else net.session()
        self._sleep = sleep
        self.name = f"webhook {redact_url(url)}"

    def __repr__(self) -> str:  # never show the secret or the full URL
        return f"WebhookNotifier({redact_url(self._url)!r})"

    def attempt(self, event: Event, timeout: float | None = None) -> None:
        """One POST; NotifyError (retryable unless a 4xx) when it was not accepted."""
        timeout = self._timeout if timeout is None else timeout
        body = event_json(event)
        headers = {"Content-Type": "application/json", "User-Agent": "certfailover"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        try:
            with net.deadline(timeout):  # a total deadline: a drip ends on time
                resp = self._session.post(
                    self._url, data=body, headers=headers, timeout=timeout,
                    allow_redirects=False,
                )
                status = resp.status_code
                resp.close()
        except (requests.RequestException, OSError) as exc:  # net.DeadlineExceeded included
            # str(exc) repeats the full URL (tokens in paths): the type name only
            raise NotifyError(f"{self.name}: {type(exc).__name__}") from None
        if 200 <= status < 300:
            return
        if status < 500:
            raise NotifyError(f"{self.name}: HTTP {status} (not retried)", retryable=False)
        raise NotifyError(f"{self.name}: HTTP {status}")

    def send(self, event: Event) -> None:
        attempts = self._retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                self.attempt(event)
            except NotifyError as exc:
                if not exc.retryable:
                    raise
                last = str(exc).removeprefix(f"{self.name}: ")
            else:
                return
            if attempt < attempts:
                delay = self.limits.delay(attempt)
                log.info("%s: attempt %d/%d failed (%s), retrying in %.2fs",
                         self.name, attempt, attempts, last, delay)
                self._sleep(delay)
        raise NotifyError(f"{self.name}: gave up after {attempts} attempts: {last}")
