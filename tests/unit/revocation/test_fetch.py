from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest
from revpki import Route, TestServer

from certfailover.errors import FetchError
from certfailover.fetch import Fetcher


def test_ok_and_headers(server: TestServer) -> None:
    server.routes["/a"] = Route(body=b"hello", headers={"ETag": '"1"'})
    r = Fetcher().fetch(server.url("/a"))
    assert (r.status, r.body, r.headers["etag"]) == (200, b"hello", '"1"')


def test_post_body(server: TestServer) -> None:
    server.routes["/p"] = Route(body=b"ok")
    Fetcher().fetch(server.url("/p"), method="POST", body=b"req",
                    headers={"Content-Type": "application/ocsp-request"})
    assert server.requests[-1][0] == "POST" and server.requests[-1][3] == b"req"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http:///nohost",
                                 "ldap://x/y", "relative/path"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(FetchError, match="only absolute http"):
        Fetcher().fetch(url)


def test_redirects_bounded_and_scheme_checked(server: TestServer) -> None:
    for i in range(5):
        server.routes[f"/r{i}"] = Route(status=302, headers={"Location": f"/r{i + 1}"})
    server.routes["/r5"] = Route(body=b"end")
    assert Fetcher(max_redirects=5).fetch(server.url("/r0")).body == b"end"
    with pytest.raises(FetchError, match="redirects"):
        Fetcher(max_redirects=2).fetch(server.url("/r0"))
    server.routes["/evil"] = Route(status=301, headers={"Location": "file:///etc/passwd"})
    with pytest.raises(FetchError, match="file:///etc/passwd"):
        Fetcher().fetch(server.url("/evil"))


def test_size_limit_declared_and_streamed(server: TestServer) -> None:
    server.routes["/big"] = Route(body=b"x" * 5000)
    with pytest.raises(FetchError, match="limit"):
        Fetcher(max_bytes=1000).fetch(server.url("/big"))

    def chunked(h: BaseHTTPRequestHandler, _: bytes) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"y" * 1000)

    server.routes["/stream"] = chunked
    with pytest.raises(FetchError, match="limit"):
        Fetcher(max_bytes=10_000).fetch(server.url("/stream"))


def test_slow_headers_and_trickle_are_bounded(server: TestServer) -> None:
    server.routes["/slow"] = Route(body=b"late", delay=3)
    t0 = time.monotonic()
    with pytest.raises(FetchError):
        Fetcher(timeout=0.5).fetch(server.url("/slow"))
    server.routes["/trickle"] = Route(body=b"z" * 100, trickle=0.05)
    with pytest.raises(FetchError, match="timed out|failed"):
        Fetcher(timeout=0.5).fetch(server.url("/trickle"))
    assert time.monotonic() - t0 < 2.5


def test_reset_and_5xx(server: TestServer) -> None:
    server.routes["/reset"] = Route(body=b"x" * 100, reset=True)
    with pytest.raises(FetchError, match="/reset"):
        Fetcher().fetch(server.url("/reset"))
    server.routes["/err"] = Route(status=503)
    with pytest.raises(FetchError, match="HTTP 503"):
        Fetcher().fetch(server.url("/err"))


def test_refused() -> None:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(FetchError, match="request failed"):
        Fetcher(timeout=1).fetch(f"http://127.0.0.1:{port}/x")


def test_gzip_refused(server: TestServer) -> None:
    server.routes["/gz"] = Route(body=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="Content-Encoding"):
        Fetcher().fetch(server.url("/gz"))
