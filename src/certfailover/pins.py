"""Key pins: base64 SHA-256 of the DER SubjectPublicKeyInfo (RFC 7469 `pin-sha256`), spare keys.

A site's pins are its leaf keys (active, standbys, a spare) and the keys of every intermediate
and root of every chain that may be served (docs/chains.md): a chain switch then never
serves a key an app did not pin.

A spare key is generated ahead of need and kept private (0600), so an app that pins keys can
ship its pin before the key is ever used in a certificate.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)

from .errors import InputError, StoreError
from .keys import key_type_of as public_key_type
from .store.files import atomic_write

if TYPE_CHECKING:
    from .chains import ChainJudge
    from .config import SiteConfig
    from .store.db import Database
    from .store.vault import Vault

__all__ = ["KEY_TYPES", "Pin", "SitePins", "ensure_spare_key", "generate_key", "key_type_of",
           "site_pins", "spare_key_path", "spki_pin"]

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ec-p256": ec.SECP256R1,
    "ec-p384": ec.SECP384R1,
}
_RSA_BITS: dict[str, int] = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
KEY_TYPES: tuple[str, ...] = (*_CURVES, *_RSA_BITS, "ed25519")

SparePrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def spki_pin(public_key: PublicKeyTypes) -> str:
    """base64(SHA-256(DER SubjectPublicKeyInfo)), the `pin-sha256` value of HPKP and app pinning."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def generate_key(key_type: str) -> SparePrivateKey:
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}: expected one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PrivateKeyTypes) -> str | None:
    """The key_type name ("ec-p256", "rsa-2048", ...) of a private key, None if unsupported."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for name, curve in _CURVES.items():
            if isinstance(key.curve, curve):
                return name
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}" if f"rsa-{key.key_size}" in _RSA_BITS else None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    return None


def _load(path: Path, key_type: str) -> SparePrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StoreError(f"{path}: spare key has mode {mode:04o}; it must be 0600 (chmod 600)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    found = key_type_of(key)
    if found != key_type:
        raise InputError(f"{path}: spare key is {found or type(key).__name__}, expected {key_type}")
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey,
                            ed25519.Ed25519PrivateKey))
    return key


def ensure_spare_key(path: Path, key_type: str) -> SparePrivateKey:
    """Return the spare key at `path`, creating it (PKCS#8 PEM, 0600, atomically) the first time.

    An existing key is reused as long as it has `key_type` and mode 0600; otherwise a clear
    error names the file. Callers serialise (the daemon holds the store lock).
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}: expected one of {', '.join(KEY_TYPES)}")
    path = Path(path)
    if path.exists():
        return _load(path, key_type)
    if not path.parent.exists():
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    key = generate_key(key_type)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, pem, mode=0o600)
    return key


@dataclass(frozen=True)
class Pin:
    role: str  # "active", "standby", "spare", or "intermediate" / "root" of a served path
    pin_sha256: str  # base64 SHA-256 of the DER SubjectPublicKeyInfo
    cert_id: str | None  # None for the spare key (no certificate yet)
    ca: str | None
    key_type: str
    subject: str | None = None  # an intermediate's or root's subject


@dataclass(frozen=True)
class SitePins:
    site: str
    pins: tuple[Pin, ...]
    spare_key: str  # where the spare key is kept (mode 0600)


def spare_key_path(vault_root: Path, site: str) -> Path:
    """<store>/spare/<site>.key"""
    from .store.vault import safe_name
    return Path(vault_root) / "spare" / f"{safe_name(site, 'site')}.key"


def site_pins(db: Database, vault: Vault, site: SiteConfig, *,
              judge: ChainJudge | None = None, now: datetime | None = None) -> SitePins:
    """Pins of the active key, every standby key, one spare key (created the first time), then
    the intermediates of every stored chain and the roots every chain reaches now (judged by
    `judge`, default: the default trust snapshot), each key once."""
    from .chains import ChainJudge
    from .model import CertState, utcnow
    judge = judge or ChainJudge.for_snapshot(None)
    now = now or utcnow()
    pins: list[Pin] = []
    authorities: list[Pin] = []
    seen: set[str] = set()
    certs = sorted(db.certs(site.name), key=lambda c: (c.state is not CertState.ACTIVE, c.created))
    for c in certs:
        m = vault.load(Path(c.path))
        pins.append(Pin(c.state.value, spki_pin(m.leaf.public_key()), c.id, c.ca, c.key_type))
        for verdict in judge.judge(m.leaf, m.chains, site.trust, site.domains[0], now):
            chain = m.chains[verdict.index]
            for role, ca_cert in [*(("intermediate", x) for x in chain),
                                  *(("root", r) for r in judge.anchors(verdict))]:
                pin = spki_pin(ca_cert.public_key())
                if pin not in seen:
                    seen.add(pin)
                    authorities.append(Pin(role, pin, c.id, c.ca,
                                           public_key_type(ca_cert.public_key()),
                                           ca_cert.subject.rfc4514_string()))
    path = spare_key_path(vault.root, site.name)
    spare = ensure_spare_key(path, site.key_type)
    pins.append(Pin("spare", spki_pin(spare.public_key()), None, None, site.key_type))
    return SitePins(site.name, tuple(pins + authorities), str(path))

