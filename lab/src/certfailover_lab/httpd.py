"""A threaded HTTP server on loopback for the length of a `with` block (test receivers, webroots)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler], *, host: str = "127.0.0.1",
            port: int = 0) -> Iterator[ThreadingHTTPServer]:
    """Serve `handler` on host:port (0: a free port, see `server.server_address`) until exit."""
    server = ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def quiet(_self: Any, _format: str, *_args: Any) -> None:
    """`log_message` replacement: test servers do not write access logs to stderr."""
