"""Read upstream files or URLs and dispatch them to the right importer.

Upstream locations (documented in docs/trust.md):

- mozilla:   https://raw.githubusercontent.com/nss-dev/nss/master/lib/ckfw/builtins/certdata.txt
- chrome:    https://raw.githubusercontent.com/chromium/chromium/main/net/data/ssl/chrome_root_store/root_store.textproto
- microsoft: authroot.stl extracted from
             http://ctldl.windowsupdate.com/msdownload/update/v3/static/trustedr/en/authrootstl.cab
             (certificates: the CCADB "Microsoft included CA certificates" PEM report)
- apple, android, java, openjdk: PEM bundles with observatory YAML metadata, e.g.
  https://raw.githubusercontent.com/nabla-c0d3/sslyze/release/sslyze/plugins/certificate_info/trust_stores/pem_files/
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ...errors import FetchError, TrustDataError
from ..programs import ImportedProgram, RootProgram
from ..snapshot import Snapshot, build_snapshot
from . import chrome, microsoft, mozilla, pembundle
from .common import cert_sha256, load_pem_bundle

MAX_BYTES = 32 * 1024 * 1024
#: A refresh may drop at most this share of a program's trusted roots without confirmation
#: (``trust update --allow-shrink``, ``[trust] allow_shrink = true``).
MAX_SHRINK = 0.10


@dataclass(frozen=True)
class SourceSpec:
    """``NAME=LOCATION[,METADATA][@@REVISION]`` as given to ``trust update --source``.

    REVISION (e.g. the upstream commit) is recorded as the program's provenance version.
    """

    name: str
    location: str
    metadata: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        name, sep, rest = text.partition("=")
        rest, _, rev = rest.partition("@@")
        if not sep or not name or not rest:
            raise TrustDataError(
                f"--source {text!r}: expected NAME=FILE_OR_URL[,METADATA.yaml][@@REVISION]"
            )
        loc, _, meta = rest.partition(",")
        return cls(name.strip().lower(), loc, meta or None, rev or None)


def read_location(location: str, *, timeout: float = 30.0) -> bytes:
    if location.startswith(("http://", "https://")):
        import requests

        try:
            with requests.get(location, timeout=timeout, stream=True) as resp:
                resp.raise_for_status()
                data = resp.raw.read(MAX_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise FetchError(location, str(exc)) from exc
        if len(data) > MAX_BYTES:
            raise FetchError(location, f"larger than {MAX_BYTES} bytes")
        return bytes(data)
    try:
        return Path(location).read_bytes()
    except OSError as exc:
        raise TrustDataError(f"{location}: cannot read: {exc.strerror}") from exc


def import_spec(spec: SourceSpec, *, now: datetime) -> ImportedProgram:
    """Import one source; refuses incomplete data and a program without any trusted root."""
    imp = _import_spec(spec, now=now)
    if imp.program.trusted_count() == 0:
        raise TrustDataError(
            f"{spec.location}: {spec.name}: no trusted roots in the data (empty program refused)"
        )
    return imp


def check_shrink(
    new: RootProgram, old: RootProgram | None, *, source: str, current: str, allow: bool
) -> None:
    """Refuse a program that lost more than ``MAX_SHRINK`` of its trusted roots compared
    with ``old`` (the data in use), unless ``allow``: a cut download or a wrong URL must not
    silently untrust sites."""
    if old is None or allow:
        return
    before, after = old.trusted_count(), new.trusted_count()
    if before and (before - after) / before > MAX_SHRINK:
        raise TrustDataError(
            f"{source}: {new.name}: {after} trusted roots, down from {before} in {current} "
            f"(more than {MAX_SHRINK:.0%} fewer): refused, keeping the current data. If the "
            f"program really dropped them, confirm with `trust update --allow-shrink` "
            f"(scheduled refresh: [trust] allow_shrink = true)"
        )


def _import_spec(spec: SourceSpec, *, now: datetime) -> ImportedProgram:
    data = read_location(spec.location)
    fetched = now.isoformat()
    rev = spec.revision
    if spec.name == "mozilla":
        return mozilla.import_certdata(data, source=spec.location, version=rev, fetched=fetched)
    if spec.name == "chrome":
        return chrome.import_root_store(data, source=spec.location, version=rev, fetched=fetched)
    if spec.name == "microsoft":
        return microsoft.import_authroot(data, source=spec.location, version=rev, fetched=fetched)
    meta = read_location(spec.metadata) if spec.metadata else None
    return pembundle.import_bundle(
        spec.name,
        data,
        source=spec.location,
        metadata=meta,
        metadata_source=spec.metadata or "",
        version=rev,
        fetched=fetched,
    )


def read_pool(location: str) -> Mapping[str, bytes]:
    """Certificates to resolve hash-only anchors with: a PEM bundle or a certdata.txt."""
    data = read_location(location)
    if b"BEGINDATA" in data[:200_000] and b"CKA_CLASS" in data:
        return mozilla.all_certificates(data, source=location)
    from cryptography.hazmat.primitives.serialization import Encoding

    return {cert_sha256(c): c.public_bytes(Encoding.DER) for c in load_pem_bundle(data, location)}


def sniff_program(data: bytes, location: str) -> str:
    """Guess the program a raw upstream file belongs to (used by ``trust diff``)."""
    head = data[:200_000]
    if b"BEGINDATA" in head and b"CKA_CLASS" in head:
        return "mozilla"
    if b"trust_anchors" in head:
        return "chrome"
    if location.endswith(".stl") or head[:1] == b"\x30":
        return "microsoft"
    if b"-----BEGIN CERTIFICATE-----" in head:
        stem = Path(location).stem.lower()
        for name in ("apple", "android", "openjdk", "java"):
            if name in stem or (name == "android" and "aosp" in stem):
                return name
        return stem
    raise TrustDataError(f"{location}: unknown root-program data format")


def build_from_specs(
    specs: list[SourceSpec], *, pools: list[str], now: datetime, base: Snapshot | None = None,
    progress: Callable[[str], None] | None = None, current: Snapshot | None = None,
    allow_shrink: bool = False,
) -> Snapshot:
    """Import every source, pool certificates, and compile a Snapshot.

    ``base`` (a Snapshot) contributes its programs that no spec replaces and its
    certificates to the pool, so ``trust update --source chrome=URL`` refreshes one program.
    ``current`` (default ``base``): the data in use, against which each imported program is
    checked with ``check_shrink``.
    """
    say = progress or (lambda _msg: None)
    current = current if current is not None else base
    pool: dict[str, bytes] = {}
    imported = []
    steps = len(specs) + len(pools) + 1
    for i, spec in enumerate(specs, 1):
        say(f"[{i}/{steps}] importing {spec.name} from {spec.location}")
        imp = import_spec(spec, now=now)
        if current is not None:
            check_shrink(imp.program, current.programs.get(imp.program.name),
                         source=spec.location, current=current.source or "the current snapshot",
                         allow=allow_shrink)
        imported.append(imp)
    names = {imp.program.name for imp in imported}
    if base is not None:
        pool.update(base.certs)
        for name, prog in base.programs.items():
            if name not in names:
                imported.append(ImportedProgram(prog, {}))
    for j, loc in enumerate(pools, len(specs) + 1):
        say(f"[{j}/{steps}] reading certificate pool {loc}")
        pool.update(read_pool(loc))
    say(f"[{steps}/{steps}] compiling the snapshot ({len(imported)} programs)")
    return build_snapshot(imported, built=now, pool=pool)


def update_snapshot(
    specs: list[SourceSpec], *, output: Path, pools: list[str], now: datetime, fresh: bool = False,
    progress: Callable[[str], None] | None = None, allow_shrink: bool = False,
) -> Snapshot:
    """Rebuild ``output`` from upstream sources (what ``trust update`` and a scheduled refresh
    run). Programs without a new source are carried over from the current file unless
    ``fresh``. Every imported program is checked against the one in the current ``output``
    (even with ``fresh``): more than ``MAX_SHRINK`` fewer trusted roots is refused unless
    ``allow_shrink``. Any error leaves ``output`` untouched. Readers pick the new file up on
    their next ``load_snapshot`` (keyed by mtime)."""
    from ..snapshot import read_snapshot, save_snapshot

    current = read_snapshot(output) if output.exists() else None
    base = None if fresh else current
    snap = build_from_specs(specs, pools=pools, now=now, base=base, progress=progress,
                            current=current, allow_shrink=allow_shrink)
    save_snapshot(snap, output)
    return snap
