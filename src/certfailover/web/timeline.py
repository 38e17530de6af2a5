"""The geometry of a site's timeline picture: one validity bar per certificate, its renewal
point and forecast cut-offs, the switches (failover, activation, rollback) as vertical marks,
and "now". Rendered as SVG by templates/timeline.svg; no drawing library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .view import cert_dates, parse_time

__all__ = ["SWITCH_KINDS", "Bar", "Mark", "Timeline", "timeline"]

SWITCH_KINDS = ("failover", "activated", "rollback")
WIDTH, LEFT, RIGHT, ROW, TOP = 960.0, 200.0, 50.0, 34.0, 30.0


@dataclass(frozen=True)
class Mark:
    x: float
    label: str
    kind: str  # renewal, cutoff, expiry, failover, activated, rollback, now


@dataclass(frozen=True)
class Bar:
    label: str  # "CA serial-prefix (state)"
    state: str
    health: str
    y: float
    x0: float
    x1: float
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class Timeline:
    width: float
    height: float
    left: float
    bars: tuple[Bar, ...]
    switches: tuple[Mark, ...]
    now: Mark | None
    ticks: tuple[Mark, ...]  # axis dates
    start: datetime
    end: datetime


def timeline(certs: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], now: datetime,
             *, renew_fraction: float = 1 / 3) -> Timeline:
    spans = [(parse_time(c.get("not_before")), parse_time(c.get("not_after"))) for c in certs]
    times = [t for s in spans for t in s if t is not None]
    switches = [(parse_time(e.get("time")), e) for e in events if e.get("kind") in SWITCH_KINDS]
    times += [t for t, _ in switches if t is not None]
    start, end = (min(times), max(times)) if times else (now - timedelta(days=1), now)
    start, end = min(start, now), max(end, now)
    if end - start < timedelta(seconds=1):
        end = start + timedelta(seconds=1)
    span = (end - start).total_seconds()
    inner = WIDTH - LEFT - RIGHT

    def x(t: datetime) -> float:
        return round(LEFT + inner * (t - start).total_seconds() / span, 1)

    bars = []
    for i, (c, (nb, na)) in enumerate(zip(certs, spans, strict=True)):
        if nb is None or na is None:
            continue
        marks = []
        for r in cert_dates(c, renew_fraction):
            kind = "renewal" if r.what.startswith("renewal") else \
                "expiry" if r.what.startswith("expiry") else "cutoff"
            if kind != "expiry" and c.get("state") != "retired":
                marks.append(Mark(x(r.when), f"{r.what} {r.when:%Y-%m-%d %H:%M} UTC", kind))
        label = f"{c.get('ca')} {str(c.get('serial', ''))[:8]} ({c.get('state')})"
        bars.append(Bar(label, str(c.get("state")), str(c.get("health")), TOP + i * ROW,
                        x(nb), x(na), tuple(marks)))
    sw = tuple(Mark(x(t), f"{e.get('kind')} {t:%Y-%m-%d %H:%M:%S} UTC: {e.get('message')}",
                    str(e.get("kind"))) for t, e in switches if t is not None)
    n = 5
    ticks = tuple(Mark(x(start + (end - start) * k / n),
                       f"{start + (end - start) * k / n:%Y-%m-%d %H:%M}", "tick") for k in range(n + 1))
    height = TOP + max(len(bars), 1) * ROW + 24
    return Timeline(WIDTH, height, LEFT, tuple(bars), sw, Mark(x(now), "now", "now"), ticks,
                    start, end)
