"""Build notifiers from the `[notify]` config table (see contrib/certfailover.example.toml).

    [notify]                      # defaults for every notifier below
    kinds = ["failover", ...]     # optional; default: every kind
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

from_config returns a notify.routes.Routes: one queue and one worker thread per notifier.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tables import Table, resolve_secret
from .base import EVENT_KINDS, INFO, SEVERITIES, Notifier
from .command import CommandNotifier
from .dispatch import Dispatcher
from .email import EmailNotifier
from .routes import QUEUE_SIZE, Routes
from .webhook import WebhookNotifier

__all__ = ["Routes", "from_config"]


def _filters(t: Table, kinds: set[str] | None, min_sev: str) -> tuple[set[str] | None, str]:
    if "kinds" in t.data:
        listed = t.str_list("kinds", nonempty=True)
        unknown = [k for k in listed if k not in EVENT_KINDS]
        if unknown:
            raise t.err("kinds", f"unknown event kind {unknown[0]!r}; "
                                 f"expected some of {', '.join(EVENT_KINDS)}")
        kinds = set(listed)
    sev = t.get("min_severity", str, min_sev)
    if sev not in SEVERITIES:
        raise t.err("min_severity", f"{sev!r} is not one of {', '.join(SEVERITIES)}")
    return kinds, sev


def _positive(t: Table, key: str, default: float) -> float:
    value = float(t.get(key, float, default))
    if value <= 0:
        raise t.err(key, "must be > 0")
    return value


def _retry(t: Table, retries: int, backoff: float) -> dict[str, Any]:
    """retries, backoff and deadline of a notifier table."""
    n = t.get("retries", int, retries)
    if n < 0 or n > 10:
        raise t.err("retries", "must be between 0 and 10")
    wait = float(t.get("backoff", float, backoff))
    if wait < 0:
        raise t.err("backoff", "must be >= 0 seconds")
    deadline = _positive(t, "deadline", 1.0) if "deadline" in t.data else None
    return {"retries": n, "backoff": wait, "deadline": deadline}


def _webhook(t: Table, env: Mapping[str, str]) -> Notifier:
    url = t.get("url", str, required=True)
    if not url.startswith(("http://", "https://")):
        raise t.err("url", "must be an http:// or https:// URL")
    ref = t.get("secret", str, None)
    return WebhookNotifier(
        url,
        secret=resolve_secret(ref, t, "secret", env).value if ref else None,
        timeout=_positive(t, "timeout", 10.0), **_retry(t, 3, 1.0),
    )


def _email(t: Table, env: Mapping[str, str]) -> Notifier:
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
    ctx: ssl.SSLContext | None = None
    bundle = t.get("ca_bundle", str, None)
    if bundle is not None:
        if not Path(bundle).is_file():
            raise t.err("ca_bundle", f"{bundle} does not exist")
        try:
            ctx = ssl.create_default_context(cafile=bundle)
        except (ssl.SSLError, OSError) as exc:
            raise t.err("ca_bundle", f"{bundle}: not a PEM CA bundle ({exc})") from None
    return EmailNotifier(
        host, port, sender=t.get("sender", str, required=True), recipients=recipients,
        starttls=starttls, username=username,
        password=resolve_secret(ref, t, "password", env).value if ref else None,
        ssl_context=ctx, timeout=_positive(t, "timeout", 30.0), **_retry(t, 2, 5.0),
    )


def _command(t: Table, env: Mapping[str, str]) -> Notifier:
    argv = t.str_list("argv", nonempty=True)
    return CommandNotifier(argv, timeout=_positive(t, "timeout", 30.0), **_retry(t, 0, 1.0))


_BUILDERS = {"webhook": _webhook, "email": _email, "command": _command}


def from_config(raw: Mapping[str, Any], *, file: str,
                env: Mapping[str, str] | None = None) -> Routes | None:
    """Routes for the `[notify]` table `raw`, or None when no notifier is configured."""
    env = os.environ if env is None else env
    top = Table(file, "[notify]", dict(raw))
    kinds, min_sev = _filters(top, None, INFO)
    queue_size = top.get("queue_size", int, QUEUE_SIZE)
    if queue_size < 1:
        raise top.err("queue_size", "must be >= 1")
    dispatchers: list[Dispatcher] = []
    for kind, build in _BUILDERS.items():
        value = top.get(kind, (dict, list), None)
        if value is None:
            continue
        tables = value if isinstance(value, list) else [value]
        for i, data in enumerate(tables):
            where = f"[notify.{kind}]" if isinstance(value, dict) else f"[[notify.{kind}]] #{i + 1}"
            t = Table(file, where, data)
            k, sev = _filters(t, kinds, min_sev)
            notifier = build(t, env)
            t.check_unknown()
            dispatchers.append(Dispatcher([notifier], kinds=k, min_severity=sev))
    top.check_unknown()
    if not dispatchers:
        return None
    return Routes(dispatchers, queue_size=queue_size)

