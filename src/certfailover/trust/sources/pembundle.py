"""PEM bundles (Apple, Android/AOSP, Java, OpenJDK, the OS store, custom bundles).

A bundle says only "these roots are trusted"; an optional metadata file (the trust-store
observatory YAML: platform, version, url, date_fetched, trusted_certificates with SHA-256
fingerprints) supplies provenance and is checked against the bundle: the YAML is the
bundle's manifest, so the two must list exactly the same certificates (and as many as its
``trusted_certificates_count``). Without metadata only complete PEM blocks are required
(``common.check_pem_blocks``); a cut exactly between two blocks is then caught only by the
shrink rule (``load.check_shrink``).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from ...errors import TrustDataError
from ..programs import ImportedProgram, Provenance, RootEntry, RootProgram
from .common import cert_label, cert_sha256, load_pem_bundle, sha256_hex


def parse_metadata(data: bytes, *, source: str) -> dict[str, Any]:
    import yaml  # PyYAML: only needed when building a snapshot from upstream files

    try:
        meta = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise TrustDataError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise TrustDataError(f"{source}: expected a mapping at the top level")
    return meta


def import_bundle(
    name: str,
    data: bytes,
    *,
    source: str,
    metadata: bytes | None = None,
    metadata_source: str = "",
    version: str | None = None,
    fetched: str | None = None,
) -> ImportedProgram:
    certs = load_pem_bundle(data, source)
    if not certs:
        raise TrustDataError(f"{source}: no certificates in the bundle")
    roots: dict[str, RootEntry] = {}
    ders: dict[str, bytes] = {}
    for cert in certs:
        sha = cert_sha256(cert)
        roots[sha] = RootEntry(sha256=sha, name=cert_label(cert))
        ders[sha] = cert.public_bytes(Encoding.DER)
    date = None
    if metadata is not None:
        meta = parse_metadata(metadata, source=metadata_source)
        listed = meta.get("trusted_certificates")
        if not isinstance(listed, list) or not listed:
            raise TrustDataError(f"{metadata_source}: no trusted_certificates list")
        fps: set[str] = set()
        for i, c in enumerate(listed):
            fp = str(c.get("fingerprint", "")).lower() if isinstance(c, dict) else ""
            if len(fp) != 64 or any(ch not in "0123456789abcdef" for ch in fp):
                raise TrustDataError(
                    f"{metadata_source}: trusted_certificates[{i}] has no SHA-256 fingerprint "
                    f"(truncated or malformed metadata)"
                )
            fps.add(fp)
        count = meta.get("trusted_certificates_count")
        if count is not None and count != len(listed):
            raise TrustDataError(
                f"{metadata_source}: trusted_certificates_count is {count} but "
                f"{len(listed)} are listed (truncated metadata?)"
            )
        missing, extra = fps - set(roots), set(roots) - fps
        if missing:
            raise TrustDataError(
                f"{metadata_source}: trusted_certificates lists {len(missing)} fingerprint(s) "
                f"not in {source} (truncated bundle?), e.g. {min(missing)}"
            )
        if extra:
            raise TrustDataError(
                f"{source}: {len(extra)} certificate(s) not listed in {metadata_source}, "
                f"e.g. {min(extra)}"
            )
        version = version or (str(meta["version"]) if meta.get("version") else None)
        date = str(meta["date_fetched"]) if meta.get("date_fetched") else None
    prov = Provenance(
        source=source, sha256=sha256_hex(data), version=version, date=date, fetched=fetched
    )
    return ImportedProgram(RootProgram(name, prov, roots), ders)
