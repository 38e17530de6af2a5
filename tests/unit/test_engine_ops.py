"""Engine events for operators (distrust_forecast) and status details (trust, independence)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization

from certfailover import config as config_mod
from certfailover import keys
from certfailover.checks import CertMaterial, CheckContext
from certfailover.model import Cert, Event, Finding, Health, RevocationMode, Severity, Signal
from certfailover.status import ProgramTrust, independence, program_trust, site_status
from certfailover.testing import pki
from certfailover.wiring import Runtime, build

PEM = serialization.Encoding.PEM
NOW = datetime.now(UTC).replace(microsecond=0)


def runtime(tmp_path: Path, roots: list[pki.Authority], events: list[Event]) -> Runtime:
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots)
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "store")},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}"} for ca in ("a", "b")],
        "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                  "trust": [str(bundle)]}],
    }
    cfg = config_mod.parse(raw, file="t.toml", base=tmp_path, env={})
    return build(cfg, clock=lambda: NOW, notify=events.append)


def add(rt: Runtime, issuer: pki.Authority, ca: str) -> Cert:
    leaf, key = pki.make_leaf(issuer, ["www.example.test"])
    chain = b"".join(c.public_bytes(PEM) for c in issuer.chain())
    return rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(PEM),
                                chain_pem=chain if issuer.issuer is not None else b"",
                                key_pem=keys.key_pem(key), source=ca)


class ForecastCheck:
    """Stands in for the trust check: mozilla stops trusting CA a's root on `date`."""

    name: ClassVar[str] = "trust"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.TRUST: findings}
    remote: ClassVar[bool] = False
    date = NOW + timedelta(days=30)

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        if material.cert.ca != "a":
            return [Finding("trust", Severity.OK, "trusted by mozilla", program="mozilla")]
        return [Finding("trust", Severity.WARN, "mozilla forecast", program="mozilla",
                        forecast=self.date)]


def test_distrust_forecast_is_announced_once(tmp_path: Path) -> None:
    events: list[Event] = []
    root_a, root_b = pki.make_root("Root A"), pki.make_root("Root B")
    rt = runtime(tmp_path, [root_a, root_b], events)
    rt.engine.checks = [c for c in rt.engine.checks if c.name != "trust"] + [ForecastCheck()]
    a = add(rt, root_a, "a")
    add(rt, root_b, "b")
    site = rt.config.site("www")
    rt.engine.check_site(site)
    rt.engine.check_site(site)
    rt.engine.check_site(site, run={a.id: frozenset({"trust"})})
    fc = [e for e in events if e.kind == "distrust_forecast"]
    assert len(fc) == 1, "announced when it appears, not at every check"
    assert fc[0].data == {"cert": a.id, "ca": "a", "program": "mozilla",
                          "date": ForecastCheck.date.isoformat()}
    assert [e.kind for e in rt.db.events(site="www")] == ["distrust_forecast"]


def test_status_shows_program_trust_and_shared_roots(tmp_path: Path) -> None:
    root = pki.make_root("Shared Root")
    inter_a = pki.make_intermediate(root, "Int A")
    inter_b = pki.make_intermediate(root, "Int B")
    other = pki.make_root("Other Root")
    events: list[Event] = []
    rt = runtime(tmp_path, [root, other], events)
    a, b, c = add(rt, inter_a, "a"), add(rt, inter_b, "b"), add(rt, other, "b")
    site = rt.config.site("www")
    assert independence(rt.vault, site, a, b) == ["shares root CN=Shared Root with the active"]
    assert independence(rt.vault, site, a, c) == []
    rt.engine.tick()
    st = site_status(rt.db, site, NOW, vault=rt.vault)
    rows = {r["id"]: r for r in st["certs"]}
    active = st["active"]
    assert rows[active]["independence"] == []
    assert any("shares root CN=Shared Root" in x for r in rows.values() for x in r["independence"])

    until = datetime(2027, 1, 1, tzinfo=UTC)
    h = Health("x", (Finding("trust", Severity.OK, "", program="mozilla"),
                     Finding("trust", Severity.FAIL, "", program="chrome"),
                     Finding("trust", Severity.WARN, "", program="apple", forecast=until),
                     Finding("trust", Severity.WARN, "", program="microsoft", known=False),
                     Finding("ca_issuance", Severity.WARN, "", cannot_issue_for="java"),
                     Finding("validity", Severity.OK, "", {})))
    trust = program_trust(h)
    assert {p: str(t) for p, t in trust.items()} == {
        "mozilla": "trusted", "chrome": "not trusted", "apple": "until 2027-01-01",
        "microsoft": "no data"}
    assert trust["apple"] == ProgramTrust(True, until) and trust["microsoft"].trusted is None


class FlakyCheck:
    """Stands in for a remote check whose answer comes and goes; records what it was told."""

    name: ClassVar[str] = "flaky"
    findings: ClassVar[frozenset[str]] = frozenset({name})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.CRL: findings}
    remote: ClassVar[bool] = True

    def __init__(self) -> None:
        self.known = False
        self.seen: list[CheckContext] = []

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        self.seen.append(ctx)
        return [Finding(self.name, Severity.WARN if not self.known else Severity.OK, "?",
                        known=self.known)]


def test_unknown_since_is_stored_and_handed_to_the_checks(tmp_path: Path) -> None:
    """The clock of an unknown streak lives in the store: it survives a new engine (a
    restart), keeps its start while the streak lasts and ends with a known answer."""
    clock = {"now": NOW}
    root = pki.make_root("Root U")
    rt = runtime(tmp_path, [root], [])
    flaky = FlakyCheck()
    rt.engine.checks = [k for k in rt.engine.checks if not k.remote] + [flaky]
    rt.engine.clock = lambda: clock["now"]
    a = add(rt, root, "a")
    site = rt.config.site("www")
    rt.engine.check_site(site)
    assert rt.db.unknown_since("www") == {(a.id, "flaky"): NOW}
    assert flaky.seen[-1].unknown_since == {}
    assert flaky.seen[-1].revocation is RevocationMode.SOFT_FAIL
    clock["now"] = NOW + timedelta(hours=30)
    again = build(rt.config, clock=lambda: clock["now"])  # a restarted daemon's engine
    again.engine.checks = [k for k in again.engine.checks if not k.remote] + [flaky]
    again.engine.check_site(site, run={a.id: frozenset({"flaky"})})
    assert flaky.seen[-1].unknown_since == {(a.id, "flaky"): NOW}, "handed to the check"
    assert rt.db.unknown_since("www") == {(a.id, "flaky"): NOW}, "the streak keeps its start"
    flaky.known = True
    again.engine.check_site(site, run={a.id: frozenset({"flaky"})})
    assert rt.db.unknown_since("www") == {}, "a known answer ends the streak"
    assert [f.check for f in rt.db.findings(a.id)].count("flaky") == 1


def test_the_revocation_setting_reaches_the_checks_as_its_enum(tmp_path: Path) -> None:
    root = pki.make_root("Root H")
    rt = runtime(tmp_path, [root], [])
    site = dataclasses.replace(rt.config.site("www"), revocation=RevocationMode.HARD_FAIL)
    assert rt.engine.context(site).revocation is RevocationMode.HARD_FAIL
