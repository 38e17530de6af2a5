"""Health check: does every required root program trust what the site serves?

One Finding per required program (``ctx.trust`` names in ``KNOWN_PROGRAMS``), its
``program`` field naming the program:

- FAIL  when the program does not trust the chain now;
- WARN  when a forecast (distrust-after date, removal date, Chrome version constraint) falls
  inside ``ctx.forecast_days`` (default 90): ``forecast`` is its date (also the trust signal's
  next-due hint); ``detail["kind"]`` is ``certificate`` (this certificate stops being trusted
  then) or ``issuance`` (certificates issued after it from the same root are not trusted: get
  an independent standby before then); a ``certificate`` forecast also sets ``replace`` so the
  policy treats the certificate as one to replace;
- WARN  ``known=False`` when the snapshot has no data for the program (cannot verify);
- WARN  check ``ca_issuance``, ``cannot_issue_for`` naming the program, when a certificate the
  same CA issued now (same chain) would not be trusted by the program (a passed
  distrust-after or SCT cut-off): the CA cannot replace this certificate;
- OK    otherwise.

Names not in ``KNOWN_PROGRAMS`` ("system", PEM bundle paths) are left to other checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from cryptography import x509

from ..checks import CertMaterial, CheckContext
from ..model import Finding, Severity, Signal
from ..sitetrust import programs as program_names
from .evaluate import ForecastKind, Reason, TrustEngine, engine_for
from .snapshot import Snapshot, load_snapshot


class ProgramTrustCheck:
    name: ClassVar[str] = "trust"
    findings: ClassVar[frozenset[str]] = frozenset({name, "ca_issuance"})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.TRUST: findings}
    remote: ClassVar[bool] = False  # the snapshot is local; refresh.py fetches upstream data

    def __init__(self, snapshot: Snapshot | None = None, *, path: Path | None = None) -> None:
        """`snapshot` fixed, or the file at `path` (re-read when it changes; the packaged
        snapshot is used until the file exists), or the default snapshot."""
        self._snapshot = snapshot
        self._path = path

    def trust_engine(self) -> TrustEngine:
        """The engine over the current snapshot (the chain judge evaluates paths with it)."""
        if self._snapshot is None and self._path is not None and self._path.exists():
            return engine_for(load_snapshot(self._path))
        return engine_for(self._snapshot)

    def untrusted(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate], *,
                  programs: Sequence[str], at: datetime, name: str) -> list[str]:
        """"program: not trusted (reason)" for each of `programs` that does not trust the
        chain for `name`, by the rule of run() (no data is unknown, not a failure): the
        post-deploy validator (wiring.ServerDeployer) asks this of the check the engine runs."""
        ev = self.trust_engine().evaluate(leaf, list(chain), at=at, programs=list(programs), name=name)
        return [f"{v.program}: not trusted ({v.reason.value})" for v in ev.verdicts
                if not v.trusted and v.reason is not Reason.NO_DATA]

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        programs = list(program_names(ctx.trust))
        if not programs:
            return []
        ev = self.trust_engine().evaluate(material.leaf, material.chain, at=ctx.now, programs=programs)
        horizon = timedelta(days=ctx.forecast_days)
        findings: list[Finding] = []
        for v in ev.verdicts:
            path = [p.subject for p in v.path]
            if v.reason is Reason.NO_DATA:
                findings.append(Finding(self.name, Severity.WARN, f"{v.program}: {v.detail}",
                                        {"reason": v.reason.value}, program=v.program,
                                        known=False))
            elif not v.trusted:
                findings.append(Finding(
                    self.name, Severity.FAIL,
                    f"not trusted by {v.program}: {v.reason.value}: {v.detail}",
                    {"reason": v.reason.value, "path": path}, program=v.program,
                ))
            else:
                soon = [f for f in v.forecasts if f.date - ctx.now <= horizon]
                if soon:
                    f = min(soon, key=lambda f: f.date)
                    findings.append(Finding(
                        self.name, Severity.WARN,
                        f"{v.program} forecast {f.date.date().isoformat()}: {f.detail}",
                        {"reason": f.reason.value, "kind": f.kind.value, "path": path},
                        program=v.program, forecast=f.date, next_due={Signal.TRUST: f.date},
                        # policy: move to an unflagged standby in time
                        replace=f.kind is ForecastKind.CERTIFICATE,
                    ))
                else:
                    findings.append(Finding(self.name, Severity.OK, f"trusted by {v.program}",
                                            {"path": path}, program=v.program))
        trusted = [v.program for v in ev.verdicts if v.trusted]
        findings += self._issuance(material, ctx, trusted)
        return findings

    def _issuance(self, material: CertMaterial, ctx: CheckContext,
                  programs: list[str]) -> list[Finding]:
        """The CA, not only the certificate: would a certificate it issues now (over this
        chain) be trusted by each required program? A WARN ``ca_issuance`` finding per program
        that would not: the CA cannot replace this certificate (a passed distrust-after or SCT
        cut-off, a removed root); the policy then prefers a standby from another CA as the
        successor, and the engine sends that CA no order for sites requiring the program.
        Judged for the programs that trust this certificate (where it is not trusted, its own
        FAIL says more)."""
        out: list[Finding] = []
        if not programs:
            return out
        for v in self.trust_engine().issuable(material.leaf, material.chain, at=ctx.now,
                                         programs=programs):
            if v.trusted or v.reason in (Reason.NO_DATA, Reason.NO_PATH,
                                         Reason.ROOT_NOT_INCLUDED):
                continue  # nothing the CA's chain ever had here: the certificate check says so
            ca = material.cert.ca
            out.append(Finding(
                "ca_issuance", Severity.WARN,
                f"CA {ca} can no longer issue certificates trusted by {v.program}: "
                f"{v.reason.value}: {v.detail}",
                {"reason": v.reason.value, "ca": ca}, cannot_issue_for=v.program))
        return out
