"""Helpers shared by the importers."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning

from ...errors import TrustDataError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cert_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@contextmanager
def quiet_legacy_roots() -> Iterator[None]:
    """Some real roots have non-positive serial numbers; cryptography warns on each load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


def load_der(der: bytes) -> x509.Certificate:
    with quiet_legacy_roots():
        return x509.load_der_x509_certificate(der)


def check_pem_blocks(data: bytes, source: str) -> int:
    """Every PEM block complete: as many BEGIN as END lines and nothing but white space
    after the last END line. ``load_pem_x509_certificates`` silently drops a block cut in
    half at the end of a file, so a truncated bundle would import short. Returns the number
    of CERTIFICATE blocks."""
    if not data.strip():
        raise TrustDataError(f"{source}: empty file, not a PEM certificate bundle")
    begins, ends = data.count(b"-----BEGIN "), data.count(b"-----END ")
    if begins != ends or begins == 0:
        raise TrustDataError(
            f"{source}: truncated or incomplete PEM bundle: {begins} BEGIN and {ends} END lines"
        )
    tail = data[data.rfind(b"-----END ") :]
    last_line, _, rest = tail.partition(b"\n")
    if not last_line.rstrip().endswith(b"-----") or rest.strip():
        raise TrustDataError(
            f"{source}: truncated or incomplete PEM bundle: the last END line is cut or "
            f"followed by an incomplete block"
        )
    return data.count(b"-----BEGIN CERTIFICATE-----")


def load_pem_bundle(data: bytes, source: str) -> list[x509.Certificate]:
    """Every certificate in a complete PEM bundle; a clear error naming the source otherwise."""
    blocks = check_pem_blocks(data, source)
    try:
        with quiet_legacy_roots():
            certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TrustDataError(f"{source}: not a PEM certificate bundle: {exc}") from exc
    if len(certs) != blocks:
        raise TrustDataError(f"{source}: {blocks} PEM blocks but {len(certs)} certificates")
    return certs


def utc_from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def cert_label(cert: x509.Certificate) -> str:
    for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        return str(attr.value)
    for attr in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME):
        return str(attr.value)
    return cert.subject.rfc4514_string()
