"""Chrome Root Store ``root_store.textproto`` (schema ``root_store.proto``).

Parsed with ``google.protobuf.text_format`` into the generated ``RootStore`` message
(``certfailover/trust/proto/root_store_pb2.py``, generated with grpcio-tools and committed).
Anchors are named by SHA-256 (``sha256_hex``) or carried as DER (``der``); certificates
named only by hash are resolved later from the snapshot's certificate pool.

Text format has no end marker and the file no digest, and ``text_format`` accepts a file cut
after any complete message or inside the comments between anchors. ``check_structure``
refuses what a cut leaves: a last line that does not end with the closing ``}`` of the last
message (a cut inside the comment block of the next anchor), no ``version_major``
(the required first field), no trust anchor at all. A cut exactly after a ``}`` is
indistinguishable from a shorter file; ``load.check_shrink`` refuses large drops.
"""

from __future__ import annotations

from google.protobuf import text_format

from ...errors import TrustDataError
from ..programs import ConstraintSet, ImportedProgram, Provenance, RootEntry, RootProgram
from ..proto import root_store_pb2
from .common import sha256_hex, utc_from_epoch


def _constraint(cs: root_store_pb2.ConstraintSet) -> ConstraintSet:
    return ConstraintSet(
        sct_not_after=utc_from_epoch(cs.sct_not_after_sec) if cs.HasField("sct_not_after_sec") else None,
        sct_all_after=utc_from_epoch(cs.sct_all_after_sec) if cs.HasField("sct_all_after_sec") else None,
        validity_starts_not_after=(
            utc_from_epoch(cs.validity_starts_not_after_sec)
            if cs.HasField("validity_starts_not_after_sec")
            else None
        ),
        validity_starts_after=(
            utc_from_epoch(cs.validity_starts_after_sec)
            if cs.HasField("validity_starts_after_sec")
            else None
        ),
        min_version=cs.min_version if cs.HasField("min_version") else None,
        max_version_exclusive=(
            cs.max_version_exclusive if cs.HasField("max_version_exclusive") else None
        ),
        permitted_dns_names=tuple(cs.permitted_dns_names),
    )


def parse_root_store(data: bytes, *, source: str) -> root_store_pb2.RootStore:
    store = root_store_pb2.RootStore()
    try:
        text_format.Parse(data.decode("utf-8"), store)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise TrustDataError(f"{source}: not a Chrome root_store.textproto: {exc}") from exc
    check_structure(data, store, source=source)
    return store


def check_structure(data: bytes, store: root_store_pb2.RootStore, *, source: str) -> None:
    what = "truncated or incomplete root_store.textproto"
    if not data.strip():
        raise TrustDataError(f"{source}: empty file, not a Chrome root_store.textproto")
    last = next(ln for ln in reversed(data.splitlines()) if ln.strip()).strip()
    if not last.endswith(b"}"):
        raise TrustDataError(
            f"{source}: {what}: the last line is {last[:60].decode('utf-8', 'replace')!r}, "
            f"not the closing '}}' of the last trust_anchors message"
        )
    if store.version_major <= 0:
        raise TrustDataError(f"{source}: {what}: no version_major")
    if not store.trust_anchors:
        raise TrustDataError(f"{source}: no trust_anchors")


def import_root_store(
    data: bytes, *, source: str, version: str | None = None, fetched: str | None = None
) -> ImportedProgram:
    store = parse_root_store(data, source=source)
    roots: dict[str, RootEntry] = {}
    certs: dict[str, bytes] = {}
    for i, anchor in enumerate(store.trust_anchors):
        which = anchor.WhichOneof("certificate")
        if which == "der":
            sha = sha256_hex(anchor.der)
            certs[sha] = anchor.der
        elif which == "sha256_hex":
            sha = anchor.sha256_hex.lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise TrustDataError(f"{source}: trust_anchors[{i}].sha256_hex is not a SHA-256: {sha!r}")
        else:
            raise TrustDataError(f"{source}: trust_anchors[{i}] has neither der nor sha256_hex")
        if anchor.HasField("tls_trust_anchor") and not anchor.tls_trust_anchor:
            continue
        roots[sha] = RootEntry(
            sha256=sha,
            name=anchor.display_name or sha[:16],
            constraints=tuple(_constraint(c) for c in anchor.constraints),
        )
    prov = Provenance(
        source=source,
        sha256=sha256_hex(data),
        version=version or f"version_major {store.version_major}",
        fetched=fetched,
    )
    return ImportedProgram(RootProgram("chrome", prov, roots), certs)
