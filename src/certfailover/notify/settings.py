"""The `[notify]` table, parsed and checked into typed settings (config.load calls `parse`).

    [notify]                      # defaults for every notifier below
    kinds = ["failover", ...]     # optional; default: every kind (events.KINDS)
    min_severity = "info"         # info | warning | critical
    queue_size = 100              # optional; events queued per notifier (oldest dropped)

    [[notify.webhook]]            # or [notify.webhook] for a single one
    url = "https://..."  secret = "env:NAME"  timeout = 10  retries = 3  backoff = 1.0
    [[notify.email]]
    host port sender recipients starttls username password="env:NAME" ca_bundle timeout
    retries = 2  backoff = 5.0
    [[notify.command]]
    argv = ["/usr/local/bin/hook"]  timeout = 30  retries = 0  backoff = 1.0

Each notifier table may set its own `kinds` and `min_severity`, and `deadline` (seconds for a
whole delivery, retries included; default: every attempt's timeout plus every backoff wait).
`timeout` is the total deadline of one attempt. Secrets are references ("env:NAME" or
"file:/path"), never inline; errors name the file, the table and the key.

A `[notify]` table that yields no notifier is an error (the operator meant to be told and
would not be), and so is a notifier whose `kinds` and `min_severity` let no event through.
Parsing builds each notifier once and discards it (a notifier's own check, e.g. a malformed
mail address, is a ConfigError at load); notify.factory.build makes the ones that run.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..events import KINDS, SEVERITIES
from ..tables import Secret, Table, resolve_secret
from .base import INFO, Notifier, severity_rank
from .command import CommandNotifier
from .email import EmailNotifier
from .routes import QUEUE_SIZE
from .webhook import WebhookNotifier

__all__ = ["CommandSpec", "EmailSpec", "NotifierSpec", "NotifySettings", "Retry", "Route",
           "WebhookSpec", "parse"]


@dataclass(frozen=True)
class Retry:
    timeout: float
    retries: int
    backoff: float
    deadline: float | None


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    secret: Secret | None
    retry: Retry

    def make(self) -> Notifier:
        return WebhookNotifier(self.url, secret=self.secret.value if self.secret else None,
                               **_kwargs(self.retry))


@dataclass(frozen=True)
class EmailSpec:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool
    username: str | None
    password: Secret | None
    ca_bundle: Path | None
    retry: Retry

    def make(self) -> Notifier:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle)) if self.ca_bundle else None
        return EmailNotifier(
            self.host, self.port, sender=self.sender, recipients=self.recipients,
            starttls=self.starttls, username=self.username,
            password=self.password.value if self.password else None, ssl_context=ctx,
            **_kwargs(self.retry))


@dataclass(frozen=True)
class CommandSpec:
    argv: tuple[str, ...]
    retry: Retry

    def make(self) -> Notifier:
        return CommandNotifier(self.argv, **_kwargs(self.retry))


NotifierSpec = WebhookSpec | EmailSpec | CommandSpec


@dataclass(frozen=True)
class Route:
    """One notifier and the events it is sent."""

    where: str  # "[notify.webhook]" or "[[notify.email]] #2": for messages
    notifier: NotifierSpec
    kinds: frozenset[str] | None  # None: every kind
    min_severity: str


@dataclass(frozen=True)
class NotifySettings:
    routes: tuple[Route, ...]
    queue_size: int = QUEUE_SIZE


def _kwargs(r: Retry) -> dict[str, Any]:
    return {"timeout": r.timeout, "retries": r.retries, "backoff": r.backoff,
            "deadline": r.deadline}


def _filters(t: Table, kinds: frozenset[str] | None, min_sev: str
             ) -> tuple[frozenset[str] | None, str]:
    if "kinds" in t.data:
        listed = t.str_list("kinds", nonempty=True)
        known = [k.value for k in KINDS]
        unknown = [k for k in listed if k not in known]
        if unknown:
            raise t.err("kinds", f"unknown event kind {unknown[0]!r}; "
                                 f"expected some of {', '.join(known)}")
        kinds = frozenset(listed)
    sev = t.get("min_severity", str, min_sev)
    if sev not in SEVERITIES:
        raise t.err("min_severity", f"{sev!r} is not one of {', '.join(SEVERITIES)}")
    return kinds, sev


def _positive(t: Table, key: str, default: float) -> float:
    value = float(t.get(key, float, default))
    if value <= 0:
        raise t.err(key, "must be > 0")
    return value


def _retry(t: Table, timeout: float, retries: int, backoff: float) -> Retry:
    """timeout, retries, backoff and deadline of a notifier table."""
    n = t.get("retries", int, retries)
    if n < 0 or n > 10:
        raise t.err("retries", "must be between 0 and 10")
    wait = float(t.get("backoff", float, backoff))
    if wait < 0:
        raise t.err("backoff", "must be >= 0 seconds")
    deadline = _positive(t, "deadline", 1.0) if "deadline" in t.data else None
    return Retry(_positive(t, "timeout", timeout), n, wait, deadline)


def _webhook(t: Table, env: Mapping[str, str]) -> WebhookSpec:
    url = t.get("url", str, required=True)
    if not url.startswith(("http://", "https://")):
        raise t.err("url", "must be an http:// or https:// URL")
    ref = t.get("secret", str, None)
    return WebhookSpec(url, resolve_secret(ref, t, "secret", env) if ref else None,
                       _retry(t, 10.0, 3, 1.0))


def _email(t: Table, env: Mapping[str, str]) -> EmailSpec:
    host = t.get("host", str, required=True)
    port = t.get("port", int, 587)
    if not 0 < port < 65536:
        raise t.err("port", "out of range")
    recipients = t.str_list("recipients", nonempty=True)
    starttls = t.get("starttls", bool, True)
    username = t.get("username", str, None)
    ref = t.get("password", str, None)
    if (username is None) != (ref is None):
        raise t.err("password" if username else "username", "username and password go together")
    if username is not None and not starttls:
        raise t.err("starttls", "must be true when a password is set (never sent in clear)")
    bundle = t.get("ca_bundle", str, None)
    if bundle is not None:
        if not Path(bundle).is_file():
            raise t.err("ca_bundle", f"{bundle} does not exist")
        try:
            ssl.create_default_context(cafile=bundle)
        except (ssl.SSLError, OSError) as exc:
            raise t.err("ca_bundle", f"{bundle}: not a PEM CA bundle ({exc})") from None
    return EmailSpec(
        host, port, sender=t.get("sender", str, required=True), recipients=recipients,
        starttls=starttls, username=username,
        password=resolve_secret(ref, t, "password", env) if ref else None,
        ca_bundle=Path(bundle) if bundle else None, retry=_retry(t, 30.0, 2, 5.0))


def _command(t: Table, env: Mapping[str, str]) -> CommandSpec:
    return CommandSpec(t.str_list("argv", nonempty=True), _retry(t, 30.0, 0, 1.0))


_PARSERS: dict[str, Callable[[Table, Mapping[str, str]], NotifierSpec]] = {
    "webhook": _webhook, "email": _email, "command": _command}


def _passes_any(kinds: frozenset[str] | None, min_sev: str) -> bool:
    floor = severity_rank(min_sev)
    return any(severity_rank(info.severity) >= floor and (kinds is None or k.value in kinds)
               for k, info in KINDS.items())


def parse(raw: Mapping[str, Any], *, file: str, env: Mapping[str, str]) -> NotifySettings:
    """The `[notify]` table `raw` (present in the file). ConfigError names file, table, key."""
    top = Table(file, "[notify]", dict(raw))
    kinds, min_sev = _filters(top, None, INFO)
    queue_size = top.get("queue_size", int, QUEUE_SIZE)
    if queue_size < 1:
        raise top.err("queue_size", "must be >= 1")
    routes: list[Route] = []
    for kind, parse_one in _PARSERS.items():
        value = top.get(kind, (dict, list), None)
        if value is None:
            continue
        tables = value if isinstance(value, list) else [value]
        for i, data in enumerate(tables):
            where = f"[notify.{kind}]" if isinstance(value, dict) else f"[[notify.{kind}]] #{i + 1}"
            t = Table(file, where, data)
            k, sev = _filters(t, kinds, min_sev)
            spec = parse_one(t, env)
            t.check_unknown()
            if not _passes_any(k, sev):
                raise t.err("min_severity", f"{sev!r} with kinds {sorted(k or ())} lets no event "
                                            "through: this notifier would never be sent anything")
            try:
                spec.make()  # the notifier's own checks; nothing starts until a first event
            except ValueError as exc:
                raise ConfigError(file, where, str(exc)) from None
            routes.append(Route(where, spec, k, sev))
    top.check_unknown()
    if not routes:
        raise top.err("", "configures no notifier: add a [notify.webhook], [notify.email] or "
                          "[notify.command] table, or remove [notify] (events are then only "
                          "stored; see `certfailover events`)")
    return NotifySettings(tuple(routes), queue_size)
