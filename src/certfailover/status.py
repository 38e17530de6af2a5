"""The status of a site, from the store (no network): one JSON shape for CLI, API and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .chains import ChainJudge, describe, pick
from .config import DaemonConfig, SiteConfig
from .errors import CertFailoverError
from .events import EventKind
from .model import Cert, CertState, Health, Severity, to_jsonable
from .policy import healthy_standbys, unprotected
from .sitetrust import programs as program_names
from .store.db import Database
from .store.vault import Vault


@dataclass(frozen=True)
class ProgramTrust:
    """One root program's verdict on a certificate."""

    trusted: bool | None  # None: the program's data is missing (cannot verify)
    until: datetime | None = None  # a forecast: it stops trusting the certificate (or its CA)

    def __str__(self) -> str:
        if self.trusted is None:
            return "no data"
        if not self.trusted:
            return "not trusted"
        return f"until {self.until.date().isoformat()}" if self.until else "trusted"


def program_trust(h: Health) -> dict[str, ProgramTrust]:
    """Root program -> its verdict, from the findings that carry one (status and metrics)."""
    return {f.program: ProgramTrust(f.severity is not Severity.FAIL if f.known else None,
                                    f.forecast)
            for f in h.findings if f.program is not None}


def independence(vault: Vault, site: SiteConfig, active: Cert, other: Cert) -> list[str]:
    """Why `other` is no independent backup for `active` (empty: independent).

    Root programs named in the site's trust: `trust.evaluate.shares_root` (a common root in
    that program). Always: the same root name at the top of both chains."""
    try:
        a, b = vault.load(Path(active.path)), vault.load(Path(other.path))
    except CertFailoverError as exc:
        return [f"cannot compare chains: {exc}"]
    chain_a, chain_b = [a.leaf, *a.chain], [b.leaf, *b.chain]
    out: list[str] = []
    programs = list(program_names(site.trust))
    if programs:
        from .trust.evaluate import engine_for, shares_root
        eng = engine_for()
        for prog in shares_root(chain_a, chain_b, programs):
            common = eng.roots_for(chain_a[0], chain_a[1:], prog) & \
                eng.roots_for(chain_b[0], chain_b[1:], prog)
            out.append(f"shares root {min(common)[:16]} with the active in program {prog}")
    root_a, root_b = chain_a[-1].issuer.rfc4514_string(), chain_b[-1].issuer.rfc4514_string()
    if root_a == root_b:
        out.append(f"shares root {root_a} with the active")
    if other.ca == active.ca:
        out.append(f"same CA {other.ca} as the active")
    return out


def chain_rows(vault: Vault, judge: ChainJudge, site: SiteConfig, cert: Cert, now: datetime,
               live: Path | None) -> tuple[dict[str, Any], list[str]]:
    """The certificate's chains as status shows them: which one is served, which one should be
    and why (policy.choose_chain), and when each path stops working; plus text lines."""
    try:
        m = vault.load(Path(cert.path))
        choice, served, paths = pick(judge, cert, m.chains, m.leaf, site, now, live)
    except CertFailoverError as exc:
        return {"served": None, "choice": None, "reason": str(exc), "paths": []}, []
    rows = [{"index": p.index, "length": p.length, "top": p.top, "served": p.index == served,
             "ok": p.ok, "failed": list(p.failed), "until": p.until, "until_why": p.until_why}
            for p in paths]
    lines: list[str] = []
    if len(paths) > 1 or not all(p.ok for p in paths):  # one good chain is not news
        now_served = f"serves chain {served}" if served is not None else "not served"
        lines = [f"{cert.id}: {now_served}; {choice.reason}"]
        lines += [f"  {'*' if p.index == served else ' '} {describe(p)}" for p in paths]
    return {"served": served, "choice": choice.index, "reason": choice.reason,
            "paths": rows}, lines


def site_status(db: Database, site: SiteConfig, now: datetime, *,
                vault: Vault | None = None, daemon: DaemonConfig | None = None,
                judge: ChainJudge | None = None) -> dict[str, Any]:
    """With `vault`, standbys also say whether they share a root with the active one; with
    `daemon`, certificates too short-lived for its schedule are named; with `vault`, every
    certificate's chains (docs/chains.md): which is served and why, and when each path stops
    working, judged by `judge` (default: the default trust snapshot)."""
    certs = db.certs(site.name)
    distrusted = db.distrusted(site.name)
    revoked = db.revoked(site.name)
    rows: list[dict[str, Any]] = []
    active = None
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
            "revoked": c.id in revoked,
            "trust": {p: str(t) for p, t in program_trust(h).items()},
            "independence": [],
        })
    standbys = len(healthy_standbys(certs, healths, distrusted=distrusted.keys(),
                                    revoked=revoked.keys()))
    if vault is not None and active is not None:
        for r, c in zip(rows, certs):
            if c.id != active.id:
                r["independence"] = independence(vault, site, active, c)
    chain_lines: list[str] = []
    if vault is not None:
        judge = judge or ChainJudge.for_snapshot(None)
        live = _live(vault, site)
        for r, c in zip(rows, certs):
            r["chains"], lines = chain_rows(vault, judge, site, c, now, live)
            chain_lines += lines
    notes = []
    if active is None:
        notes.append("no active certificate")
    if standbys < site.min_standbys:
        notes.append(f"only {standbys} healthy standby(s) from another CA; "
                     f"want {site.min_standbys}")
    if distrusted:
        notes.append("distrusted CAs: " + ", ".join(f"{ca} ({why})"
                                                    for ca, why in sorted(distrusted.items())))
    dead = {f.reason for h in healths.values() for f in h.findings if f.cannot_issue_for}
    notes += sorted(dead)  # per CA: "CA X can no longer issue certificates trusted by P: ..."
    held = failed_switch(db, site.name, now)
    if held:
        notes.append(held)
    if daemon is not None:
        for c in certs:
            why = unprotected(c, site, interval=daemon.interval, issue_timeout=daemon.issue_timeout)
            if why:
                notes.append(f"{c.id}: {why}")
    return {"site": site.name, "domains": list(site.domains), "active": active.id if active else None,
            "min_standbys": site.min_standbys, "standbys_healthy": standbys,
            "certs": rows, "notes": notes, "chain_lines": chain_lines}


#: the events that end or start a switch's story (the last of them says where it stands)
_SWITCH_KINDS = (EventKind.ROLLBACK, EventKind.DEPLOY_FAILED, EventKind.FAILOVER,
                 EventKind.ACTIVATED, EventKind.CHAIN_SWITCH)


def failed_switch(db: Database, site: str, now: datetime) -> str | None:
    """A note when the site's last switch failed (rolled back or not deployed): to what, how
    many times in a row, and when the daemon tries again (Engine.switch_hold)."""
    last = db.events(site=site, kinds=[str(k) for k in _SWITCH_KINDS], limit=1)
    if not last or last[0].kind not in (EventKind.ROLLBACK, EventKind.DEPLOY_FAILED):
        return None
    ev = last[0]
    what = f"the switch to {ev.data.get('cert', '?')} failed"
    n, wait = ev.data.get("failures"), ev.data.get("retry_in")
    if isinstance(n, int):
        what += f" {n} time(s) in a row"
    what += f", last at {ev.time:%Y-%m-%d %H:%M:%S}Z ({ev.kind})"
    if isinstance(wait, (int, float)):
        at = ev.time + timedelta(seconds=wait)
        what += (f"; the daemon tries again at {at:%H:%M:%S}Z" if at > now
                 else "; the daemon tries again at its next tick")
    return what + "; `certfailover events` says why"


def _live(vault: Vault, site: SiteConfig) -> Path | None:
    try:
        return vault.live_target(site.name)
    except CertFailoverError:
        return None  # status notes a broken live link on its own
