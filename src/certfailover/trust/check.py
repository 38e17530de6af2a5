"""Health check: does every required root program trust what the site serves?

One Finding per required program (``ctx.trust`` names in ``KNOWN_PROGRAMS``):

- FAIL  ``detail={"program", "reason", "path"}`` when the program does not trust the chain now;
- WARN  ``detail={"program", "reason", "date", "kind"}`` when a forecast (distrust-after date,
  removal date, Chrome version constraint) falls inside ``ctx.options["forecast_days"]``
  (default 90); ``kind`` is ``certificate`` (this certificate stops being trusted on
  ``date``) or ``issuance`` (certificates issued after ``date`` from the same root are not
  trusted: get an independent standby before then); a ``certificate`` forecast also sets
  ``detail["replace"] = True`` so the policy treats the certificate as one to replace;
- WARN  when the snapshot has no data for the program (cannot verify);
- OK    otherwise.

Names not in ``KNOWN_PROGRAMS`` ("system", PEM bundle paths) are left to other checks.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from ..checks import CertMaterial, CheckContext
from ..model import Finding, Severity
from .evaluate import ForecastKind, Reason, TrustEngine, engine_for
from .programs import KNOWN_PROGRAMS
from .snapshot import Snapshot, load_snapshot

DEFAULT_FORECAST_DAYS = 90


class ProgramTrustCheck:
    name: ClassVar[str] = "trust"

    def __init__(self, snapshot: Snapshot | None = None, *, path: Path | None = None) -> None:
        """`snapshot` fixed, or the file at `path` (re-read when it changes; the packaged
        snapshot is used until the file exists), or the default snapshot."""
        self._snapshot = snapshot
        self._path = path

    def _engine(self) -> TrustEngine:
        if self._snapshot is None and self._path is not None and self._path.exists():
            return engine_for(load_snapshot(self._path))
        return engine_for(self._snapshot)

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        programs = [p for p in ctx.trust if p in KNOWN_PROGRAMS]
        if not programs:
            return []
        ev = self._engine().evaluate(material.leaf, material.chain, at=ctx.now, programs=programs)
        horizon = timedelta(days=float(ctx.options.get("forecast_days", DEFAULT_FORECAST_DAYS)))
        findings: list[Finding] = []
        for v in ev.verdicts:
            path = [p.subject for p in v.path]
            if v.reason is Reason.NO_DATA:
                findings.append(Finding(self.name, Severity.WARN, f"{v.program}: {v.detail}",
                                        {"program": v.program, "reason": v.reason.value}))
            elif not v.trusted:
                findings.append(Finding(
                    self.name, Severity.FAIL,
                    f"not trusted by {v.program}: {v.reason.value}: {v.detail}",
                    {"program": v.program, "reason": v.reason.value, "path": path},
                ))
            else:
                soon = [f for f in v.forecasts if f.date - ctx.now <= horizon]
                if soon:
                    f = min(soon, key=lambda f: f.date)
                    detail: dict[str, object] = {
                        "program": v.program, "reason": f.reason.value, "date": f.date.isoformat(),
                        "kind": f.kind.value, "path": path,
                    }
                    if f.kind is ForecastKind.CERTIFICATE:
                        detail["replace"] = True  # policy: move to an unflagged standby in time
                    findings.append(Finding(
                        self.name, Severity.WARN,
                        f"{v.program} forecast {f.date.date().isoformat()}: {f.detail}", detail,
                    ))
                else:
                    findings.append(Finding(self.name, Severity.OK, f"trusted by {v.program}",
                                            {"program": v.program, "path": path}))
        return findings
