"""The watch's Merkle code (certfailover.ct.merkle) against the lab log's independent tree."""

from __future__ import annotations

import hashlib

import pytest

from certfailover.ct import merkle
from certfailover_lab.ctlog import CTLog


def _log(n: int) -> CTLog:
    log = CTLog()
    for i in range(n):
        log.add_chain([hashlib.sha256(str(i).encode()).digest() * 4])  # opaque bytes suffice
    return log


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert merkle.CompactTree().root().hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_rfc6962_known_root() -> None:
    # RFC 6962 test vector leaves (certificate-transparency reference tests): root of 8 leaves
    leaves = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                         "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
    t = merkle.CompactTree()
    for leaf in leaves:
        t.add(merkle.leaf_hash(leaf))
    assert t.root().hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_compact_tree_roots_match_the_lab_tree() -> None:
    log = _log(70)
    t = merkle.CompactTree()
    for n in range(1, 71):
        t.add(log._tree.leaves[n - 1])
        assert t.root() == log._tree.mth(0, n)


def test_every_consistency_proof_of_the_lab_log_verifies() -> None:
    log = _log(33)
    roots = [log._tree.mth(0, n) for n in range(34)]
    for second in range(1, 34):
        for first in range(1, second + 1):
            proof = log.consistency(first, second)
            assert merkle.verify_consistency(first, second, roots[first], roots[second], proof)


@pytest.mark.parametrize(("first", "second"), [(1, 2), (3, 7), (4, 8), (6, 33), (16, 33)])
def test_a_tampered_proof_or_root_fails(first: int, second: int) -> None:
    log = _log(33)
    r1, r2 = log._tree.mth(0, first), log._tree.mth(0, second)
    proof = log.consistency(first, second)
    bad = bytes(32)
    assert not merkle.verify_consistency(first, second, bad, r2, proof)
    assert not merkle.verify_consistency(first, second, r1, bad, proof)
    for i in range(len(proof)):
        forged = list(proof)
        forged[i] = bad
        assert not merkle.verify_consistency(first, second, r1, r2, forged)
    assert not merkle.verify_consistency(first, second, r1, r2, proof + [bad])
    if proof:
        assert not merkle.verify_consistency(first, second, r1, r2, proof[:-1])


def test_a_rewritten_history_is_not_consistent() -> None:
    log = _log(10)
    old_root = log._tree.mth(0, 10)
    log.rewrite(3, [b"another certificate"])
    log.add_chain([b"one more"])
    new_root = log._tree.mth(0, 11)
    assert not merkle.verify_consistency(10, 11, old_root, new_root, log.consistency(10, 11))


def test_compact_tree_rejects_a_wrong_node_count() -> None:
    with pytest.raises(ValueError, match="3 nodes"):
        merkle.CompactTree(7, [b"x"])
