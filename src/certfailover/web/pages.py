"""The pages as HTML: Jinja2 templates (autoescaped) over the status document and site details."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from .source import SiteDetails
from .timeline import timeline
from .view import STATES, Row, filter_rows, overview_rows, parse_time

__all__ = ["Pages"]


def _when(value: Any) -> str:
    t = parse_time(value)
    return f"{t:%Y-%m-%d %H:%M} UTC" if t is not None else str(value or "-")


class Pages:
    def __init__(self, *, refresh: float = 2.0) -> None:
        self.env = Environment(loader=PackageLoader("certfailover.web", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = _when
        self.refresh = refresh
        self._rows: tuple[Mapping[str, Any], list[Row]] | None = None

    def rows(self, doc: Mapping[str, Any], renew_fractions: Mapping[str, float]) -> list[Row]:
        """Sorted rows of a snapshot, computed once per snapshot (the page is asked often)."""
        cached = self._rows
        if cached is not None and cached[0] is doc:
            return cached[1]
        rows = overview_rows(doc, renew_fractions=renew_fractions)
        self._rows = (doc, rows)
        return rows

    def overview(self, doc: Mapping[str, Any], *, ca: str = "", state: str = "",
                 renew_fractions: Mapping[str, float] | None = None) -> str:
        rows = self.rows(doc, renew_fractions or {})
        cas = sorted({r.active_ca for r in rows if r.active_ca})
        shown = filter_rows(rows, ca=ca, state=state)
        counts = {s: sum(1 for r in rows if r.state == s) for s in STATES}
        return self.env.get_template("overview.html").render(
            rows=shown, total=len(rows), cas=cas, states=STATES, ca=ca, state=state,
            counts=counts, time=doc.get("time"), refresh=self.refresh)

    def site(self, site: Mapping[str, Any], details: SiteDetails, now: datetime, *,
             renew_fraction: float = 1 / 3) -> str:
        certs = list(site.get("certs", []))
        tl = timeline([*details.retired, *certs], list(reversed(details.events)), now,
                      renew_fraction=renew_fraction)
        return self.env.get_template("site.html").render(
            site=site, certs=certs, details=details, tl=tl, time=now.isoformat(),
            refresh=self.refresh,
            event_data=lambda d: json.dumps(d, sort_keys=True, default=str) if d else "")

    def message(self, status: int, title: str, text: str) -> str:
        return self.env.get_template("message.html").render(status=status, title=title, text=text,
                                                            refresh=0, time=None)

    def login(self, error: str = "") -> str:
        return self.env.get_template("login.html").render(error=error, refresh=0, time=None)
