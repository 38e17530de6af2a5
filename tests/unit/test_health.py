from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from certfailover import keys
from certfailover.checks import CertMaterial, CheckContext
from certfailover.health import (
    BundleStores,
    DistrustCheck,
    KeyCheck,
    NameCheck,
    StoreTrustCheck,
    ValidityCheck,
    local_checks,
    run_checks,
)
from certfailover.model import Finding, Severity, Signal
from certfailover.names import name_matches
from certfailover.sitetrust import PemBundle, TrustAnchor
from certfailover.testing import pki
from certfailover.testing.pki import material

NOW = dt.datetime.now(dt.UTC)


def ctx(trust: tuple[TrustAnchor, ...] = (), **kw) -> CheckContext:  # type: ignore[no-untyped-def]
    return CheckContext(now=kw.pop("now", NOW), domains=("www.example.test",), trust=trust, **kw)


def test_validity_states() -> None:
    root = pki.make_root("R")
    future, _ = pki.make_leaf(root, ["www.example.test"], not_before=NOW + dt.timedelta(days=1))
    expired, _ = pki.make_leaf(root, ["www.example.test"], not_before=NOW - dt.timedelta(days=91),
                               not_after=NOW - dt.timedelta(days=1))
    late, _ = pki.make_leaf(root, ["www.example.test"], not_before=NOW - dt.timedelta(days=80),
                            not_after=NOW + dt.timedelta(days=10))
    fresh, _ = pki.make_leaf(root, ["www.example.test"])
    check = ValidityCheck()
    assert check.run(material(future), ctx())[0].severity is Severity.FAIL
    assert "expired" in check.run(material(expired), ctx())[0].reason
    late_f = check.run(material(late), ctx())[0]
    assert late_f.severity is Severity.WARN and late_f.renew and late_f.flagged
    assert not late_f.next_due, "inside the window: expiry is due at the switch margin"
    fresh_f = check.run(material(fresh), ctx())[0]
    assert fresh_f.severity is Severity.OK and not fresh_f.flagged
    renew_at = fresh.not_valid_after_utc - (fresh.not_valid_after_utc
                                            - fresh.not_valid_before_utc) / 3
    assert fresh_f.next_due == {Signal.EXPIRY: renew_at}
    half = check.run(material(fresh), ctx(renew_fraction=0.5))[0]
    assert half.next_due[Signal.EXPIRY] < renew_at, "a site's renew_fraction is honoured"


def test_names_and_wildcards() -> None:
    assert name_matches("*.example.test", "www.example.test")
    assert not name_matches("*.example.test", "a.b.example.test")
    assert not name_matches("*.example.test", "example.test")
    root = pki.make_root("R")
    leaf, _ = pki.make_leaf(root, ["other.example.test"])
    f = NameCheck().run(material(leaf), ctx())[0]
    assert f.severity is Severity.FAIL and f.detail["missing"] == ["www.example.test"]


def test_chain_check_is_due_again_when_a_path_intermediate_expires(tmp_path: Path) -> None:
    """A cross-sign that ends before the leaf: the chain check (and with it the engine's chain
    judge) is due just after it ends, not at the next routine expiry check."""
    root, old_root = pki.make_root("New Root"), pki.make_root("Old Root")
    inter = pki.make_intermediate(root, "Issuing CA")
    cross = pki.make_intermediate(old_root, "Issuing CA", key=inter.key, days=10)  # ends first
    leaf, _ = pki.make_leaf(inter, ["www.example.test"])
    bundle = pki.write_bundle(tmp_path / "roots.pem", root, old_root)
    m = material(leaf, (inter.cert, cross.cert))
    (f,) = StoreTrustCheck().run(m, ctx((PemBundle(bundle),)))
    assert f.severity is Severity.OK
    end = cross.cert.not_valid_after_utc
    assert end < leaf.not_valid_after_utc < inter.cert.not_valid_after_utc
    assert f.next_due == {Signal.EXPIRY: end + dt.timedelta(seconds=1)}
    (after,) = StoreTrustCheck().run(m, ctx((PemBundle(bundle),), now=end + dt.timedelta(days=1)))
    assert after.next_due == {Signal.EXPIRY: inter.cert.not_valid_after_utc
                              + dt.timedelta(seconds=1)}, "the next path end after that"


def test_chain_check_follows_bundle_changes_without_restart(tmp_path: Path) -> None:
    root_a, root_b = pki.make_root("Root A"), pki.make_root("Root B")
    inter = pki.make_intermediate(root_a, "Int A")
    leaf, _ = pki.make_leaf(inter, ["www.example.test"])
    bundle = pki.write_bundle(tmp_path / "clients.pem", root_a, root_b)
    check = StoreTrustCheck(BundleStores())
    assert check.run(material(leaf, [inter.cert]), ctx((PemBundle(bundle),)))[0].severity is Severity.OK
    pki.write_bundle(bundle, root_b)  # the root program drops root A
    os.utime(bundle, ns=(bundle.stat().st_atime_ns, bundle.stat().st_mtime_ns + 1_000_000))
    f = check.run(material(leaf, [inter.cert]), ctx((PemBundle(bundle),)))[0]
    assert f.severity is Severity.FAIL and "does not validate" in f.reason
    # a missing intermediate fails too
    pki.write_bundle(bundle, root_a)
    os.utime(bundle, ns=(bundle.stat().st_atime_ns, bundle.stat().st_mtime_ns + 2_000_000))
    assert check.run(material(leaf, []), ctx((PemBundle(bundle),)))[0].severity is Severity.FAIL
    # an unreadable bundle is a named failure, not a crash
    f = check.run(material(leaf, [inter.cert]), ctx((PemBundle(tmp_path / "gone.pem"),)))[0]
    assert f.severity is Severity.FAIL and "gone.pem" in f.reason


def test_key_mismatch_and_operator_distrust() -> None:
    root = pki.make_root("R")
    leaf, _ = pki.make_leaf(root, ["www.example.test"])
    assert KeyCheck().run(material(leaf, key_matches=False), ctx())[0].severity is Severity.FAIL
    assert DistrustCheck().run(material(leaf), ctx(distrusted_cas=frozenset({"b"}))) == []
    f = DistrustCheck().run(material(leaf), ctx(distrusted_cas=frozenset({"a"})))[0]
    assert f.severity is Severity.FAIL


def test_run_checks_turns_a_crashing_check_into_unknown() -> None:
    class Boom:
        name = "boom"

        def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
            raise RuntimeError("kaput")

    root = pki.make_root("R")
    leaf, _ = pki.make_leaf(root, ["www.example.test"])
    h = run_checks(material(leaf), ctx(), [*local_checks(), Boom()])
    assert h.severity is Severity.WARN and h.healthy
    assert any(f.check == "boom" and "kaput" in f.reason for f in h.findings)


def test_keys_are_fresh_and_typed() -> None:
    a, b = keys.generate("ec-p256"), keys.generate("ec-p256")
    assert not keys.same_public_key(a.public_key(), b.public_key())
    assert keys.key_type_of(keys.generate("rsa-2048").public_key()) == "rsa-2048"
