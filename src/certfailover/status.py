"""The status of a site, from the store (no network): one JSON shape for CLI, API and metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .config import SiteConfig
from .model import CertState, Health, to_jsonable
from .policy import flagged
from .store.db import Database


def site_status(db: Database, site: SiteConfig, now: datetime) -> dict[str, Any]:
    certs = db.certs(site.name)
    distrusted = db.distrusted()
    rows: list[dict[str, Any]] = []
    active = None
    healthy_standbys = 0
    healths = {c.id: Health(c.id, tuple(db.findings(c.id))) for c in certs}
    for c in certs:
        h = healths[c.id]
        checked = bool(h.findings)
        health = h.severity.value if checked else "unchecked"
        if c.state is CertState.ACTIVE:
            active = c
        rows.append({
            "id": c.id, "ca": c.ca, "serial": c.serial, "state": c.state.value,
            "not_before": c.not_before, "not_after": c.not_after,
            "days_left": round(c.remaining(now) / 86400, 2), "key_type": c.key_type,
            "sha256": c.sha256, "health": health,
            "summary": "; ".join(h.reasons()) or ("ok" if checked else "not checked yet"),
            "findings": [to_jsonable(f) for f in h.findings],
            "distrusted": c.ca in distrusted,
        })
    for r, c in zip(rows, certs):
        h = healths[c.id]
        if c.state is CertState.STANDBY and h.findings and h.healthy and not flagged(h) \
                and active is not None and c.ca != active.ca and c.ca not in distrusted:
            healthy_standbys += 1
    notes = []
    if active is None:
        notes.append("no active certificate")
    if healthy_standbys < site.min_standbys:
        notes.append(f"only {healthy_standbys} healthy standby(s) from another CA; "
                     f"want {site.min_standbys}")
    if distrusted:
        notes.append("distrusted CAs: " + ", ".join(sorted(distrusted)))
    return {"site": site.name, "domains": list(site.domains), "active": active.id if active else None,
            "min_standbys": site.min_standbys, "standbys_healthy": healthy_standbys,
            "certs": rows, "notes": notes}
