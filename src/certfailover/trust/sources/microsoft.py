"""Microsoft Trusted Root Program ``authroot.stl``: a CTL inside PKCS#7 SignedData.

The outer CMS structure and the CTL are described with asn1crypto (cryptography does not
expose CTLs). Each trusted subject is identified by its SHA-1 thumbprint and carries
Microsoft property attributes (OIDs 1.3.6.1.4.1.311.10.11.<property id>):

- 9   enabled EKUs (DER SEQUENCE OF OID)      - 98  SHA-256 of the root certificate
- 11  friendly name (UTF-16LE)                 - 104 disallowed date (FILETIME)
- 122 EKUs the disallowed date applies to      - 126 NotBefore cut-off (FILETIME)
- 127 EKUs the NotBefore cut-off applies to

The STL carries no certificates: they are resolved from the snapshot's certificate pool
(for example the CCADB Microsoft report PEM).

Completeness: the file must be exactly one DER ``ContentInfo`` (a cut breaks the outer
length; trailing bytes are refused too), and when it is signed (as downloaded from Windows
Update) the signature must verify: the ``messageDigest`` signed attribute equals the digest
of the CTL and the signer certificate carried in the file signed the attributes. This proves
the bytes are intact; the signer is not chained to Microsoft's root (not shipped here).
Unsigned STLs (test data, some mirrors) are accepted on structure alone.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from asn1crypto import algos, cms, core

from ...errors import TrustDataError
from ..programs import SERVER_AUTH, ImportedProgram, Provenance, RootEntry, RootProgram
from .common import sha256_hex

_PROP = "1.3.6.1.4.1.311.10.11."
EKU_PROP = _PROP + "9"
FRIENDLY_NAME_PROP = _PROP + "11"
SHA256_PROP = _PROP + "98"
DISALLOWED_FILETIME_PROP = _PROP + "104"
DISALLOWED_EKU_PROP = _PROP + "122"
NOT_BEFORE_FILETIME_PROP = _PROP + "126"
NOT_BEFORE_EKU_PROP = _PROP + "127"
CTL_CONTENT_TYPE = "1.3.6.1.4.1.311.10.1"


class _Attribute(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[Any] = [("type", core.ObjectIdentifier), ("values", core.SetOf, {"spec": core.OctetString})]


class _Attributes(core.SetOf):  # type: ignore[misc]
    _child_spec: ClassVar[Any] = _Attribute


class TrustedSubject(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[Any] = [
        ("subject_identifier", core.OctetString),
        ("attributes", _Attributes, {"optional": True}),
    ]


class _TrustedSubjects(core.SequenceOf):  # type: ignore[misc]
    _child_spec: ClassVar[Any] = TrustedSubject


class _OidList(core.SequenceOf):  # type: ignore[misc]
    _child_spec: ClassVar[Any] = core.ObjectIdentifier


class _Time(core.Choice):  # type: ignore[misc]
    _alternatives: ClassVar[Any] = [("utc_time", core.UTCTime), ("general_time", core.GeneralizedTime)]


class CertificateTrustList(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[Any] = [
        ("version", core.Integer, {"optional": True}),
        ("subject_usage", _OidList),
        ("list_identifier", core.OctetString, {"optional": True}),
        ("sequence_number", core.Integer, {"optional": True}),
        ("this_update", _Time),
        ("next_update", _Time, {"optional": True}),
        ("subject_algorithm", algos.DigestAlgorithm),
        ("trusted_subjects", _TrustedSubjects, {"optional": True}),
        ("extensions", core.Any, {"explicit": 0, "optional": True}),
    ]


class _CtlContentInfo(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[Any] = [("content_type", cms.ContentType), ("content", CertificateTrustList, {"explicit": 0})]


class _SignedCtl(core.Sequence):  # type: ignore[misc]
    # signer infos and certificates are absent in unsigned STLs
    _fields: ClassVar[Any] = [
        ("version", cms.CMSVersion),
        ("digest_algorithms", cms.DigestAlgorithms),
        ("encap_content_info", _CtlContentInfo),
        ("certificates", cms.CertificateSet, {"implicit": 0, "optional": True}),
        ("crls", cms.RevocationInfoChoices, {"implicit": 1, "optional": True}),
        ("signer_infos", cms.SignerInfos, {"optional": True}),
    ]


class _ContentInfo(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[Any] = [("content_type", cms.ContentType), ("content", _SignedCtl, {"explicit": 0})]


_EPOCH_1601 = datetime(1601, 1, 1, tzinfo=UTC)


def filetime(raw: bytes, where: str) -> datetime:
    if len(raw) != 8:
        raise TrustDataError(f"{where}: FILETIME must be 8 bytes, got {len(raw)}")
    (ticks,) = struct.unpack("<Q", raw)
    return _EPOCH_1601 + timedelta(microseconds=ticks // 10)


def _oids(raw: bytes, where: str) -> frozenset[str]:
    try:
        return frozenset(o.dotted for o in _OidList.load(raw))
    except ValueError as exc:
        raise TrustDataError(f"{where}: EKU property is not a SEQUENCE OF OID: {exc}") from exc


_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
           "sha512": hashlib.sha512}


def parse_ctl(data: bytes, *, source: str) -> CertificateTrustList:
    if not data:
        raise TrustDataError(f"{source}: empty file, not a Microsoft authroot.stl")
    try:
        info = _ContentInfo.load(data, strict=True)  # strict: nothing after the DER
        signed = info["content"]
        eci = signed["encap_content_info"]
        if eci["content_type"].dotted != CTL_CONTENT_TYPE:
            raise TrustDataError(f"{source}: PKCS#7 content is {eci['content_type'].dotted}, not a CTL")
        ctl = eci["content"]
        _ = ctl.native  # parse every byte now, so a cut or corruption names the source
    except (ValueError, TypeError) as exc:
        raise TrustDataError(
            f"{source}: truncated or not a Microsoft authroot.stl (PKCS#7 CTL): {exc}"
        ) from exc
    verify_signature(signed, ctl, source=source)
    return ctl  # type: ignore[no-any-return]


def verify_signature(signed: Any, ctl: CertificateTrustList, *, source: str) -> bool:
    """Check every SignerInfo of a signed STL; False when the STL is unsigned."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    infos = signed["signer_infos"]
    if isinstance(infos, core.Void) or len(infos) == 0:
        return False
    certs = [c.chosen for c in signed["certificates"] or [] if c.name == "certificate"]
    bad = f"{source}: authroot.stl signature does not verify (corrupted or altered file)"
    try:
        for si in infos:
            algo = si["digest_algorithm"]["algorithm"].native
            if algo not in _HASHES:
                raise TrustDataError(f"{source}: unsupported digest algorithm {algo}")
            attrs = si["signed_attrs"]
            digests = [a["values"][0].native for a in attrs if a["type"].dotted == "1.2.840.113549.1.9.4"]
            if not digests or digests[0] != _HASHES[algo](ctl.contents).digest():
                raise TrustDataError(f"{bad}: the CTL digest differs from the signed messageDigest")
            if si["sid"].name != "issuer_and_serial_number":
                raise TrustDataError(f"{source}: unsupported signer identifier {si['sid'].name}")
            sid = si["sid"].chosen
            signer = next((c for c in certs if c.issuer == sid["issuer"]
                           and c.serial_number == sid["serial_number"].native), None)
            if signer is None:
                raise TrustDataError(f"{bad}: the signer certificate is not in the file")
            key = x509.load_der_x509_certificate(signer.dump()).public_key()
            tbs = b"\x31" + attrs.dump()[1:]  # signed over the SET OF, not the [0] tag
            sig = si["signature"].native
            hash_alg = getattr(hashes, algo.upper())()
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, tbs, padding.PKCS1v15(), hash_alg)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, tbs, ec.ECDSA(hash_alg))
            else:
                raise TrustDataError(f"{source}: unsupported signer key type")
    except InvalidSignature as exc:
        raise TrustDataError(bad) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise TrustDataError(f"{bad}: {exc}") from exc
    return True


def import_authroot(
    data: bytes, *, source: str, version: str | None = None, fetched: str | None = None
) -> ImportedProgram:
    ctl = parse_ctl(data, source=source)
    roots: dict[str, RootEntry] = {}
    try:
        subjects = list(ctl["trusted_subjects"]) if ctl["trusted_subjects"].native is not None else []
        for i, ts in enumerate(subjects):
            where = f"{source}: trusted subject {i} ({ts['subject_identifier'].native.hex()})"
            props: dict[str, bytes] = {}
            for attr in ts["attributes"] or []:
                vals = list(attr["values"])
                if vals and vals[0].native:  # an empty value means "not set"
                    props[attr["type"].dotted] = vals[0].native
            sha = props.get(SHA256_PROP)
            if sha is None or len(sha) != 32:
                raise TrustDataError(f"{where}: no SHA-256 property")
            name = props.get(FRIENDLY_NAME_PROP, b"").decode("utf-16-le", "replace").rstrip("\x00")
            ekus = _oids(props[EKU_PROP], where) if EKU_PROP in props else None
            removed_at = None
            if DISALLOWED_FILETIME_PROP in props:
                applies = (
                    _oids(props[DISALLOWED_EKU_PROP], where) if DISALLOWED_EKU_PROP in props else None
                )
                if applies is None or SERVER_AUTH in applies:
                    removed_at = filetime(props[DISALLOWED_FILETIME_PROP], where)
            distrust_after = None
            if NOT_BEFORE_FILETIME_PROP in props:
                applies = (
                    _oids(props[NOT_BEFORE_EKU_PROP], where) if NOT_BEFORE_EKU_PROP in props else None
                )
                if applies is None or SERVER_AUTH in applies:
                    distrust_after = filetime(props[NOT_BEFORE_FILETIME_PROP], where)
            roots[sha.hex()] = RootEntry(
                sha256=sha.hex(),
                name=name or sha.hex()[:16],
                distrust_after=distrust_after,
                removed_at=removed_at,
                ekus=ekus,
            )
        this_update = ctl["this_update"].native
        seq = ctl["sequence_number"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise TrustDataError(f"{source}: malformed CTL: {exc}") from exc
    prov = Provenance(
        source=source,
        sha256=sha256_hex(data),
        version=version or (f"sequence {seq:X}" if seq is not None else None),
        date=this_update.isoformat() if this_update else None,
        fetched=fetched,
    )
    return ImportedProgram(RootProgram("microsoft", prov, roots), {})
