"""CT's HTTP: one bounded GET (`fetch.Fetcher`: total deadline, size limit, few redirects),
and its JSON, with every failure raised as the caller's error naming the URL."""

from __future__ import annotations

import json
from typing import Any

from ..errors import CertFailoverError, FetchError
from ..fetch import Fetcher

__all__ = ["MAX_BYTES", "fetcher", "get", "json_of"]

MAX_BYTES = 32 << 20  # a get-entries batch of 1,000 or a data tile is a few MB; a list ~100 KB


def fetcher(timeout: float, max_bytes: int = MAX_BYTES) -> Fetcher:
    return Fetcher(timeout=timeout, max_bytes=max_bytes, user_agent="certfailover-ct")


def get(http: Fetcher, url: str, error: type[CertFailoverError], what: str = "") -> bytes:
    """The body of `url` if it answers 200; else `error("<url>: <what><why>")`."""
    try:
        resp = http.fetch(url)
    except FetchError as exc:
        where = url if exc.url == url else f"{url} (redirected to {exc.url})"
        raise error(f"{where}: {what}{exc.reason}") from None
    if resp.status != 200:
        raise error(f"{url}: {what}HTTP {resp.status}: "
                    f"{resp.body[:200].decode('utf-8', 'replace')!r}")
    return resp.body


def json_of(data: bytes | str, where: str, error: type[CertFailoverError],
            what: str = "") -> Any:
    """`data` as JSON; else `error("<where>: <what>not JSON (<why>)")`: not UTF-8, not JSON,
    a number too long for Python, nested too deeply."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise error(f"{where}: {what}not JSON ({exc})") from None
    except RecursionError:
        raise error(f"{where}: {what}not JSON (nested too deeply)") from None
