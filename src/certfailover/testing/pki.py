"""A test PKI built with `cryptography`: roots, intermediates, leaves, CRLs and OCSP responses.

Web-PKI shaped by default (EC P-256 keys, SAN, serverAuth EKU, AKI/SKI), with every knob a
test needs to make a certificate wrong on purpose::

    from certfailover.testing import pki

    root = pki.make_root("Test Root A")
    inter = pki.make_intermediate(root, "Test Issuing CA A")
    leaf, key = pki.make_leaf(inter, ["www.example.test"], crl_urls=["http://127.0.0.1:8/a.crl"])
    crl = pki.make_crl(inter, {leaf.serial_number: x509.ReasonFlags.key_compromise})
    bundle = pki.write_bundle(tmp_path / "roots.pem", root)   # a PEM trust store
    m = pki.material(leaf, inter.chain(), ca="a")             # what a Check sees

Times default to the real clock (valid from a day ago); pass `not_before`/`now` to pin them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from .. import keys
from ..checks import CertMaterial
from ..model import Cert, CertState

__all__ = ["Authority", "make_crl", "make_intermediate", "make_leaf", "make_ocsp", "make_root",
           "material", "pem", "write_bundle"]

PEM = serialization.Encoding.PEM
SigningKey = CertificateIssuerPrivateKeyTypes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Authority:
    """A CA certificate and its key; `issuer` is the authority that signed it (None: a root)."""

    cert: x509.Certificate
    key: SigningKey
    issuer: Authority | None = None

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def chain(self) -> list[x509.Certificate]:
        """This authority and its issuers up to, not including, the root (what a server sends
        after the leaf)."""
        out: list[x509.Certificate] = []
        cur: Authority | None = self
        while cur is not None and cur.issuer is not None:
            out.append(cur.cert)
            cur = cur.issuer
        return out

    @property
    def root(self) -> Authority:
        return self if self.issuer is None else self.issuer.root


def _ca_usage(crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=True, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def make_root(cn: str, *, key: SigningKey | None = None, not_before: dt.datetime | None = None,
              days: int = 3650, crl_sign: bool = True) -> Authority:
    """A self-signed root. Pass the `key` of another root to make a re-issued root."""
    key = key or _ec_key()
    nb = not_before or _now() - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(nb + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_usage(crl_sign), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Authority(cert, key)


def make_intermediate(parent: Authority, cn: str, *, key: SigningKey | None = None,
                      not_before: dt.datetime | None = None, days: int = 1825,
                      path_length: int | None = 0, crl_sign: bool = True,
                      ekus: Sequence[x509.ObjectIdentifier] | None = None) -> Authority:
    """An intermediate signed by `parent`. With the `key` of an existing CA it is a
    cross-sign of that CA; `ekus` adds an EKU constraint."""
    key = key or _ec_key()
    nb = not_before or _now() - dt.timedelta(days=1)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(parent.cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(nb + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(_ca_usage(crl_sign), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             parent.key.public_key()), critical=False))
    if ekus is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    return Authority(b.sign(parent.key, hashes.SHA256()), key, parent)


def make_leaf(issuer: Authority, domains: Sequence[str], *,
              not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              key_type: str = "ec-p256", key: PrivateKeyTypes | None = None,
              csr: x509.CertificateSigningRequest | None = None, serial: int | None = None,
              ocsp_url: str | None = None, crl_urls: Sequence[str] = (),
              ekus: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
              aki: bool = True,
              extensions: Iterable[x509.ExtensionType] = ()) -> tuple[x509.Certificate,
                                                                       PrivateKeyTypes]:
    """A leaf for `domains` (SAN; the first is also the CN), valid 90 days from an hour ago
    unless told otherwise. With `csr`, the leaf is for the CSR's public key, as a CA would sign
    it (the returned key is then a throwaway that does not belong to the leaf). `ekus=None`
    leaves the EKU out; `extensions` are added as non-critical (e.g. an SCT list)."""
    key = key or keys.generate(key_type)
    public = csr.public_key() if csr is not None else key.public_key()
    nb = not_before or _now() - dt.timedelta(hours=1)
    na = not_after or nb + dt.timedelta(days=90)
    b = (x509.CertificateBuilder().subject_name(_name(domains[0]))
         .issuer_name(issuer.cert.subject)
         .public_key(public)  # type: ignore[arg-type]  # a CSR's key is always a signing key
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                        critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if ekus is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)
    if crl_urls:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(u) for u in crl_urls], None, None, None)]),
            critical=False)
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]),
            critical=False)
    for ext in extensions:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer.key, hashes.SHA256()), key


def make_crl(issuer: Authority, revoked: Mapping[int, x509.ReasonFlags | None], *,
             now: dt.datetime | None = None, this_update: dt.datetime | None = None,
             next_update: dt.datetime | None | bool = True,
             idp: x509.IssuingDistributionPoint | None = None,
             issuer_name: x509.Name | None = None) -> x509.CertificateRevocationList:
    """A CRL from `issuer` revoking `revoked` (serial -> reason or None). thisUpdate defaults
    to an hour before `now`, nextUpdate to a day after it (`next_update=None`: no nextUpdate)."""
    now = now or _now()
    this = this_update or now - dt.timedelta(hours=1)
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer_name or issuer.cert.subject)
         .last_update(this))
    if next_update is True:
        b = b.next_update(now + dt.timedelta(days=1))
    elif isinstance(next_update, dt.datetime):
        b = b.next_update(next_update)
    if idp is not None:
        b = b.add_extension(idp, critical=True)
    for serial, reason in revoked.items():
        rb = (x509.RevokedCertificateBuilder().serial_number(serial)
              .revocation_date(this - dt.timedelta(minutes=1)))
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(issuer.key, hashes.SHA256())


def make_ocsp(leaf: x509.Certificate, issuer: x509.Certificate, signer: x509.Certificate,
              signer_key: SigningKey, *, status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
              reason: x509.ReasonFlags | None = None, now: dt.datetime | None = None,
              this_update: dt.datetime | None = None,
              next_update: dt.datetime | None | bool = True, include_signer: bool | None = None,
              algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """A DER OCSP response for `leaf`, signed by `signer` (the issuer or a delegated
    responder, included in the response unless it is the issuer). nextUpdate defaults to
    eleven hours after thisUpdate (an hour before `now`)."""
    now = now or _now()
    this = this_update or now - dt.timedelta(hours=1)
    nxt = this + dt.timedelta(hours=12) if next_update is True else \
        next_update if isinstance(next_update, dt.datetime) else None
    revoked_at = this - dt.timedelta(minutes=5) if status is ocsp.OCSPCertStatus.REVOKED else None
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=issuer, algorithm=algorithm or hashes.SHA1(), cert_status=status,
        this_update=this, next_update=nxt, revocation_time=revoked_at,
        revocation_reason=reason).responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
    if include_signer if include_signer is not None else signer is not issuer:
        b = b.certificates([signer])
    return b.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in certs)


def write_bundle(path: Path, *authorities: Authority) -> Path:
    """A PEM trust store holding `authorities` (a site's `trust = ["/path/roots.pem"]`)."""
    path.write_bytes(b"".join(a.pem for a in authorities))
    return path


def material(leaf: x509.Certificate, chain: Sequence[x509.Certificate] = (), *,
             site: str = "www", ca: str = "a", state: CertState = CertState.STANDBY,
             key_matches: bool = True, created: dt.datetime | None = None,
             path: str = "/nonexistent") -> CertMaterial:
    """What a Check is given for `leaf` (as the engine loads it from the vault), without a
    vault: the certificate's metadata is derived from the leaf."""
    serial = format(leaf.serial_number, "x")
    cert = Cert(id=f"{site}/{ca}/{serial}", site=site, ca=ca, serial=serial,
                not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
                sha256=leaf.fingerprint(hashes.SHA256()).hex(),
                key_type=keys.key_type_of(leaf.public_key()),
                issuer_dn=leaf.issuer.rfc4514_string(), state=state,
                created=created or leaf.not_valid_before_utc, path=path)
    return CertMaterial(cert=cert, leaf=leaf, chain=tuple(chain), key_matches=key_matches)
