"""The few RFC 6962 TLS-presentation-language structures a CT monitor reads, decoded by hand
with `struct` (no maintained Python library covers them): MerkleTreeLeaf, the certificate
chains in `extra_data`, the tree head signature input and the `digitally-signed` wrapper.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import CertFailoverError

__all__ = [
    "PRECERT_ENTRY",
    "X509_ENTRY",
    "DigitallySigned",
    "Leaf",
    "TLSDecodeError",
    "parse_chain",
    "parse_digitally_signed",
    "parse_leaf",
    "parse_precert_chain",
    "tree_head_input",
]

X509_ENTRY = 0
PRECERT_ENTRY = 1
SHA256 = 4
ECDSA = 3
RSA = 1


class TLSDecodeError(CertFailoverError):
    """A CT structure that does not decode."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise TLSDecodeError(f"truncated: wanted {n} bytes at offset {self.pos} of {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, len_bytes: int) -> bytes:
        return self.take(self.uint(len_bytes))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise TLSDecodeError(f"{len(self.data) - self.pos} trailing bytes")


@dataclass(frozen=True)
class Leaf:
    """A MerkleTreeLeaf's TimestampedEntry: `der` is the certificate (x509_entry) or the
    TBSCertificate (precert_entry)."""

    timestamp: int
    entry_type: int
    der: bytes
    issuer_key_hash: bytes = b""


def parse_leaf(data: bytes) -> Leaf:
    r = _Reader(data)
    version, leaf_type = r.uint(1), r.uint(1)
    if version != 0 or leaf_type != 0:
        raise TLSDecodeError(f"MerkleTreeLeaf version {version} type {leaf_type} is not v1 timestamped_entry")
    timestamp, entry_type = r.uint(8), r.uint(2)
    if entry_type == X509_ENTRY:
        leaf = Leaf(timestamp, entry_type, r.vector(3))
    elif entry_type == PRECERT_ENTRY:
        ikh = r.take(32)
        leaf = Leaf(timestamp, entry_type, r.vector(3), ikh)
    else:
        raise TLSDecodeError(f"unknown LogEntryType {entry_type}")
    r.vector(2)  # CtExtensions
    r.done()
    return leaf


def _certs(r: _Reader) -> list[bytes]:
    inner = _Reader(r.vector(3))
    out = []
    while inner.pos < len(inner.data):
        out.append(inner.vector(3))
    return out


def parse_chain(extra_data: bytes) -> list[bytes]:
    """extra_data of an x509_entry: the chain after the leaf."""
    r = _Reader(extra_data)
    chain = _certs(r)
    r.done()
    return chain


def parse_precert_chain(extra_data: bytes) -> tuple[bytes, list[bytes]]:
    """extra_data of a precert_entry: PrecertChainEntry (the precertificate, its chain)."""
    r = _Reader(extra_data)
    pre = r.vector(3)
    chain = _certs(r)
    r.done()
    return pre, chain


@dataclass(frozen=True)
class DigitallySigned:
    hash_alg: int
    sig_alg: int
    signature: bytes


def parse_digitally_signed(data: bytes) -> DigitallySigned:
    r = _Reader(data)
    out = DigitallySigned(r.uint(1), r.uint(1), r.vector(2))
    r.done()
    return out


def tree_head_input(timestamp: int, tree_size: int, root: bytes) -> bytes:
    """TreeHeadSignature (RFC 6962 3.5): v1, tree_hash, timestamp, tree_size, sha256_root_hash."""
    return struct.pack(">BBQQ", 0, 1, timestamp, tree_size) + root
