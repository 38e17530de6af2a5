"""Webhook notifier: JSON POST, optional HMAC-SHA256 signature, bounded retries with backoff."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import requests

from ..model import Event
from .base import NotifyError, event_json, redact_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Certfailover-Signature"


def sign(body: bytes, secret: str) -> str:
    """Header value for `body`: "sha256=" + hex HMAC-SHA256 keyed with `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """POST each event as JSON to `url`.

    Retries on connection errors, timeouts and 5xx: at most `retries` more attempts, waiting
    backoff, 2*backoff, 4*backoff, ... (capped at 60 s) between them. A 4xx is not retried.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
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
        self._session = session or requests.Session()
        self._sleep = sleep
        self.name = f"webhook {redact_url(url)}"

    def __repr__(self) -> str:  # never show the secret or the full URL
        return f"WebhookNotifier({redact_url(self._url)!r})"

    def send(self, event: Event) -> None:
        body = event_json(event)
        headers = {"Content-Type": "application/json", "User-Agent": "certfailover"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        attempts = self._retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                resp = self._session.post(
                    self._url, data=body, headers=headers, timeout=self._timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}"  # str(exc) repeats the full URL: keep it out
            else:
                status = resp.status_code
                resp.close()
                if 200 <= status < 300:
                    return
                if status < 500:
                    raise NotifyError(f"{self.name}: HTTP {status} (not retried)")
                last = f"HTTP {status}"
            if attempt < attempts:
                delay = min(60.0, self._backoff * (2 ** (attempt - 1)))
                log.info("%s: attempt %d/%d failed (%s), retrying in %.2fs",
                         self.name, attempt, attempts, last, delay)
                self._sleep(delay)
        raise NotifyError(f"{self.name}: gave up after {attempts} attempts: {last}")
