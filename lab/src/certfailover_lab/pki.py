"""A small test PKI built with cryptography's CertificateBuilder (web-PKI shaped, non-critical SAN).

For tests, the demo and benchmarks: root -> intermediate -> leaf, with chosen validity.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfailover import keys

PEM = serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Authority:
    cert: x509.Certificate
    key: PrivateKeyTypes
    issuer: Authority | None = None
    children: list[x509.Certificate] = field(default_factory=list)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(PEM)

    def chain(self) -> list[x509.Certificate]:
        """This authority and its issuers up to (excluding) the root."""
        out, cur = [], self
        while cur.issuer is not None:
            out.append(cur.cert)
            cur = cur.issuer
        return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_root(cn: str, *, not_before: dt.datetime | None = None, days: int = 3650) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    nb = not_before or _now() - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(nb + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Authority(cert, key)


def make_intermediate(parent: Authority, cn: str, *, days: int = 1825) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    nb = _now() - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(parent.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(nb + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                parent.key.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(parent.key, hashes.SHA256()))  # type: ignore[arg-type]
    return Authority(cert, key, parent)


def make_leaf(issuer: Authority, domains: list[str] | tuple[str, ...], *,
              not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              key_type: str = "ec-p256", key: PrivateKeyTypes | None = None,
              ocsp_url: str | None = None,
              csr: x509.CertificateSigningRequest | None = None) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """A leaf for `domains`; with `csr`, for the CSR's public key (as a CA would sign it; the
    returned key is then a throwaway that does not belong to the leaf)."""
    key = key or keys.generate(key_type)
    nb = not_before or _now() - dt.timedelta(hours=1)
    na = not_after or nb + dt.timedelta(days=90)
    b = (x509.CertificateBuilder().subject_name(_name(domains[0])).issuer_name(issuer.cert.subject)
         .public_key(csr.public_key() if csr is not None else key.public_key())  # type: ignore[arg-type]
         .serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), critical=False))  # type: ignore[arg-type]
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]),
            critical=False)
    return b.sign(issuer.key, hashes.SHA256()), key  # type: ignore[arg-type]


def write_bundle(path: Path, *authorities: Authority) -> Path:
    path.write_bytes(b"".join(a.pem for a in authorities))
    return path
