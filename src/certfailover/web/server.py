"""The status page's HTTP server: the standard library's threading server, read-only.

Routes: `/` (overview; `?ca=` and `?state=` filter), `/site/<name>`, `/status.json` (the
`status --json` document), `/static/*`, `/login` (only with a token). Authentication, when
configured: `Authorization: Bearer <token>`, or the cookie `/login` sets (HttpOnly,
SameSite=Strict), or a non-empty trusted proxy header. Without authentication (loopback only)
the Host header must name a loopback host: a page on another site cannot read this one by DNS
rebinding.
"""

from __future__ import annotations

import hmac
import logging
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..config import Config
from ..errors import CertFailoverError
from ..model import Clock, utcnow
from ..store.db import Database
from ..store.vault import Vault
from .pages import Pages
from .settings import WebSettings, is_loopback
from .source import Snapshots, site_details, status_document

__all__ = ["COOKIE", "App", "WebServer", "check_bind", "start"]

log = logging.getLogger(__name__)
COOKIE = "certfailover_token"
_STATIC = {"style.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class App:
    """Everything a request needs; the handler class only speaks HTTP."""

    def __init__(self, settings: WebSettings, config: Config, db: Database, vault: Vault | None,
                 *, clock: Clock | None = None,
                 build: Callable[[], dict[str, Any]] | None = None) -> None:
        self.settings, self.config, self.db, self.vault = settings, config, db, vault
        self.clock: Clock = clock or utcnow
        self.pages = Pages(refresh=settings.refresh)
        self.snapshots = Snapshots(
            build or (lambda: status_document(db, vault, config, self.clock())), settings.refresh)
        self.fractions = {s.name: s.renew_fraction for s in config.sites}
        self.static = {name: (resources.files(__package__) / "static" / name).read_bytes()
                       for name in _STATIC}

    def allowed(self, headers: Any) -> bool:
        s = self.settings
        if s.proxy_header is not None and (headers.get(s.proxy_header) or "").strip():
            return True
        if s.token is not None:
            given = ""
            auth = headers.get("Authorization") or ""
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
            else:
                try:
                    jar = SimpleCookie(headers.get("Cookie") or "")
                except CookieError:
                    jar = SimpleCookie()
                if COOKIE in jar:
                    given = jar[COOKIE].value
            return bool(given) and hmac.compare_digest(given.encode(), s.token.value.encode())
        return not s.authenticated

    def host_ok(self, host_header: str | None) -> bool:
        """Without authentication, only loopback names in Host (DNS rebinding)."""
        if self.settings.authenticated:
            return True
        if not host_header:
            return False
        host = urlsplit("//" + host_header).hostname or ""
        return is_loopback(host)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    #: seconds a connection may sit idle or send nothing (an idle keep-alive client, a body
    #: shorter than its Content-Length): then its thread is freed
    timeout = 30

    def log_message(self, fmt: str, *args: Any) -> None:  # requests at debug, not stderr
        log.debug("web %s " + fmt, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8", extra)

    def _message(self, status: HTTPStatus, text: str) -> None:
        self._html(status, self.server.app.pages.message(status.value, status.phrase, text))

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        path = url.path
        if not app.host_ok(self.headers.get("Host")):
            return self._message(HTTPStatus.MISDIRECTED_REQUEST,
                                 "This page answers only to a loopback host name.")
        if path.startswith("/static/") and path[8:] in _STATIC:
            name = path[8:]
            return self._send(200, app.static[name], _STATIC[name])
        if path == "/login" and app.settings.token is not None:
            return self._html(200, app.pages.login())
        if not app.allowed(self.headers):
            if path == "/status.json":
                return self._send(401, b'{"error": "authentication required"}\n',
                                  "application/json", {"WWW-Authenticate": "Bearer"})
            body = app.pages.login() if app.settings.token is not None else app.pages.message(
                401, "Unauthorized", "Authentication required (through the reverse proxy).")
            return self._html(401, body, {"WWW-Authenticate": "Bearer"})
        if path == "/status.json":
            return self._send(200, app.snapshots.latest_json(), "application/json")
        if path == "/":
            q = parse_qs(url.query)
            return self._html(200, app.pages.overview(
                app.snapshots.latest(), ca=q.get("ca", [""])[0], state=q.get("state", [""])[0],
                renew_fractions=app.fractions))
        if path.startswith("/site/"):
            return self._site(unquote(path[6:]))
        return self._message(HTTPStatus.NOT_FOUND, f"Nothing at {path}.")

    def _site(self, name: str) -> None:
        app = self.server.app
        doc = app.snapshots.latest()
        st = next((s for s in doc.get("sites", []) if s.get("site") == name), None)
        site = next((s for s in app.config.sites if s.name == name), None)
        if st is None or site is None:
            return self._message(HTTPStatus.NOT_FOUND, f"No site named {name!r}.")
        if app.vault is None:
            return self._message(HTTPStatus.SERVICE_UNAVAILABLE, "No store to read.")
        try:
            details = site_details(app.db, app.vault, site)
        except CertFailoverError as exc:
            return self._message(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
        now = datetime.fromisoformat(doc["time"])
        self._html(200, app.pages.site(st, details, now, renew_fraction=site.renew_fraction))

    def do_POST(self) -> None:
        app = self.server.app
        if urlsplit(self.path).path != "/login" or app.settings.token is None:
            return self._message(HTTPStatus.METHOD_NOT_ALLOWED, "This page changes nothing.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= 4096:
            return self._message(HTTPStatus.BAD_REQUEST, "A sign-in form is short.")
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        given = form.get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), app.settings.token.value.encode()):
            return self._html(401, app.pages.login("Wrong token."))
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: App

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or went away is the client's business (debug log), not a
        traceback on the daemon's stderr."""
        if isinstance(sys.exc_info()[1], (TimeoutError, ConnectionError)):
            log.debug("web: %s: %s", client_address, sys.exc_info()[1])
            return
        super().handle_error(request, client_address)


def _listen_error(exc: OSError, host: str, port: int) -> Exception:
    from ..metrics import ListenError
    return ListenError(exc.errno, f"web: cannot listen on {host}:{port}: {exc.strerror} (is "
                       "another process using it? choose another --web or [web] listen)")


def check_bind(listen: tuple[str, int] | None) -> None:
    """Before the daemon's lock and first tick: an address that cannot be bound is a clean
    error naming it."""
    if listen is None:
        return
    host, port = listen
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise _listen_error(exc, host, port) from None


def start(settings: WebSettings, config: Config, db: Database, vault: Vault) -> WebServer | None:
    """The page as `certfailover run` serves it (None when no address is configured)."""
    if settings.listen is None:
        return None
    srv = WebServer.start(App(settings, config, db, vault))
    log.info("status page at %s", srv.url)
    return srv


class WebServer:
    """A running status page: `.url`, `.stop()`."""

    def __init__(self, server: _Server, thread: threading.Thread, app: App) -> None:
        self._server, self._thread, self.app = server, thread, app
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @classmethod
    def start(cls, app: App) -> WebServer:
        listen = app.settings.listen
        if listen is None:
            raise ValueError("no address to listen on")
        host, port = listen

        class Server(_Server):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        try:
            server = Server((host, port), _Handler)
        except OSError as exc:
            raise _listen_error(exc, host, port) from None
        server.app = app
        app.snapshots.refresh_now()
        app.snapshots.start()
        thread = threading.Thread(target=server.serve_forever, name="certfailover-web",
                                  daemon=True)
        thread.start()
        return cls(server, thread, app)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        self.app.snapshots.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
