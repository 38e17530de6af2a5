"""RFC 8659 / RFC 8657 evaluation (pure), the gate's verdicts, the `caa` check, and the engine
sending no order to a CA that CAA forbids."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_engine_kit import World, make_world

from certfailover.caa import CAARecord, evaluate, parse_issue, relevant
from certfailover.caacheck import CAACheck, CAAGate, CAASettings, GateSite, SiteVerdict
from certfailover.checks import CheckContext
from certfailover.model import CertState, Severity

LE = ("letsencrypt.org",)
ACCT = "https://acme.example/acct/1"


def ok(records: list[CAARecord], name: str = "www.example.com", *, ids: tuple[str, ...] = LE,
       account: str | None = ACCT, method: str = "http-01") -> bool:
    return evaluate(name, "example.com", records, identities=ids, account_uri=account,
                    method=method).allowed


def issue(value: str, tag: str = "issue", flags: int = 0) -> CAARecord:
    return CAARecord(flags, tag, value)


def test_no_records_or_no_issue_tags_do_not_restrict() -> None:
    assert ok([])
    assert ok([issue("mailto:sec@example.com", "iodef")])
    assert ok([issue("x", "futuretag")])  # unknown, not critical: ignored


def test_issue_names_the_permitted_cas() -> None:
    assert ok([issue("letsencrypt.org")])
    assert ok([issue("pki.goog"), issue(" LetsEncrypt.org ")])
    assert not ok([issue("pki.goog")])
    assert not ok([issue(";")])  # nobody may issue
    assert not ok([issue("pki.goog")], ids=())


def test_unknown_critical_tag_forbids_everyone() -> None:
    v = evaluate("www.example.com", "example.com", [issue("letsencrypt.org"),
                                                    issue("x", "tbs", flags=128)],
                 identities=LE, account_uri=ACCT, method="http-01")
    assert not v.allowed and "critical tag 'tbs'" in v.reason
    assert ok([issue("letsencrypt.org"), issue("mailto:x@example.com", "iodef", flags=128)])


def test_issuewild_governs_wildcards_and_only_wildcards() -> None:
    recs = [issue("pki.goog"), issue("letsencrypt.org", "issuewild")]
    assert ok(recs, "*.example.com") and not ok(recs, "www.example.com")
    recs = [issue("letsencrypt.org"), issue(";", "issuewild")]
    assert ok(recs, "www.example.com") and not ok(recs, "*.example.com")
    assert ok([issue("letsencrypt.org")], "*.example.com")  # no issuewild: issue applies


def test_rfc8657_accounturi_and_validationmethods() -> None:
    assert ok([issue(f"letsencrypt.org; accounturi={ACCT}")])
    v = evaluate("a.example.com", "example.com",
                 [issue("letsencrypt.org; accounturi=https://acme.example/acct/2")],
                 identities=LE, account_uri=ACCT, method="http-01")
    assert not v.allowed and "requires account https://acme.example/acct/2" in v.reason
    assert not ok([issue(f"letsencrypt.org; accounturi={ACCT}")], account=None)
    assert ok([issue("letsencrypt.org; validationmethods=dns-01,http-01")])
    assert not ok([issue("letsencrypt.org; validationmethods=dns-01")])
    assert ok([issue("letsencrypt.org; validationmethods=dns-01")], method="dns-01")
    # one record per account: any matching record permits
    assert ok([issue("letsencrypt.org; accounturi=https://acme.example/acct/9"),
               issue(f"letsencrypt.org; accounturi={ACCT}; validationmethods=http-01")])
    assert ok([issue("letsencrypt.org; unknownparam=1")])


def test_parse_issue() -> None:
    assert parse_issue("ca.example.net; account=230123") == ("ca.example.net", {"account": "230123"})
    assert parse_issue(";") == ("", {})
    assert parse_issue("ca..example") is None
    assert parse_issue("ca.example; novalue") is None
    assert not ok([issue("letsencrypt.org; broken")])  # malformed: authorizes nobody


def test_tree_climbing_stops_at_the_first_non_empty_set() -> None:
    zone = {"example.com": [issue("pki.goog")], "shop.example.com": [issue("letsencrypt.org")]}
    asked: list[str] = []

    def query(name: str) -> list[CAARecord]:
        asked.append(name)
        return zone.get(name, [])

    assert relevant("a.b.shop.example.com", query) == ("shop.example.com", [issue("letsencrypt.org")])
    assert asked == ["a.b.shop.example.com", "b.shop.example.com", "shop.example.com"]
    assert relevant("*.example.com", query)[0] == "example.com"
    assert relevant("www.other.org", query) == ("", [])


def _gate(zone: dict[str, list[CAARecord]], ids: dict[str, tuple[str, ...]]) -> CAAGate:
    gate = CAAGate(CAASettings(identities=ids), [GateSite("www", ("www.example.test",),
                                                          ("a", "b"), "http-01")], {})
    for ca in ("a", "b"):
        gate._verdicts[("www", ca)] = gate.check(gate.sites[0], ca, lambda n: zone.get(n, []))
    return gate


def test_gate_and_check_name_the_forbidden_ca(world: World) -> None:
    world.tick()
    b = next(c for c in world.certs() if c.ca == "b")
    gate = _gate({"example.test": [issue("ca-a.test")]}, {"a": ("ca-a.test",), "b": ("ca-b.test",)})
    assert gate.forbids("www", "a") is None
    why = gate.forbids("www", "b")
    assert why is not None and "CA b may not issue for www" in why and "ca-b.test" in why
    mat = world.engine.material(b)
    found = CAACheck(gate).run(mat, CheckContext(now=world.clock(), domains=("www.example.test",),
                                                 trust=()))
    assert [(f.check, f.severity) for f in found] == [("caa", Severity.WARN)]
    assert "CAA forbids CA b" in found[0].reason


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def test_no_order_goes_to_a_ca_that_caa_forbids(world: World) -> None:
    forbidden = SiteVerdict("www", "b", False, "CAA at example.test does not permit CA b")
    world.engine.caa = lambda site, ca: forbidden.reason if (site, ca) == ("www", "b") else None
    world.tick()
    assert [len(world.cas[ca].orders) for ca in ("a", "b", "c")] == [1, 0, 1]
    assert {c.ca for c in world.certs() if c.state is CertState.STANDBY} == {"c"}
    for _ in range(3):  # later ticks: still never b
        world.tick(after=timedelta(hours=1))
    assert world.cas["b"].orders == []


def test_check_and_status_name_the_forbidden_ca(world: World, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`check` (exit 1, WARNING) and `status` name CA b; DNS is replaced by a zone in memory
    (the same lookups run through challtestsrv in tests/integration/test_caa_challtestsrv.py)."""
    import json

    from certfailover import caa
    from certfailover.cli.main import main
    world.tick()
    assert {c.ca for c in world.certs()} == {"a", "b"}
    cfg = world.engine.config.path
    cfg.write_text(cfg.read_text() + '\n[caa]\nresolver = ["127.0.0.1:9"]\n'
                   'identities = { a = ["ca-a.test"], b = ["ca-b.test"], c = ["ca-c.test"] }\n')
    zone = {"example.test": [issue("ca-a.test"), issue("ca-c.test")]}
    monkeypatch.setattr(caa, "lookup", lambda _resolver, name, _timeout: zone.get(name, []))
    code = main(["--config", str(cfg), "--json", "check"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["state"] == "WARNING", out
    assert "CAA forbids CA b" in out["summary"] and "ca-b.test" in out["summary"]
    assert main(["--config", str(cfg), "--json", "status"]) == 0
    assert "CAA forbids CA b" in capsys.readouterr().out


def test_the_daemon_alerts_a_forbidden_ca_at_start(world: World,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from certfailover import caa
    from certfailover import config as config_mod
    from certfailover.model import Event
    from certfailover.wiring import build, build_daemon
    cfg = world.engine.config.path
    cfg.write_text(cfg.read_text() + '\n[caa]\nresolver = ["127.0.0.1:9"]\ninterval = "1h"\n'
                   'identities = { a = ["ca-a.test"], b = ["ca-b.test"], c = ["ca-c.test"] }\n')
    zone = {"www.example.test": [issue("ca-a.test; validationmethods=dns-01"), issue("ca-b.test")]}
    monkeypatch.setattr(caa, "lookup", lambda _resolver, name, _timeout: zone.get(name, []))
    config = config_mod.load(cfg, env={})
    alerts: list[Event] = []
    rt = build(config, notify=alerts.append)
    assert rt.engine.caa is not None and rt.engine.caa("www", "a") is not None
    d = build_daemon(rt.engine, config, interval=60, scheduled=False)
    d.close()
    said = sorted((e.data["ca"], e.kind) for e in rt.engine.db.events(site="www"))
    assert said == [("a", "caa_forbids"), ("c", "caa_forbids")]
    assert "not http-01" in next(e.message for e in rt.engine.db.events(site="www")
                                 if e.data["ca"] == "a")


def test_identities_from_the_acme_directory() -> None:
    import json
    from http.server import BaseHTTPRequestHandler

    from certfailover.caa import CAALookupError
    from certfailover_lab.httpd import serving

    class Directory(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            meta = {"caaIdentities": ["LetsEncrypt.org"]} if self.path == "/le" else {}
            body = json.dumps({"newNonce": "x", "meta": meta}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Directory) as srv:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        gate = CAAGate(CAASettings(identities={"conf": ("ca.example",)}), [],
                       {"le": (f"{base}/le", True), "bare": (f"{base}/bare", True)})
        assert gate.identities("le") == ("letsencrypt.org",)
        assert gate.identities("conf") == ("ca.example",)  # config wins, no fetch
        with pytest.raises(CAALookupError, match=r"lists no caaIdentities; set \[caa\] identities.bare"):
            gate.identities("bare")
        site = GateSite("www", ("www.example.test",), ("bare",), "http-01")
        assert gate.check(site, "bare", lambda _n: []).allowed is True  # no CAA: no identity needed
        v = gate.check(site, "bare", lambda n: [issue("ca.example")] if n == "example.test" else [])
        assert v.allowed is None and "restricts issuance" in v.reason and "caaIdentities" in v.reason


def test_a_pass_is_bounded_in_all_and_asks_a_dead_directory_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver that answers slowly and a directory that answers garbage: the pass stops at
    its budget (what was not reached keeps its verdict), each failed name and each failed
    directory is asked once per pass, and garbage JSON is a lookup error, not a crash."""
    import json
    import time
    from http.server import BaseHTTPRequestHandler

    from certfailover import caa
    from certfailover_lab.httpd import serving

    directory_gets: list[str] = []

    class Garbage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            directory_gets.append(self.path)
            body = json.dumps(["not", "a", "directory"]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    asked: list[str] = []

    def slow(_resolver: object, name: str, _timeout: float) -> list[CAARecord]:
        asked.append(name)
        time.sleep(0.05)
        if name == "example.test":
            raise caa.CAALookupError(f"CAA lookup of {name} failed: timed out")
        return []
    monkeypatch.setattr(caa, "lookup", slow)
    sites = [GateSite(f"s{i}", (f"s{i}.example.test",), ("g",), "http-01") for i in range(40)]
    with serving(Garbage) as srv:
        gate = CAAGate(CAASettings(), sites,
                       {"g": (f"http://127.0.0.1:{srv.server_address[1]}/dir", True)})
        t0 = time.monotonic()
        got = gate.refresh(budget=0.5)
        took = time.monotonic() - t0
    assert took < 0.5 + 0.2, took
    assert 0 < len(got) < len(sites), "stopped at the budget"
    assert directory_gets == ["/dir"], "a failed directory is asked once per pass"
    assert asked.count("example.test") == 1, "a failed name is asked once per pass"
    assert all(v.allowed is None for v in got), [v.reason for v in got]
    assert gate.verdict("s39", "g") is None, "not reached: no verdict yet"


def test_resolver_addresses_each_keep_their_port() -> None:
    """One reader of name-server addresses (names.nameserver) for CAA and DNS-01: IPv6 with
    brackets, each server its own port, a host name or a bad port refused naming the text."""
    from certfailover.caa import resolver_for
    from certfailover.names import nameserver

    assert nameserver("192.0.2.53") == ("192.0.2.53", 53)
    assert nameserver("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert nameserver("2001:db8::53") == ("2001:db8::53", 53)
    assert nameserver("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    for bad, words in (("ns.example:53", "not an IP address"), ("192.0.2.1:0", "not a port"),
                       ("[::1]x", "[addr]:port")):
        with pytest.raises(ValueError, match=re.escape(words)):
            nameserver(bad)
    res = resolver_for(["127.0.0.1:53", "127.0.0.2:5353", "[::1]:8053"], 2.0)
    assert [(ns.address, ns.port) for ns in res.nameservers] == [  # type: ignore[union-attr]
        ("127.0.0.1", 53), ("127.0.0.2", 5353), ("::1", 8053)]
