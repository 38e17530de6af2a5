"""HTTP-01 challenge solvers (RFC 8555 section 8.3) behind one two-method protocol.

A solver makes `http://<domain>/.well-known/acme-challenge/<token>` answer with the key
authorization while an authorization is pending, and forgets it afterwards.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import IssuanceError
from ..store.files import atomic_write

__all__ = ["CHALLENGE_PATH", "Http01Solver", "StandaloneSolver", "WebrootSolver"]

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # base64url, as RFC 8555 requires


@runtime_checkable
class Http01Solver(Protocol):
    def present(self, token: str, key_authorization: str) -> None: ...

    def cleanup(self, token: str) -> None: ...


def _check_token(token: str) -> str:
    if not _TOKEN_RE.match(token):
        # a token is used as a file name: never let a CA's answer choose a path
        raise IssuanceError(f"HTTP-01 token {token[:64]!r} is not base64url")
    return token


class WebrootSolver:
    """Writes `<webroot>/.well-known/acme-challenge/<token>` atomically; removes it in cleanup."""

    def __init__(self, webroot: Path) -> None:
        self.webroot = Path(webroot)

    @property
    def challenge_dir(self) -> Path:
        return self.webroot / CHALLENGE_PATH.strip("/")

    def present(self, token: str, key_authorization: str) -> None:
        path = self.challenge_dir / _check_token(token)
        try:
            atomic_write(path, key_authorization.encode("ascii"), mode=0o644)
        except OSError as e:
            raise IssuanceError(f"webroot solver: cannot write {path}: {e}") from e

    def cleanup(self, token: str) -> None:
        try:
            (self.challenge_dir / _check_token(token)).unlink(missing_ok=True)
        except OSError:
            pass  # a leftover challenge file is harmless; never fail an issuance over it


class _ChallengeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], answers: dict[str, str], lock: threading.Lock):
        self.answers = answers
        self.answers_lock = lock
        super().__init__(addr, _ChallengeHandler)


class _ChallengeHandler(BaseHTTPRequestHandler):
    server: _ChallengeServer

    def do_GET(self) -> None:
        body: bytes | None = None
        if self.path.startswith(CHALLENGE_PATH):
            token = self.path[len(CHALLENGE_PATH) :]
            with self.server.answers_lock:
                answer = self.server.answers.get(token)
            if answer is not None:
                body = answer.encode("ascii")
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry tokens only, but keep stderr quiet


class StandaloneSolver:
    """A tiny threaded HTTP server on host:port that runs only while challenges are pending.

    It starts with the first `present` and stops when the last token is cleaned up.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: _ChallengeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def present(self, token: str, key_authorization: str) -> None:
        _check_token(token)
        with self._lock:
            self._answers[token] = key_authorization
        if self._server is None:
            try:
                server = _ChallengeServer((self.host, self.port), self._answers, self._lock)
            except OSError as e:
                with self._lock:
                    self._answers.pop(token, None)
                raise IssuanceError(
                    f"standalone HTTP-01 solver cannot listen on {self.host}:{self.port}: {e}"
                ) from e
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"http01-{self.host}:{self.port}",
                daemon=True,
            )
            self._thread.start()

    def cleanup(self, token: str) -> None:
        with self._lock:
            self._answers.pop(token, None)
            idle = not self._answers
        if idle:
            self.close()

    def close(self) -> None:
        """Stop the server now (also when tokens are still present)."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
