"""The `[ct]` table: which CT logs to watch and how often. No table: no watch.

    [ct]
    log_list = "https://www.gstatic.com/ct/log_list/v3/log_list.json"   # or a file path
    interval = "5m"          # between polls (the daemon's background job)
    timeout = 30             # seconds, whole request, each HTTP call
    pass_budget = "10m"      # one pass over all the logs, in all: the logs it did not reach
                             # (and the rest of a log it was reading) come first next pass
    batch = 1000             # entries per get-entries request
    start = "end"            # a log seen for the first time: from its current end, or "beginning"
    subdomains = ["shop"]    # sites whose subdomains are watched too
    distrust_on_unexpected = ["www"]  # sites whose CA is distrusted (for the site) when an
                             # unexpected certificate from it appears: fail over at once
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schedule import parse_duration
from ..tables import Table

__all__ = ["CTSettings", "from_table"]

STARTS = ("end", "beginning")


@dataclass(frozen=True)
class CTSettings:
    log_list: str
    interval: float = 300.0
    timeout: float = 30.0
    batch: int = 1000
    pass_budget: float = 600.0
    start: str = "end"
    subdomains: tuple[str, ...] = ()
    distrust_on_unexpected: tuple[str, ...] = ()  # sites


def _seconds(t: Table, key: str, default: float) -> float:
    raw = t.get(key, (int, float, str), default)
    try:
        value = parse_duration(raw).total_seconds()
    except (ValueError, TypeError) as exc:
        raise t.err(key, str(exc)) from None
    if value <= 0:
        raise t.err(key, "must be > 0")
    return value


def from_table(t: Table, *, base: Path, sites: Iterable[str]) -> CTSettings | None:
    """The watch's settings from `[ct]` (None when the table is empty: no watch). A relative
    log list path is relative to `base` (the config file's directory)."""
    if not t.data:
        return None
    source: str = t.get("log_list", str, required=True)
    if source.startswith(("http://", "https://")):
        t.url("log_list", source, "a CT log list (v3 JSON)")
    else:
        path = Path(source).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise t.err("log_list", f"{path} does not exist (a CT log list v3 JSON file or URL)")
        source = str(path)
    batch = t.get("batch", int, 1000)
    if not 1 <= batch <= 10000:
        raise t.err("batch", "must be between 1 and 10000")
    start = t.get("start", str, "end")
    if start not in STARTS:
        raise t.err("start", f"must be one of {', '.join(STARTS)}")
    known = set(sites)
    subdomains = t.str_list("subdomains", ())
    for s in subdomains:
        if s not in known:
            raise t.err("subdomains", f"{s!r} is not a configured [[site]]")
    distrust = t.str_list("distrust_on_unexpected", ())
    for s in distrust:
        if s not in known:
            raise t.err("distrust_on_unexpected", f"{s!r} is not a configured [[site]]")
    out = CTSettings(log_list=source, interval=_seconds(t, "interval", 300.0),
                     timeout=_seconds(t, "timeout", 30.0), batch=batch, start=start,
                     pass_budget=_seconds(t, "pass_budget", 600.0),
                     subdomains=subdomains, distrust_on_unexpected=distrust)
    t.check_unknown()
    return out


def from_raw(raw: Any, *, file: str, base: Path, sites: Iterable[str]) -> CTSettings | None:
    """`[ct]` of a parsed TOML document (ConfigError names file, table and key)."""
    return from_table(Table(file, "[ct]", raw.get("ct", {})), base=base, sites=sites)
