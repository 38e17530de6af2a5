"""From the `status --json` document to what the overview shows: one row per site, its state
(fail / warn / ok), its next dated risk, sorted by risk, filtered by CA and state. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["STATES", "Risk", "Row", "Standby", "cert_dates", "filter_rows", "overview_rows",
           "parse_time", "worst_finding"]

STATES = ("fail", "warn", "ok")
_RANK = {"fail": 0, "warn": 1, "ok": 2, "unchecked": 1}
_SEVERITY = {"fail": 2, "warn": 1, "ok": 0}


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Risk:
    when: datetime
    what: str  # "renewal point of CA x", "expiry of ...", "forecast: ..."


@dataclass(frozen=True)
class Standby:
    ca: str
    health: str
    days_left: float
    independent: bool
    why: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    site: str
    domains: tuple[str, ...]
    state: str  # fail, warn, ok
    active_ca: str | None
    active_days: float | None
    active_health: str | None
    standbys: tuple[Standby, ...]
    standbys_healthy: int
    min_standbys: int
    worst: str  # "severity check: reason" or ""
    worst_severity: str
    trust: tuple[tuple[str, str], ...]
    next_risk: Risk | None
    notes: tuple[str, ...]

    def sort_key(self) -> tuple[int, datetime, str]:
        far = datetime.max.replace(tzinfo=None)
        when = self.next_risk.when.replace(tzinfo=None) if self.next_risk else far
        return (_RANK.get(self.state, 1), when, self.site)


def worst_finding(findings: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    worst: Mapping[str, Any] | None = None
    for f in findings:
        if worst is None or _SEVERITY.get(str(f.get("severity")), 0) > \
                _SEVERITY.get(str(worst.get("severity")), 0):
            worst = f
    return worst


def cert_dates(cert: Mapping[str, Any], renew_fraction: float) -> list[Risk]:
    """Every dated point of one certificate: renewal point, forecast cut-offs, expiry."""
    out: list[Risk] = []
    nb, na = parse_time(cert.get("not_before")), parse_time(cert.get("not_after"))
    renew = None
    for f in cert.get("findings", []):  # the typed fields of model.Finding, as JSON
        forecast = parse_time(f.get("forecast"))
        if forecast is not None:
            program = f.get("program") or f.get("cannot_issue_for") or f.get("check")
            out.append(Risk(forecast, f"{program} cut-off ({cert.get('ca')})"))
    if nb is not None and na is not None:  # the validity check's rule
        renew = na - timedelta(seconds=(na - nb).total_seconds() * renew_fraction)
    if renew is not None:
        out.append(Risk(renew, f"renewal point ({cert.get('ca')})"))
    if na is not None:
        out.append(Risk(na, f"expiry ({cert.get('ca')})"))
    return sorted(out, key=lambda r: r.when)


def _row(st: Mapping[str, Any], now: datetime, renew_fraction: float) -> Row:
    certs: list[Mapping[str, Any]] = list(st.get("certs", []))
    active = next((c for c in certs if c.get("id") == st.get("active")), None)
    standbys = tuple(
        Standby(str(c.get("ca")), str(c.get("health")), float(c.get("days_left", 0.0)),
                not c.get("independence"), tuple(str(x) for x in c.get("independence", [])))
        for c in certs if c.get("state") == "standby")
    healthy = int(st.get("standbys_healthy", 0))
    want = int(st.get("min_standbys", 1))
    if active is None or active.get("health") == "fail" or float(active.get("days_left", 0)) <= 0:
        state = "fail"
    elif active.get("health") != "ok" or healthy < want:
        state = "warn"
    else:
        state = "ok"
    worst_text, worst_sev = "", "ok"
    w = worst_finding(f for c in certs for f in c.get("findings", []))
    if w is not None and w.get("severity") != "ok":
        owner = next((c for c in certs if w in c.get("findings", [])), None)
        ca = f"{owner.get('ca')} " if owner else ""
        worst_text = f"{ca}{w.get('check')}: {w.get('reason')}"
        worst_sev = str(w.get("severity"))
    elif active is None:
        worst_text, worst_sev = "no active certificate", "fail"
    risks = [r for c in certs for r in cert_dates(c, renew_fraction)]
    upcoming = [r for r in risks if r.when >= now]
    next_risk = min(upcoming, key=lambda r: r.when) if upcoming else None
    trust = tuple(sorted((active or {}).get("trust", {}).items()))
    return Row(
        site=str(st.get("site")), domains=tuple(st.get("domains", [])), state=state,
        active_ca=str(active.get("ca")) if active else None,
        active_days=float(active.get("days_left", 0.0)) if active else None,
        active_health=str(active.get("health")) if active else None,
        standbys=standbys, standbys_healthy=healthy, min_standbys=want,
        worst=worst_text, worst_severity=worst_sev, trust=trust, next_risk=next_risk,
        notes=tuple(str(n) for n in st.get("notes", [])))


def overview_rows(doc: Mapping[str, Any], *, now: datetime | None = None,
                  renew_fractions: Mapping[str, float] | None = None) -> list[Row]:
    """One row per site of a status document, riskiest first (state, then next dated risk)."""
    at = now or parse_time(doc.get("time"))
    if at is None:
        raise ValueError("status document without a time")
    fractions = renew_fractions or {}
    rows = [_row(st, at, fractions.get(str(st.get("site")), 1 / 3)) for st in doc.get("sites", [])]
    return sorted(rows, key=Row.sort_key)


def filter_rows(rows: Iterable[Row], *, ca: str | None = None, state: str | None = None) -> list[Row]:
    """`ca`: the active certificate's CA; `state`: fail, warn or ok. Empty values: no filter."""
    return [r for r in rows if (not ca or r.active_ca == ca) and (not state or r.state == state)]
