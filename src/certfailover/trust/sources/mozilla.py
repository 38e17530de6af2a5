"""Mozilla NSS ``certdata.txt``.

The file is a list of PKCS#11 objects. Certificate objects (``CKO_CERTIFICATE``) carry the
DER; trust objects (``CKO_NSS_TRUST``) carry ``CKA_TRUST_SERVER_AUTH``. They are paired by
``CKA_ISSUER`` + ``CKA_SERIAL_NUMBER``. ``CKA_NSS_SERVER_DISTRUST_AFTER`` (a UTCTime as
octal bytes, or ``CK_BBOOL CK_FALSE``) may sit on either object.

NSS ships no parser library for this format outside C; this is a tokenizer for its
line-oriented grammar (``ATTRIBUTE TYPE VALUE`` and ``MULTILINE_OCTAL ... END`` blocks).

The format has no end marker and no digest of its own, so a truncated download is caught by
its structure (``check_structure``): the file ends with a newline, the first object is the
``CKO_NSS_BUILTIN_ROOT_LIST``, every object carries every attribute NSS always writes for its
class, every certificate object is followed by its trust object, each trust object's
``CKA_CERT_SHA1_HASH`` / ``CKA_CERT_MD5_HASH`` match its certificate, and the file ends with
the last line of a trust object (not inside the comment block that precedes the next
certificate). A cut exactly after a complete certificate + trust pair is indistinguishable
from a shorter file: ``load.check_shrink`` refuses it when it drops more than 10% of the roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from ...errors import TrustDataError
from ..programs import ImportedProgram, Provenance, RootEntry, RootProgram
from .common import cert_label, load_der, sha256_hex

Value = bytes | str | bool


@dataclass(frozen=True)
class NssObject:
    line: int
    attrs: dict[str, Value]

    @property
    def cls(self) -> str:
        v = self.attrs.get("CKA_CLASS")
        return v if isinstance(v, str) else ""


def _octal(lines: list[str], source: str, lineno: int) -> bytes:
    out = bytearray()
    for text in lines:
        parts = text.strip().split("\\")
        if parts[0] != "":
            raise TrustDataError(f"{source}:{lineno}: bad MULTILINE_OCTAL data {text!r}")
        try:
            out.extend(int(p, 8) for p in parts[1:])
        except ValueError as exc:
            raise TrustDataError(f"{source}:{lineno}: bad octal byte in {text!r}") from exc
    return bytes(out)


def parse_objects(text: str, source: str) -> Iterator[NssObject]:
    """Tokenize certdata.txt into objects (a new object starts at each CKA_CLASS)."""
    lines = text.splitlines()
    i = 0
    started = False
    current: dict[str, Value] | None = None
    start = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "BEGINDATA":
            started = True
            continue
        if not started:
            continue
        fields = line.split(None, 2)
        if len(fields) < 2:
            raise TrustDataError(f"{source}:{i}: cannot parse line {raw!r}")
        name, typ = fields[0], fields[1]
        value: Value
        if typ == "MULTILINE_OCTAL":
            block: list[str] = []
            begin = i
            while i < len(lines) and lines[i].strip() != "END":
                block.append(lines[i])
                i += 1
            if i >= len(lines):
                raise TrustDataError(f"{source}:{begin}: MULTILINE_OCTAL without END")
            i += 1
            value = _octal(block, source, begin)
        elif typ == "UTF8":
            rest = fields[2] if len(fields) > 2 else ""
            if not (rest.startswith('"') and rest.endswith('"')):
                raise TrustDataError(f"{source}:{i}: bad UTF8 value {rest!r}")
            value = rest[1:-1]
        elif typ == "CK_BBOOL":
            value = len(fields) > 2 and fields[2] == "CK_TRUE"
        else:
            value = fields[2] if len(fields) > 2 else ""
        if name == "CKA_CLASS":
            if current is not None:
                yield NssObject(start, current)
            current = {}
            start = i
        if current is None:
            raise TrustDataError(f"{source}:{i}: attribute {name} before any CKA_CLASS")
        current[name] = value
    if current is not None:
        yield NssObject(start, current)


#: Attributes NSS writes on every object of a class (checked in both shared certdata files).
REQUIRED = {
    "CKO_CERTIFICATE": ("CKA_TOKEN", "CKA_PRIVATE", "CKA_MODIFIABLE", "CKA_LABEL",
                        "CKA_CERTIFICATE_TYPE", "CKA_SUBJECT", "CKA_ID", "CKA_ISSUER",
                        "CKA_SERIAL_NUMBER", "CKA_VALUE"),
    "CKO_NSS_TRUST": ("CKA_TOKEN", "CKA_PRIVATE", "CKA_MODIFIABLE", "CKA_LABEL",
                      "CKA_CERT_SHA1_HASH", "CKA_CERT_MD5_HASH", "CKA_ISSUER", "CKA_SERIAL_NUMBER",
                      "CKA_TRUST_SERVER_AUTH", "CKA_TRUST_EMAIL_PROTECTION",
                      "CKA_TRUST_CODE_SIGNING", "CKA_TRUST_STEP_UP_APPROVED"),
}
_TRUNCATED = "truncated or incomplete certdata.txt"


def parse_certdata(data: bytes, source: str) -> list[NssObject]:
    """Every object of a complete certdata.txt; TrustDataError naming ``source`` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrustDataError(f"{source}: not UTF-8 text: {exc}") from exc
    if not text.strip():
        raise TrustDataError(f"{source}: empty file, not an NSS certdata.txt")
    if "BEGINDATA" not in text:
        raise TrustDataError(f"{source}: not an NSS certdata.txt (no BEGINDATA)")
    objects = list(parse_objects(text, source))
    check_structure(text, objects, source)
    return objects


def check_structure(text: str, objects: list[NssObject], source: str) -> None:
    """Refuse a certdata.txt that is not complete (see the module docstring)."""
    if not text.endswith("\n"):
        raise TrustDataError(f"{source}: {_TRUNCATED}: the last line has no newline")
    if not objects or objects[0].cls != "CKO_NSS_BUILTIN_ROOT_LIST":
        raise TrustDataError(f"{source}: {_TRUNCATED}: no CKO_NSS_BUILTIN_ROOT_LIST object first")
    last_line = next(ln for ln in reversed(text.splitlines()) if ln.strip())
    if last_line.lstrip().startswith("#"):
        raise TrustDataError(
            f"{source}: {_TRUNCATED}: ends in a comment after the last object "
            f"(the next certificate is missing)"
        )
    if objects[-1].cls != "CKO_NSS_TRUST":
        raise TrustDataError(
            f"{source}:{objects[-1].line}: {_TRUNCATED}: the last object is a "
            f"{objects[-1].cls or 'object without class'}, not the trust object of a certificate"
        )
    trusts: dict[tuple[bytes, bytes], NssObject] = {}
    for obj in objects:
        missing = [a for a in REQUIRED.get(obj.cls, ()) if a not in obj.attrs]
        if missing:
            raise TrustDataError(
                f"{source}:{obj.line}: {_TRUNCATED}: {obj.cls} object without {', '.join(missing)}"
            )
        if obj.cls == "CKO_NSS_TRUST":
            trusts[_key(obj)] = obj
    for obj in objects:
        if obj.cls != "CKO_CERTIFICATE":
            continue
        trust = trusts.get(_key(obj))
        if trust is None:
            raise TrustDataError(
                f"{source}:{obj.line}: {_TRUNCATED}: certificate {obj.attrs.get('CKA_LABEL')!r} "
                f"has no trust object"
            )
        der = obj.attrs["CKA_VALUE"]
        if isinstance(der, bytes) and (
            trust.attrs["CKA_CERT_SHA1_HASH"] != hashlib.sha1(der).digest()
            or trust.attrs["CKA_CERT_MD5_HASH"] != hashlib.md5(der).digest()
        ):
            raise TrustDataError(
                f"{source}:{trust.line}: CKA_CERT_SHA1_HASH/CKA_CERT_MD5_HASH do not match "
                f"certificate {obj.attrs.get('CKA_LABEL')!r} (corrupted file)"
            )


def _key(obj: NssObject) -> tuple[bytes, bytes]:
    issuer, serial = obj.attrs.get("CKA_ISSUER"), obj.attrs.get("CKA_SERIAL_NUMBER")
    return (issuer if isinstance(issuer, bytes) else b"", serial if isinstance(serial, bytes) else b"")


def _distrust_after(obj: NssObject, source: str) -> datetime | None:
    v = obj.attrs.get("CKA_NSS_SERVER_DISTRUST_AFTER")
    if not isinstance(v, bytes):
        return None
    text = v.decode("ascii", "replace")
    for fmt in ("%y%m%d%H%M%SZ", "%Y%m%d%H%M%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise TrustDataError(
        f"{source}:{obj.line}: CKA_NSS_SERVER_DISTRUST_AFTER is not a UTCTime: {text!r}"
    )


def import_certdata(
    data: bytes, *, source: str, version: str | None = None, fetched: str | None = None
) -> ImportedProgram:
    certs: dict[tuple[bytes, bytes], NssObject] = {}
    trusts: dict[tuple[bytes, bytes], NssObject] = {}
    for obj in parse_certdata(data, source):
        issuer, serial = obj.attrs.get("CKA_ISSUER"), obj.attrs.get("CKA_SERIAL_NUMBER")
        if not isinstance(issuer, bytes) or not isinstance(serial, bytes):
            continue
        if obj.cls == "CKO_CERTIFICATE":
            certs[(issuer, serial)] = obj
        elif obj.cls == "CKO_NSS_TRUST":
            trusts[(issuer, serial)] = obj
    roots: dict[str, RootEntry] = {}
    der_by_sha: dict[str, bytes] = {}
    for key, trust in trusts.items():
        level = trust.attrs.get("CKA_TRUST_SERVER_AUTH")
        if level not in ("CKT_NSS_TRUSTED_DELEGATOR", "CKT_NSS_NOT_TRUSTED"):
            continue  # MUST_VERIFY_TRUST: not an anchor for websites
        cert_obj = certs.get(key)
        if cert_obj is None:
            continue  # a distrust entry for a certificate the file does not carry
        der = cert_obj.attrs.get("CKA_VALUE")
        if not isinstance(der, bytes):
            raise TrustDataError(f"{source}:{cert_obj.line}: certificate object without CKA_VALUE")
        try:
            cert = load_der(der)
        except ValueError as exc:
            raise TrustDataError(f"{source}:{cert_obj.line}: bad certificate DER: {exc}") from exc
        label = cert_obj.attrs.get("CKA_LABEL")
        sha = sha256_hex(der)
        distrust = _distrust_after(cert_obj, source) or _distrust_after(trust, source)
        roots[sha] = RootEntry(
            sha256=sha,
            name=label if isinstance(label, str) else cert_label(cert),
            distrust_after=distrust,
            distrusted=level == "CKT_NSS_NOT_TRUSTED",
        )
        der_by_sha[sha] = der
    prov = Provenance(source=source, sha256=sha256_hex(data), version=version, fetched=fetched)
    return ImportedProgram(RootProgram("mozilla", prov, roots), der_by_sha)


def all_certificates(data: bytes, *, source: str) -> dict[str, bytes]:
    """Every certificate object in the file (for a certificate pool), trusted or not."""
    out: dict[str, bytes] = {}
    for obj in parse_certdata(data, source):
        der = obj.attrs.get("CKA_VALUE")
        if obj.cls == "CKO_CERTIFICATE" and isinstance(der, bytes):
            out[sha256_hex(der)] = der
    return out
