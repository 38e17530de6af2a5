"""RFC 6962 section 2.1 Merkle tree hashing, a compact (collapsed) tree, and RFC 9162 section
2.1.4.2 consistency-proof verification.

The watch keeps the compact tree of every log it reads (one hash per set bit of the tree size):
each entry it downloads is added, and the root it computes must equal the root the log signed,
so a log cannot show the watch an entry list other than the one it committed to. A consistency
proof between the stored signed head and a new one proves the log only appended.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["EMPTY_ROOT", "CompactTree", "leaf_hash", "node_hash", "verify_consistency"]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class CompactTree:
    """The roots of the perfect subtrees that make a tree of `size` leaves, left to right."""

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != size.bit_count():
            raise ValueError(f"a compact tree of size {size} has {size.bit_count()} nodes, "
                             f"not {len(nodes)}")
        self.size = size
        self.nodes = list(nodes)

    def add(self, leaf_digest: bytes) -> None:
        self.nodes.append(leaf_digest)
        s = self.size
        while s & 1:
            right = self.nodes.pop()
            self.nodes[-1] = node_hash(self.nodes[-1], right)
            s >>= 1
        self.size += 1

    def add_subtree(self, digest: bytes, height: int) -> None:
        """Append a perfect subtree of 2^height leaves whose root is `digest` (the tree's size
        must be a multiple of 2^height: the subtree is aligned, a node of the larger tree)."""
        if self.size & ((1 << height) - 1):
            raise ValueError(f"a subtree of 2^{height} leaves cannot follow {self.size} leaves")
        self.nodes.append(digest)
        s = self.size >> height
        while s & 1:
            right = self.nodes.pop()
            self.nodes[-1] = node_hash(self.nodes[-1], right)
            s >>= 1
        self.size += 1 << height

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1]
        for n in reversed(self.nodes[:-1]):
            h = node_hash(n, h)
        return h

    def copy(self) -> CompactTree:
        return CompactTree(self.size, self.nodes)


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does `proof` show the tree of `second` leaves with `second_root` extends
    the tree of `first` leaves with `first_root`?"""
    if first < 0 or second < first:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof  # every tree extends the empty tree
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
