"""CAA through real DNS: pebble-challtestsrv serves the records (`/add-caa`, `/clear-caa`,
`/set-cname`), dnspython resolves them, the gate judges each CA of a site: RFC 8659 tree
climbing, CNAME, issue vs issuewild, RFC 8657 accounturi and validationmethods. (A critical
unknown tag cannot be served by challtestsrv, which always sends flags 0: see
tests/unit/test_caa.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from certfailover.caacheck import CAAGate, CAASettings, GateSite
from certfailover_lab.pebble import ChallTestSrv

pytestmark = pytest.mark.integration
ACCT = "https://ca-a.test/acct/7"


class Zone:
    def __init__(self, srv: ChallTestSrv) -> None:
        self.srv = srv
        self.base = f"caa-{uuid.uuid4().hex[:8]}.example.test"  # no clash with other tests
        self.hosts: list[str] = []
        self.cnames: list[str] = []

    def post(self, path: str, body: dict[str, object]) -> None:
        requests.post(self.srv.management_url + path, json=body, timeout=5).raise_for_status()

    def caa(self, host: str, *policies: tuple[str, str]) -> None:
        self.hosts.append(host)
        self.post("/add-caa", {"host": host, "policies": [{"tag": t, "value": v}
                                                         for t, v in policies]})

    def clear(self, host: str) -> None:
        self.post("/clear-caa", {"host": host})

    def cname(self, host: str, target: str) -> None:
        self.cnames.append(host)
        self.post("/set-cname", {"host": host, "target": target})

    def close(self) -> None:
        for h in self.hosts:
            self.clear(h)
        for h in self.cnames:
            self.post("/clear-cname", {"host": h})


@pytest.fixture
def zone(challtestsrv: ChallTestSrv) -> Iterator[Zone]:
    z = Zone(challtestsrv)
    try:
        yield z
    finally:
        z.close()


def verdicts(zone: Zone, domains: tuple[str, ...], *, method: str = "http-01") -> dict[str, str | None]:
    gate = CAAGate(CAASettings(resolver=(zone.srv.dns_address,), timeout=5,
                               identities={"a": ("ca-a.test",), "b": ("ca-b.test",)},
                               accounts={"a": ACCT}),
                   [GateSite("shop", domains, ("a", "b"), method)], {})
    gate.refresh()
    return {ca: gate.forbids("shop", ca) for ca in ("a", "b")}


def test_no_caa_permits_every_ca(zone: Zone) -> None:
    assert verdicts(zone, (f"www.{zone.base}",)) == {"a": None, "b": None}


def test_tree_climbing_finds_the_parents_records(zone: Zone) -> None:
    zone.caa(zone.base, ("issue", "ca-a.test"))
    v = verdicts(zone, (f"deep.www.{zone.base}",))
    assert v["a"] is None
    assert v["b"] is not None and f"CAA at {zone.base}" in v["b"] and "ca-b.test" in v["b"]
    zone.caa(f"www.{zone.base}", ("issue", "ca-b.test"))  # a closer set wins
    v = verdicts(zone, (f"deep.www.{zone.base}",))
    assert v["a"] is not None and v["b"] is None
    zone.clear(f"www.{zone.base}")
    zone.clear(zone.base)
    assert verdicts(zone, (f"deep.www.{zone.base}",)) == {"a": None, "b": None}


def test_cname_target_records_apply_and_an_empty_target_climbs_from_the_alias(zone: Zone) -> None:
    alias, target = f"www.{zone.base}", f"cdn-{zone.base}"
    zone.cname(alias, target)
    zone.caa(target, ("issue", "ca-b.test"))
    zone.caa(zone.base, ("issue", "ca-a.test"))
    v = verdicts(zone, (alias,))
    assert v["b"] is None and v["a"] is not None and target in v["a"]  # the target's records
    zone.clear(target)  # target has none: climb from the alias's parent (zone.base)
    v = verdicts(zone, (alias,))
    assert v["a"] is None and v["b"] is not None and zone.base in v["b"]


def test_issuewild_for_the_wildcard_name_only(zone: Zone) -> None:
    zone.caa(zone.base, ("issue", "ca-a.test"), ("issue", "ca-b.test"), ("issuewild", "ca-b.test"))
    v = verdicts(zone, (zone.base, f"*.{zone.base}"))
    assert v["b"] is None
    assert v["a"] is not None and f"*.{zone.base}" in v["a"] and "issuewild" in v["a"]


def test_issue_semicolon_forbids_everyone(zone: Zone) -> None:
    zone.caa(zone.base, ("issue", ";"))
    v = verdicts(zone, (zone.base,))
    assert v["a"] is not None and v["b"] is not None


def test_rfc8657_account_and_method(zone: Zone) -> None:
    zone.caa(zone.base, ("issue", f"ca-a.test; accounturi={ACCT}"),
             ("issue", "ca-b.test; accounturi=https://ca-b.test/acct/99"))
    v = verdicts(zone, (zone.base,))
    assert v["a"] is None
    assert v["b"] is not None and "requires account https://ca-b.test/acct/99" in v["b"]
    zone.clear(zone.base)
    zone.caa(zone.base, ("issue", "ca-a.test; validationmethods=dns-01"), ("issue", "ca-b.test"))
    v = verdicts(zone, (zone.base,))
    assert v["a"] is not None and "not http-01" in v["a"] and v["b"] is None
    assert verdicts(zone, (zone.base,), method="dns-01")["a"] is None


def test_an_unreachable_resolver_is_unknown_not_allowed(zone: Zone) -> None:
    from certfailover_lab.ports import free_udp_tcp_port
    gate = CAAGate(CAASettings(resolver=(f"127.0.0.1:{free_udp_tcp_port()}",), timeout=0.5,
                               identities={"a": ("ca-a.test",)}),
                   [GateSite("shop", (zone.base,), ("a",), "http-01")], {})
    (v,) = gate.refresh()
    assert v.allowed is None and "failed" in v.reason and gate.forbids("shop", "a") is None
