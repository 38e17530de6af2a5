"""The compiled trust snapshot: every program's roots and constraints plus the root DERs.

Stored as gzip-compressed JSON (``data/snapshot.json.gz`` is shipped in the package).
``load_snapshot`` caches per process (keyed by path and mtime), so every check shares one
parsed copy. ``build_snapshot`` turns importer output into a snapshot and resolves roots
named only by hash (Chrome, Microsoft) from the pooled certificates.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import TrustDataError
from ..store.files import atomic_write
from .programs import ConstraintSet, ImportedProgram, Provenance, RootEntry, RootProgram

FORMAT = 1
PACKAGED_SNAPSHOT = Path(__file__).parent / "data" / "snapshot.json.gz"
ENV_SNAPSHOT = "CERTFAILOVER_TRUST_SNAPSHOT"


@dataclass(frozen=True)
class Snapshot:
    built: datetime
    programs: Mapping[str, RootProgram]
    certs: Mapping[str, bytes] = field(repr=False)  # sha256 hex -> DER of every resolved root
    source: str = ""  # where it was loaded from ("" when built in memory)


def build_snapshot(
    imported: Iterable[ImportedProgram], *, built: datetime, pool: Mapping[str, bytes] | None = None
) -> Snapshot:
    imported = list(imported)
    every: dict[str, bytes] = dict(pool or {})
    for imp in imported:
        every.update(imp.certs)
    programs: dict[str, RootProgram] = {}
    certs: dict[str, bytes] = {}
    for imp in imported:
        prog = imp.program
        if prog.name in programs:
            raise TrustDataError(f"program {prog.name!r} given twice")
        unresolved = []
        for sha in prog.roots:
            der = every.get(sha)
            if der is None:
                unresolved.append(sha)
            else:
                certs[sha] = der
        programs[prog.name] = RootProgram(
            prog.name, prog.provenance, dict(prog.roots), tuple(sorted(unresolved))
        )
    return Snapshot(built=built, programs=programs, certs=certs)


# -- JSON shape -------------------------------------------------------------------------


def _dt(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def _pdt(v: Any, where: str) -> datetime | None:
    if v is None:
        return None
    try:
        d = datetime.fromisoformat(str(v))
    except ValueError as exc:
        raise TrustDataError(f"{where}: bad date {v!r}") from exc
    if d.tzinfo is None:
        raise TrustDataError(f"{where}: date without timezone {v!r}")
    return d


def _cs_json(cs: ConstraintSet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(cs).items():
        if v is None or v == ():
            continue
        out[k] = _dt(v) if isinstance(v, datetime) else (list(v) if isinstance(v, tuple) else v)
    return out


def _entry_json(e: RootEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"sha256": e.sha256, "name": e.name}
    if e.distrust_after:
        out["distrust_after"] = _dt(e.distrust_after)
    if e.removed_at:
        out["removed_at"] = _dt(e.removed_at)
    if e.distrusted:
        out["distrusted"] = True
    if e.ekus is not None:
        out["ekus"] = sorted(e.ekus)
    if e.constraints:
        out["constraints"] = [_cs_json(c) for c in e.constraints]
    return out


def snapshot_to_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "built": snap.built.isoformat(),
        "programs": {
            name: {
                "provenance": vars(p.provenance),
                "unresolved": list(p.unresolved),
                "roots": [_entry_json(e) for e in sorted(p.roots.values(), key=lambda e: e.sha256)],
            }
            for name, p in sorted(snap.programs.items())
        },
        "certs": {sha: base64.b64encode(der).decode() for sha, der in sorted(snap.certs.items())},
    }


def snapshot_from_json(doc: Any, *, source: str) -> Snapshot:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TrustDataError(f"{source}: not a certfailover trust snapshot (format {FORMAT})")
    try:
        programs: dict[str, RootProgram] = {}
        for name, p in doc["programs"].items():
            roots: dict[str, RootEntry] = {}
            for r in p["roots"]:
                where = f"{source}: programs.{name}.roots[{r.get('sha256')}]"
                roots[r["sha256"]] = RootEntry(
                    sha256=r["sha256"],
                    name=r["name"],
                    distrust_after=_pdt(r.get("distrust_after"), where),
                    removed_at=_pdt(r.get("removed_at"), where),
                    distrusted=bool(r.get("distrusted", False)),
                    ekus=frozenset(r["ekus"]) if "ekus" in r else None,
                    constraints=tuple(
                        ConstraintSet(
                            sct_not_after=_pdt(c.get("sct_not_after"), where),
                            sct_all_after=_pdt(c.get("sct_all_after"), where),
                            validity_starts_not_after=_pdt(c.get("validity_starts_not_after"), where),
                            validity_starts_after=_pdt(c.get("validity_starts_after"), where),
                            min_version=c.get("min_version"),
                            max_version_exclusive=c.get("max_version_exclusive"),
                            permitted_dns_names=tuple(c.get("permitted_dns_names", ())),
                        )
                        for c in r.get("constraints", ())
                    ),
                )
            programs[name] = RootProgram(
                name, Provenance(**p["provenance"]), roots, tuple(p.get("unresolved", ()))
            )
        certs = {sha: base64.b64decode(b64) for sha, b64 in doc["certs"].items()}
        built = _pdt(doc["built"], f"{source}: built")
    except (KeyError, TypeError, ValueError) as exc:
        raise TrustDataError(f"{source}: malformed trust snapshot: {exc!r}") from exc
    assert built is not None
    return Snapshot(built=built, programs=programs, certs=certs, source=source)


def save_snapshot(snap: Snapshot, path: Path) -> None:
    raw = json.dumps(snapshot_to_json(snap), separators=(",", ":"), sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, gzip.compress(raw, compresslevel=9, mtime=0))


def read_snapshot(path: Path) -> Snapshot:
    """Read a snapshot file without caching."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrustDataError(f"{path}: cannot read trust snapshot: {exc.strerror}") from exc
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        doc = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise TrustDataError(f"{path}: not a trust snapshot (gzip JSON): {exc}") from exc
    return snapshot_from_json(doc, source=str(path))


_cache: dict[tuple[str, int], Snapshot] = {}
_lock = threading.Lock()


def default_snapshot_path() -> Path:
    env = os.environ.get(ENV_SNAPSHOT)
    return Path(env) if env else PACKAGED_SNAPSHOT


def load_snapshot(path: Path | None = None) -> Snapshot:
    """The snapshot at ``path`` (default: $CERTFAILOVER_TRUST_SNAPSHOT or the packaged one),
    parsed once per process and file version."""
    path = path or default_snapshot_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise TrustDataError(f"{path}: cannot read trust snapshot: {exc.strerror}") from exc
    key = (str(path.resolve()), mtime)
    with _lock:
        snap = _cache.get(key)
        if snap is None:
            snap = read_snapshot(path)
            if len(_cache) >= 4:
                _cache.pop(next(iter(_cache)))
            _cache[key] = snap
    return snap
