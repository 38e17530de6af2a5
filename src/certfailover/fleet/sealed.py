"""Sealed key material: certificates and private keys in the shared database, encrypted.

An agent on another host needs a site's private key; the database it reads is shared by every
host of the fleet, so the key is never stored there in plain text:

* AES-256-GCM (`cryptography`'s AEAD), a fresh random 96-bit nonce per record and per write;
* the record's identity (certificate id and site) and the key id are the associated data, so
  a ciphertext moved to another row, or relabelled with another key id, does not open;
* the key-encryption key (KEK, 32 bytes) comes from a `file:`/`env:` reference on each host
  (`tables.resolve_secret`), written as 64 hex digits or base64; it never enters the database
  and is never logged (its `repr` shows the key id only);
* every record names the id of the KEK that sealed it (a fingerprint, not the key);
* rotation: `rotate()` re-seals every record under the current KEK; until it has finished the
  keyring's previous KEKs still open the records they sealed.

A record holds one certificate with every chain stored for it (docs/chains.md): the leaf,
chain 0, the key, and the alternate chains 1, 2, ... (`Plain.alt_chains`; a record sealed
without them opens with none). A chain is named across hosts by `chain_digest` (SHA-256 of its
certificates' DER, in order), not by its index.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import CertFailoverError
from ..store.db import fleet_sealed
from ..store.vault import base_dir, chain_dirs
from ..tables import Secret

__all__ = ["Kek", "Keyring", "Plain", "SealError", "Sealed", "chain_digest", "kek_from_secret",
           "kek_ids", "load", "load_many", "material", "open_record", "rotate", "seal",
           "seal_many", "store"]

_AAD_TAG = b"certfailover sealed v1"
_NONCE = 12


class SealError(CertFailoverError):
    """A sealed record cannot be opened: wrong key, unknown key id, or tampered data."""


@dataclass(frozen=True)
class Kek:
    """A 256-bit key-encryption key and its public id (a fingerprint of the key)."""

    key: bytes = field(repr=False)
    id: str = ""

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError(f"a key-encryption key has 32 bytes, not {len(self.key)}")
        if not self.id:
            digest = hashlib.sha256(b"certfailover kek id\0" + self.key).hexdigest()[:16]
            object.__setattr__(self, "id", digest)

    def __repr__(self) -> str:
        return f"Kek(id={self.id!r})"


def kek_from_secret(secret: Secret) -> Kek:
    """A KEK from its text: 64 hex digits, or base64 of 32 bytes. The error never quotes it."""
    text = secret.value.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_"
                                   if ("-" in text or "_" in text) else None, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 32:
        raise ValueError(f"the key-encryption key from {secret.source or 'its reference'} must be "
                         "32 random bytes written as 64 hex digits or base64 (e.g. "
                         "`openssl rand -hex 32`)")
    return Kek(raw)


@dataclass(frozen=True)
class Keyring:
    """The KEK that seals, and the older ones still accepted for opening during a rotation."""

    current: Kek
    previous: tuple[Kek, ...] = ()

    def find(self, kek_id: str) -> Kek | None:
        for k in (self.current, *self.previous):
            if k.id == kek_id:
                return k
        return None


@dataclass(frozen=True)
class Plain:
    """What is sealed: one certificate's PEM material, with every stored chain."""

    cert_pem: bytes
    chain_pem: bytes  # chain 0
    key_pem: bytes = field(repr=False)
    alt_chains: tuple[bytes, ...] = ()  # chains 1, 2, ... (PEM), as stored in the vault

    @property
    def chains(self) -> tuple[bytes, ...]:
        """Every chain, index order (0: `chain_pem`)."""
        return (self.chain_pem, *self.alt_chains)


def chain_digest(chain_pem: bytes) -> str:
    """SHA-256 (hex) of a chain's certificates' DER, concatenated in order: the chain's name in
    `fleet_desired.chain` and `fleet_served.chain` (the same on every host, whatever index it
    has in a vault). An empty chain is the digest of nothing. ValueError: not PEM certificates."""
    certs = x509.load_pem_x509_certificates(chain_pem) if chain_pem.strip() else []
    return hashlib.sha256(b"".join(c.public_bytes(serialization.Encoding.DER)
                                   for c in certs)).hexdigest()


def material(directory: Path) -> Plain:
    """A stored certificate's material from its vault directory (or one of its chain
    directories): leaf, chain 0, key and every alternate chain, as sealed for the agents."""
    base = base_dir(Path(directory))
    return Plain((base / "cert.pem").read_bytes(), (base / "chain.pem").read_bytes(),
                 (base / "privkey.pem").read_bytes(),
                 tuple((d / "chain.pem").read_bytes() for d in chain_dirs(base)[1:]))


@dataclass(frozen=True)
class Sealed:
    """One stored record: the identity in clear, the material encrypted."""

    cert_id: str
    site: str
    kek_id: str
    nonce: bytes
    ciphertext: bytes


def _aad(cert_id: str, site: str, kek_id: str) -> bytes:
    return b"\0".join((_AAD_TAG, cert_id.encode(), site.encode(), kek_id.encode()))


def seal(ring: Keyring, cert_id: str, site: str, plain: Plain) -> Sealed:
    kek = ring.current
    nonce = os.urandom(_NONCE)
    fields: dict[str, object] = {"cert": plain.cert_pem.decode(),
                                 "chain": plain.chain_pem.decode(), "key": plain.key_pem.decode()}
    if plain.alt_chains:  # absent in records of a certificate with one chain (as before)
        fields["alt_chains"] = [c.decode() for c in plain.alt_chains]
    doc = json.dumps(fields).encode()
    ct = AESGCM(kek.key).encrypt(nonce, doc, _aad(cert_id, site, kek.id))
    return Sealed(cert_id, site, kek.id, nonce, ct)


def open_record(ring: Keyring, rec: Sealed) -> Plain:
    kek = ring.find(rec.kek_id)
    if kek is None:
        raise SealError(f"sealed material of {rec.cert_id}: sealed with key id {rec.kek_id}, "
                        f"which this host does not have (it has {ring.current.id}"
                        f"{''.join(', ' + k.id for k in ring.previous)})")
    try:
        doc = json.loads(AESGCM(kek.key).decrypt(rec.nonce, rec.ciphertext,
                                                 _aad(rec.cert_id, rec.site, rec.kek_id)))
        alt = doc.get("alt_chains", [])
        if not isinstance(alt, list) or not all(isinstance(c, str) for c in alt):
            raise ValueError("alt_chains is not a list of PEM texts")
        return Plain(doc["cert"].encode(), doc["chain"].encode(), doc["key"].encode(),
                     tuple(c.encode() for c in alt))
    except InvalidTag:
        raise SealError(f"sealed material of {rec.cert_id}: does not authenticate under key id "
                        f"{rec.kek_id} (tampered, moved from another record, or a different "
                        "key with the same id)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SealError(f"sealed material of {rec.cert_id}: bad content ({exc})") from None


# -- database ----------------------------------------------------------------------------------

def _row(r: sa.Row[tuple[object, ...]]) -> Sealed:
    m = r._mapping
    return Sealed(str(m["cert_id"]), str(m["site"]), str(m["kek_id"]), bytes(m["nonce"]),
                  bytes(m["ciphertext"]))


def store(conn: sa.Connection, rec: Sealed) -> None:
    """Insert or replace one record (in the caller's transaction)."""
    conn.execute(fleet_sealed.delete().where(fleet_sealed.c.cert_id == rec.cert_id))
    conn.execute(fleet_sealed.insert().values(
        cert_id=rec.cert_id, site=rec.site, kek_id=rec.kek_id, nonce=rec.nonce,
        ciphertext=rec.ciphertext, sealed_at=datetime.now(UTC)))


def load(conn: sa.Connection, cert_id: str) -> Sealed | None:
    r = conn.execute(sa.select(fleet_sealed).where(fleet_sealed.c.cert_id == cert_id)).first()
    return _row(r) if r is not None else None


def load_many(conn: sa.Connection, cert_ids: Iterable[str]) -> dict[str, Sealed]:
    """Records by certificate id (one query per 1,000 ids); missing ids are left out."""
    ids = sorted(set(cert_ids))
    out: dict[str, Sealed] = {}
    for i in range(0, len(ids), 1000):
        rows = conn.execute(sa.select(fleet_sealed)
                            .where(fleet_sealed.c.cert_id.in_(ids[i:i + 1000])))
        out.update((rec.cert_id, rec) for rec in map(_row, rows))
    return out


def rotate(engine: sa.Engine, ring: Keyring, *, batch: int = 200) -> int:
    """Re-seal every record not sealed by `ring.current`; returns how many were re-sealed.

    Each batch is one transaction whose rows are locked (FOR UPDATE on PostgreSQL), so two
    rotations or a concurrent writer never lose a record; a record another writer re-sealed in
    between is simply read under its new key id. A record no KEK of the ring opens stops the
    rotation with SealError (nothing in that batch is changed).
    """
    done = 0
    while True:
        with engine.begin() as conn:
            q = (sa.select(fleet_sealed).where(fleet_sealed.c.kek_id != ring.current.id)
                 .order_by(fleet_sealed.c.cert_id).limit(batch))
            if conn.dialect.name == "postgresql":
                q = q.with_for_update()
            rows = [_row(r) for r in conn.execute(q)]
            if not rows:
                return done
            for rec in rows:
                plain = open_record(ring, rec)
                store(conn, seal(ring, rec.cert_id, rec.site, plain))
            done += len(rows)


def kek_ids(engine: sa.Engine) -> dict[str, int]:
    """How many records each key id sealed (a rotation is finished when only one is left)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(fleet_sealed.c.kek_id, sa.func.count())
                            .group_by(fleet_sealed.c.kek_id))
        return {str(k): int(n) for k, n in rows}


def seal_many(conn: sa.Connection, ring: Keyring,
              items: Iterable[tuple[str, str, Plain]]) -> int:
    """Seal and store many records (insert or replace), 1,000 per statement."""
    recs = [seal(ring, cert_id, site, plain) for cert_id, site, plain in items]
    now = datetime.now(UTC)
    for i in range(0, len(recs), 1000):
        part = recs[i:i + 1000]
        conn.execute(fleet_sealed.delete().where(
            fleet_sealed.c.cert_id.in_([r.cert_id for r in part])))
        conn.execute(fleet_sealed.insert(), [
            {"cert_id": r.cert_id, "site": r.site, "kek_id": r.kek_id, "nonce": r.nonce,
             "ciphertext": r.ciphertext, "sealed_at": now} for r in part])
    return len(recs)
