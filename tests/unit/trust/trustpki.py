"""Test PKIs and test root-program data for the trust engine tests.

Certificates come from the kit (certfailover.testing.pki), with fixed times and keys reused
by label (a cross-sign is an intermediate with a root's key). SCT lists are written as the
raw RFC 6962 extension (cryptography can parse but not build SCTs); the signatures inside
are dummies, which is fine: only timestamps are read.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certfailover.testing import pki
from certfailover.testing.pki import pem
from certfailover.trust.evaluate import TrustEngine
from certfailover.trust.snapshot import Snapshot, build_snapshot
from certfailover.trust.sources.chrome import import_root_store
from certfailover.trust.sources.microsoft import import_authroot
from certfailover.trust.sources.mozilla import import_certdata
from certfailover.trust.sources.pembundle import import_bundle

SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
_KEYS: dict[str, ec.EllipticCurvePrivateKey] = {}


#: a CA is the kit's Authority (certificate, key, parent)
CA = pki.Authority


def _key(label: str | None) -> ec.EllipticCurvePrivateKey:
    """The same key for the same label: a cross-sign is an intermediate with a root's key."""
    if label is None:
        return ec.generate_private_key(ec.SECP256R1())
    if label not in _KEYS:
        _KEYS[label] = ec.generate_private_key(ec.SECP256R1())
    return _KEYS[label]


def make_root(cn: str, *, key_label: str | None = None, not_before: datetime = T0 - timedelta(days=3650),
              days: int = 9000) -> CA:
    return pki.make_root(cn, key=_key(key_label or cn), not_before=not_before, days=days)


def make_intermediate(parent: CA, cn: str, *, key_label: str | None = None,
                      not_before: datetime = T0 - timedelta(days=1000), days: int = 5000,
                      ekus: Sequence[x509.ObjectIdentifier] | None = None) -> CA:
    """An intermediate; with ``key_label`` of an existing root this is a cross-sign."""
    return pki.make_intermediate(parent, cn, key=_key(key_label or cn), not_before=not_before,
                                 days=days, path_length=None, ekus=ekus)


def sct_extension(times: Sequence[datetime]) -> x509.UnrecognizedExtension:
    body = b""
    for i, t in enumerate(times):
        sig = b"\x00" * 8
        sct = (b"\x00" + hashlib.sha256(bytes([i])).digest() + struct.pack(">Q", int(t.timestamp() * 1000))
               + b"\x00\x00" + b"\x04\x03" + struct.pack(">H", len(sig)) + sig)
        body += struct.pack(">H", len(sct)) + sct
    tls = struct.pack(">H", len(body)) + body
    return x509.UnrecognizedExtension(SCT_OID, core.OctetString(tls).dump())


def make_leaf(issuer: CA, names: Sequence[str] = ("www.example.test",), *,
              not_before: datetime = T0, days: int = 90, scts: Sequence[datetime] | None = None,
              ekus: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
              rsa_key: bool = False) -> x509.Certificate:
    """The kit's leaf, with an SCT list (`scts`: their timestamps) and a reused key."""
    key = rsa.generate_private_key(65537, 2048) if rsa_key else _key("leaf-key")
    leaf, _ = pki.make_leaf(issuer, names, key=key, not_before=not_before,
                            not_after=not_before + timedelta(days=days), ekus=ekus,
                            extensions=[sct_extension(scts)] if scts is not None else ())
    return leaf


# -- test program data in upstream formats --------------------------------------------------


def _octal(data: bytes) -> str:
    rows = [data[i:i + 16] for i in range(0, len(data), 16)]
    return "\n".join("".join(f"\\{b:03o}" for b in row) for row in rows)


def certdata(entries: Sequence[tuple[CA, str, str | None, str | None]]) -> bytes:
    """A certdata.txt with (root, server trust level, cert distrust-after, trust distrust-after);
    distrust-after values are UTCTime strings like ``241130235959Z``. Every object carries the
    attributes NSS always writes (the importer refuses incomplete objects)."""
    out = ["# test certdata", "BEGINDATA",
           "CKA_CLASS CK_OBJECT_CLASS CKO_NSS_BUILTIN_ROOT_LIST", "CKA_TOKEN CK_BBOOL CK_TRUE",
           "CKA_PRIVATE CK_BBOOL CK_FALSE", "CKA_MODIFIABLE CK_BBOOL CK_FALSE",
           'CKA_LABEL UTF8 "Test Root List"']
    common = ["CKA_TOKEN CK_BBOOL CK_TRUE", "CKA_PRIVATE CK_BBOOL CK_FALSE",
              "CKA_MODIFIABLE CK_BBOOL CK_FALSE"]
    for ca, level, cert_da, trust_da in entries:
        issuer = ca.cert.issuer.public_bytes()
        serial = core.Integer(ca.cert.serial_number).dump()

        def da(v: str | None) -> list[str]:
            if v is None:
                return ["CKA_NSS_SERVER_DISTRUST_AFTER CK_BBOOL CK_FALSE"]
            return ["CKA_NSS_SERVER_DISTRUST_AFTER MULTILINE_OCTAL", _octal(v.encode()), "END"]

        label = ca.cert.subject.rfc4514_string()
        out += [
            "", f"# Certificate \"{label}\"", "CKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE", *common,
            f'CKA_LABEL UTF8 "{label}"', "CKA_CERTIFICATE_TYPE CK_CERTIFICATE_TYPE CKC_X_509",
            "CKA_SUBJECT MULTILINE_OCTAL", _octal(ca.cert.subject.public_bytes()), "END",
            'CKA_ID UTF8 "0"',
            "CKA_ISSUER MULTILINE_OCTAL", _octal(issuer), "END",
            "CKA_SERIAL_NUMBER MULTILINE_OCTAL", _octal(serial), "END",
            "CKA_VALUE MULTILINE_OCTAL", _octal(ca.der), "END", *da(cert_da),
            "", f"# Trust for \"{label}\"", "CKA_CLASS CK_OBJECT_CLASS CKO_NSS_TRUST", *common,
            f'CKA_LABEL UTF8 "{label}"',
            "CKA_CERT_SHA1_HASH MULTILINE_OCTAL", _octal(hashlib.sha1(ca.der).digest()), "END",
            "CKA_CERT_MD5_HASH MULTILINE_OCTAL", _octal(hashlib.md5(ca.der).digest()), "END",
            "CKA_ISSUER MULTILINE_OCTAL", _octal(issuer), "END",
            "CKA_SERIAL_NUMBER MULTILINE_OCTAL", _octal(serial), "END",
            f"CKA_TRUST_SERVER_AUTH CK_TRUST {level}", *da(trust_da),
            "CKA_TRUST_EMAIL_PROTECTION CK_TRUST CKT_NSS_MUST_VERIFY_TRUST",
            "CKA_TRUST_CODE_SIGNING CK_TRUST CKT_NSS_MUST_VERIFY_TRUST",
            "CKA_TRUST_STEP_UP_APPROVED CK_BBOOL CK_FALSE",
        ]
    return ("\n".join(out) + "\n").encode()


def textproto(entries: Sequence[tuple[CA, str]]) -> bytes:
    """A root_store.textproto: (root, extra text inside trust_anchors {...})."""
    out = ["version_major: 1"]
    for ca, extra in entries:
        out.append(f'trust_anchors {{\n  sha256_hex: "{ca.sha256}"\n  {extra}\n}}')
    return ("\n".join(out) + "\n").encode()


def write(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def _filetime(d: datetime) -> bytes:
    delta = d - datetime(1601, 1, 1, tzinfo=UTC)
    return struct.pack("<Q", (delta.days * 86400 + delta.seconds) * 10_000_000)


def authroot_stl(entries: Sequence[tuple[CA, dict[str, bytes | datetime | Sequence[str]]]]) -> bytes:
    """An unsigned authroot.stl; property values keyed by property id ("9", "104", ...)."""
    from asn1crypto import algos, cms

    from certfailover.trust.sources import microsoft as ms

    subjects = []
    for ca, props in entries:
        attrs = [{"type": ms.SHA256_PROP, "values": [core.OctetString(bytes.fromhex(ca.sha256))]},
                 {"type": ms.FRIENDLY_NAME_PROP,
                  "values": [core.OctetString(ca.cert.subject.rfc4514_string().encode("utf-16-le"))]}]
        for pid, val in props.items():
            if isinstance(val, datetime):
                raw = _filetime(val)
            elif isinstance(val, bytes):
                raw = val
            else:
                raw = ms._OidList(list(val)).dump()
            attrs.append({"type": ms._PROP + pid, "values": [core.OctetString(raw)]})
        subjects.append({"subject_identifier": hashlib.sha1(ca.der).digest(), "attributes": attrs})
    ctl = ms.CertificateTrustList({
        "subject_usage": ["1.3.6.1.4.1.311.10.3.9"],
        "sequence_number": 7,
        "this_update": ms._Time(name="utc_time", value=datetime(2024, 1, 2, tzinfo=UTC)),
        "subject_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
        "trusted_subjects": subjects,
    })
    signed = ms._SignedCtl({
        "version": "v1",
        "digest_algorithms": cms.DigestAlgorithms([algos.DigestAlgorithm({"algorithm": "sha256"})]),
        "encap_content_info": {"content_type": ms.CTL_CONTENT_TYPE, "content": ctl},
    })
    return ms._ContentInfo({"content_type": "signed_data", "content": signed}).dump()




# -- a lab: test roots in every program format, through the real importers ---------------

CUT = datetime(2024, 11, 11, 23, 59, 59, tzinfo=UTC)  # Entrust-style SCT cut-off
CUT_EPOCH = int(CUT.timestamp())


@dataclass(frozen=True)
class Lab:
    snap: Snapshot
    engine: TrustEngine
    plain: CA
    entrust: CA
    trustobj: CA
    allafter: CA
    validity: CA
    names: CA
    ms: CA
    ms_eku: CA
    blocked: CA
    root_a: CA
    root_b: CA


def build_lab() -> Lab:
    plain, entrust, trustobj = make_root("Plain Root"), make_root("Entrust-like Root"), make_root("TrustObj Root")
    allafter, validity, names = make_root("AllAfter Root"), make_root("Validity Root"), make_root("Names Root")
    ms, ms_eku, blocked = make_root("MS Root"), make_root("MS ClientOnly Root"), make_root("Blocked Root")
    root_a, root_b = make_root("Root A"), make_root("Root B")
    moz = import_certdata(certdata([
        (plain, "CKT_NSS_TRUSTED_DELEGATOR", None, None),
        (entrust, "CKT_NSS_TRUSTED_DELEGATOR", "241130235959Z", None),
        (trustobj, "CKT_NSS_TRUSTED_DELEGATOR", None, "240601000000Z"),
        (blocked, "CKT_NSS_NOT_TRUSTED", None, None),
        (root_a, "CKT_NSS_TRUSTED_DELEGATOR", None, None),
        (root_b, "CKT_NSS_TRUSTED_DELEGATOR", "230101000000Z", None),
    ]), source="test-certdata.txt")
    chrome = import_root_store(textproto([
        (plain, ""),
        (entrust, (f"constraints {{ sct_not_after_sec: {CUT_EPOCH} min_version: \"131\" }}\n"
                  "  constraints { max_version_exclusive: \"131\" }")),
        (allafter, f"constraints {{ sct_all_after_sec: {CUT_EPOCH} }}"),
        (validity, ("constraints { validity_starts_not_after_sec: 1719792000 }\n"  # 2024-07-01
                   "  constraints { validity_starts_after_sec: 1735689600 }")),  # 2025-01-01
        (names, 'constraints { permitted_dns_names: "example.test" }'),
        (root_b, ""),
    ]), source="test-root_store.textproto")
    micro = import_authroot(authroot_stl([
        (plain, {}),
        (ms, {"9": ["1.3.6.1.5.5.7.3.1"], "104": datetime(2025, 1, 1, tzinfo=UTC),
              "126": datetime(2024, 6, 1, tzinfo=UTC)}),
        (ms_eku, {"9": ["1.3.6.1.5.5.7.3.2"]}),
    ]), source="test-authroot.stl")
    apple = import_bundle("apple", pem(plain.cert, root_a.cert), source="test-apple.pem")
    pool = {c.sha256: c.der for c in (allafter, validity, names, ms, ms_eku)}
    snap = build_snapshot([moz, chrome, micro, apple], built=datetime(2024, 1, 1, tzinfo=UTC), pool=pool)
    return Lab(snap, TrustEngine(snap), plain, entrust, trustobj, allafter, validity, names, ms,
               ms_eku, blocked, root_a, root_b)
