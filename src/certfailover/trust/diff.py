"""What changed between two trust snapshots (or two upstream files of one program).

Roots added, removed, newly constrained (or unconstrained), and which of the given sites'
certificates change verdict. A root-program update becomes an early warning.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from .evaluate import ForecastKind, Reason, TrustEngine
from .snapshot import Snapshot, build_snapshot, load_snapshot, read_snapshot
from .sources import chrome, microsoft, mozilla, pembundle
from .sources.load import read_location, sniff_program

Site = tuple[str, x509.Certificate, Sequence[x509.Certificate]]  # (label, leaf, intermediates)


class ChangeKind(str, enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    CONSTRAINED = "constrained"  # a constraint was added or tightened/changed
    UNCONSTRAINED = "unconstrained"  # every constraint was lifted
    # explicit distrust entries (Mozilla CKT_NSS_NOT_TRUSTED) are blocklist rows, not roots:
    DISTRUST_ADDED = "distrust_added"
    DISTRUST_REMOVED = "distrust_removed"


@dataclass(frozen=True)
class RootChange:
    program: str
    sha256: str
    name: str
    kind: ChangeKind
    before: str  # constraint summary ("" when none / absent)
    after: str


@dataclass(frozen=True)
class SiteChange:
    label: str
    program: str
    before: Reason
    after: Reason
    detail: str


@dataclass(frozen=True)
class IssuerChange:
    """The CA behind a site's certificate can no longer issue (or, from `date`, will no longer
    issue) certificates the program trusts, under the new data."""

    ca: str  # the CA name from a stored certificate's id, else the site label
    program: str
    date: datetime | None  # None: already now
    detail: str


@dataclass(frozen=True)
class SnapshotDiff:
    old: str
    new: str
    roots: tuple[RootChange, ...]
    sites: tuple[SiteChange, ...]
    programs_added: tuple[str, ...] = ()
    programs_removed: tuple[str, ...] = ()
    issuers: tuple[IssuerChange, ...] = ()


def diff_snapshots(
    old: Snapshot, new: Snapshot, *, sites: Iterable[Site] = (), at: datetime
) -> SnapshotDiff:
    changes: list[RootChange] = []
    common = sorted(set(old.programs) & set(new.programs))
    for name in common:
        a, b = old.programs[name].roots, new.programs[name].roots
        for sha in sorted(set(a) | set(b)):
            ea, eb = a.get(sha), b.get(sha)
            if ea is None and eb is not None:
                kind = ChangeKind.DISTRUST_ADDED if eb.distrusted else ChangeKind.ADDED
                changes.append(RootChange(name, sha, eb.name, kind, "", eb.constraint_summary()))
            elif eb is None and ea is not None:
                kind = ChangeKind.DISTRUST_REMOVED if ea.distrusted else ChangeKind.REMOVED
                changes.append(RootChange(name, sha, ea.name, kind, ea.constraint_summary(), ""))
            elif ea is not None and eb is not None:
                sa, sb = ea.constraint_summary(), eb.constraint_summary()
                if sa != sb:
                    kind = ChangeKind.UNCONSTRAINED if not sb else ChangeKind.CONSTRAINED
                    changes.append(RootChange(name, sha, eb.name, kind, sa, sb))
    site_changes: list[SiteChange] = []
    sites = list(sites)
    if sites:
        eng_old, eng_new = TrustEngine(old), TrustEngine(new)
        for label, leaf, chain in sites:
            va = eng_old.evaluate(leaf, chain, at=at, programs=common)
            vb = eng_new.evaluate(leaf, chain, at=at, programs=common)
            for x, y in zip(va.verdicts, vb.verdicts):
                if x.trusted != y.trusted or x.reason != y.reason or (
                    [f.date for f in x.forecasts] != [f.date for f in y.forecasts]
                ):
                    detail = y.detail
                    if y.trusted and y.forecasts:
                        detail = "; ".join(f"{f.date.date()}: {f.detail}" for f in y.forecasts)
                    site_changes.append(SiteChange(label, x.program, x.reason, y.reason, detail))
        issuers = _issuer_changes(eng_old, eng_new, sites, common, at)
    else:
        issuers = ()
    return SnapshotDiff(
        old=old.source,
        new=new.source,
        roots=tuple(changes),
        sites=tuple(site_changes),
        programs_added=tuple(sorted(set(new.programs) - set(old.programs))),
        programs_removed=tuple(sorted(set(old.programs) - set(new.programs))),
        issuers=issuers,
    )


def _issuer_changes(eng_old: TrustEngine, eng_new: TrustEngine, sites: Sequence[Site],
                    programs: Sequence[str], at: datetime) -> tuple[IssuerChange, ...]:
    """Per CA and program, once: can a certificate it issues now still be trusted, and from
    when not (an issuance cut-off the new data adds)?"""
    out: dict[tuple[str, str], IssuerChange] = {}
    for label, leaf, chain in sites:
        parts = label.split(" ", 1)[0].split("/")
        ca = parts[1] if len(parts) == 3 else label
        before = eng_old.issuable(leaf, chain, at=at, programs=programs)
        after = eng_new.issuable(leaf, chain, at=at, programs=programs)
        for x, y in zip(before, after):
            if (ca, y.program) in out:
                continue
            if x.trusted and not y.trusted:
                out[(ca, y.program)] = IssuerChange(ca, y.program, None,
                                                    f"{y.reason.value}: {y.detail}")
                continue
            old_dates = {f.date for f in x.forecasts if f.kind is ForecastKind.ISSUANCE}
            for f in y.forecasts:
                if f.kind is ForecastKind.ISSUANCE and f.date not in old_dates:
                    out[(ca, y.program)] = IssuerChange(ca, y.program, f.date, f.detail)
                    break
    return tuple(out[k] for k in sorted(out))


def load_any(location: str, *, built: datetime, pool: Snapshot | None = None) -> Snapshot:
    """A compiled snapshot, or one upstream file (certdata.txt, root_store.textproto,
    authroot.stl, PEM bundle) compiled on the fly into a one-program snapshot. Roots named
    only by hash are resolved from ``pool`` (default: the packaged snapshot)."""
    path = Path(location)
    if location.endswith((".json", ".json.gz")):
        return read_snapshot(path)
    data = read_location(location)
    kind = sniff_program(data, location)
    if kind == "mozilla":
        imp = mozilla.import_certdata(data, source=location)
    elif kind == "chrome":
        imp = chrome.import_root_store(data, source=location)
    elif kind == "microsoft":
        imp = microsoft.import_authroot(data, source=location)
    else:
        imp = pembundle.import_bundle(kind, data, source=location)
    base = pool if pool is not None else load_snapshot()
    snap = build_snapshot([imp], built=built, pool=base.certs)
    return Snapshot(built=snap.built, programs=snap.programs, certs=snap.certs, source=location)


def summarize(d: SnapshotDiff) -> list[str]:
    """Human-readable lines (the CLI's text output)."""
    lines = [f"trust diff {d.old} -> {d.new}"]
    for p in d.programs_added:
        lines.append(f"  program added: {p}")
    for p in d.programs_removed:
        lines.append(f"  program removed: {p}")
    if not d.roots:
        lines.append("  no root changes")
    for c in d.roots:
        if c.kind is ChangeKind.ADDED:
            lines.append(f"  {c.program}: + {c.name} ({c.sha256[:16]}) {c.after}".rstrip())
        elif c.kind is ChangeKind.REMOVED:
            lines.append(f"  {c.program}: - {c.name} ({c.sha256[:16]})")
        elif c.kind is ChangeKind.DISTRUST_ADDED:
            lines.append(f"  {c.program}: distrust entry added: {c.name} ({c.sha256[:16]})")
        elif c.kind is ChangeKind.DISTRUST_REMOVED:
            lines.append(f"  {c.program}: distrust entry removed: {c.name} ({c.sha256[:16]})")
        else:
            lines.append(
                f"  {c.program}: ~ {c.name} ({c.sha256[:16]}) {c.kind.value}: "
                f"[{c.before or 'none'}] -> [{c.after or 'none'}]"
            )
    for s in d.sites:
        lines.append(f"  site {s.label} in {s.program}: {s.before.value} -> {s.after.value}: {s.detail}")
    for i in d.issuers:
        when = "from now" if i.date is None else f"from {i.date:%Y-%m-%d %H:%M}Z"
        lines.append(f"  {when}, CA {i.ca} can no longer issue for {i.program}: {i.detail}")
    return lines

