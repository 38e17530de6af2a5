"""The `[web]` table and `run --web HOST:PORT`: where the status page listens and who may read it.

    [web]
    listen = "127.0.0.1:8786"          # loopback by default
    token = "env:CERTFAILOVER_WEB_TOKEN"  # bearer token (env:/file: reference, never inline)
    proxy_header = "X-Forwarded-User"  # or: a trusted reverse proxy authenticates and sets it
    refresh = 2.0                      # seconds between status snapshots (and page polls)

A non-loopback address without `token` or `proxy_header` is refused at load: the page shows
every site, CA and finding, and nobody should publish that by accident.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from ..metrics import parse_listen
from ..tables import Secret, Table, resolve_secret

__all__ = ["WebSettings", "is_loopback", "web_settings", "with_listen"]

_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class WebSettings:
    listen: tuple[str, int] | None = None  # None: no status page
    token: Secret | None = None
    proxy_header: str | None = None
    refresh: float = 2.0

    @property
    def authenticated(self) -> bool:
        return self.token is not None or self.proxy_header is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _refuse_exposed(s: WebSettings, file: str, where: str) -> None:
    if s.listen is not None and not is_loopback(s.listen[0]) and not s.authenticated:
        host, port = s.listen
        raise ConfigError(file, where, f"the status page would listen on {host}:{port}, which is "
                          "not a loopback address, without authentication: set [web] token = "
                          "\"env:NAME\" (or \"file:/path\") or [web] proxy_header behind a trusted "
                          "reverse proxy (docs/web.md), or listen on 127.0.0.1")


def web_settings(t: Table, env: Mapping[str, str]) -> WebSettings:
    """The `[web]` table (absent or empty: no page unless `run --web` asks for one)."""
    listen = None
    text = t.get("listen", str, None)
    if text is not None:
        try:
            listen = parse_listen(text)
        except ValueError as exc:
            raise t.err("listen", str(exc)) from None
    token = None
    ref = t.get("token", str, None)
    if ref is not None:
        token = resolve_secret(ref, t, "token", env)
        if len(token.value) < 16:
            raise t.err("token", f"the secret named by {ref!r} is shorter than 16 characters")
    header = t.get("proxy_header", str, None)
    if header is not None and not _HEADER.match(header):
        raise t.err("proxy_header", f"{header!r} is not an HTTP header name")
    refresh = t.get("refresh", float, 2.0)
    if not 0.1 <= refresh <= 3600:
        raise t.err("refresh", "must be between 0.1 and 3600 seconds")
    t.check_unknown()
    s = WebSettings(listen, token, header, refresh)
    _refuse_exposed(s, t.file, "[web].listen")
    return s


def with_listen(s: WebSettings, text: str, *, file: str) -> WebSettings:
    """`run --web HOST:PORT` over the `[web]` table: same authentication rule."""
    try:
        listen = parse_listen(text)
    except ValueError as exc:
        raise ConfigError(file, "--web", str(exc)) from None
    out = WebSettings(listen, s.token, s.proxy_header, s.refresh)
    _refuse_exposed(out, file, "--web")
    return out
