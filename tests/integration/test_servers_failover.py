"""Failover, rollback, batching and dual key types against real nginx, apache2 and haproxy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certfailover.deploy import Activation, activate, pending_journals
from certfailover.errors import ServerConfigError
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import LiveChange, ServerAdapter, make_adapter
from certfailover.servers.base import Endpoint
from certfailover.store.vault import Vault
from certfailover_lab.webservers import LabCA, VHost, WebServer, chain_validator, start

pytestmark = pytest.mark.integration

KINDS = ("nginx", "apache", "haproxy")


@dataclass
class Lab:
    vault: Vault
    a: LabCA
    b: LabCA
    tmp: Path
    servers: list[WebServer] = field(default_factory=list)

    def start(self, kind: str, vhosts: Sequence[VHost]) -> WebServer:
        srv = start(kind, self.tmp / f"{kind}-{len(self.servers)}", vhosts)
        self.servers.append(srv)
        return srv


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    vault = Vault(tmp_path / "vault")
    vault.ensure()
    lab = Lab(vault, LabCA.create("ca-a"), LabCA.create("ca-b"), tmp_path)
    try:
        yield lab
    finally:
        for srv in lab.servers:
            srv.stop()


@dataclass
class CountingAdapter:
    """Delegates to a real adapter and records each apply() batch."""

    inner: ServerAdapter
    calls: list[list[str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def apply(self, changes: Sequence[LiveChange]) -> bool | None:
        self.calls.append([c.site for c in changes])
        return self.inner.apply(changes)


def served_sha(ep: Endpoint, sni: str, key_type: str | None = None) -> str:
    return leaf_sha256(served_chain(ep, sni, key_type=key_type)[0])


def one_site(lab: Lab, kind: str) -> tuple[WebServer, tuple[Path, str], tuple[Path, str]]:
    old = lab.a.issue_into(lab.vault, "www", ["www.test"])
    new = lab.b.issue_into(lab.vault, "www", ["www.test"])
    lab.vault.point_live("www", old[0])
    srv = lab.start(kind, [VHost("www.test", (lab.vault.live_path("www"),))])
    assert served_sha(srv.endpoint, "www.test") == old[1]
    return srv, old, new


@pytest.mark.parametrize("kind", KINDS)
def test_failover_serves_new_leaf(lab: Lab, kind: str) -> None:
    srv, old, new = one_site(lab, kind)
    validate = chain_validator([lab.a.root.cert, lab.b.root.cert])
    [res] = activate(lab.vault, make_adapter(srv.spec),
                     [Activation("www", new[0], new[1], (srv.endpoint,), "www.test")],
                     validate=validate)
    assert res.ok and not res.rolled_back, res.message
    assert res.previous == old[0]
    assert 0 <= res.seconds < 10
    assert served_sha(srv.endpoint, "www.test") == new[1]
    assert lab.vault.live_target("www") == new[0]
    assert pending_journals(lab.vault) == []


@pytest.mark.parametrize("kind", KINDS)
def test_rollback_when_new_chain_does_not_validate(lab: Lab, kind: str) -> None:
    srv, old, new = one_site(lab, kind)
    only_a = chain_validator([lab.a.root.cert])  # CA b is not trusted: the new leaf must go
    [res] = activate(lab.vault, make_adapter(srv.spec),
                     [Activation("www", new[0], new[1], (srv.endpoint,), "www.test")],
                     validate=only_a, verify_timeout=5)
    assert not res.ok and res.rolled_back
    assert "does not validate" in res.message and "proven served" in res.message
    assert served_sha(srv.endpoint, "www.test") == old[1]
    assert lab.vault.live_target("www") == old[0]
    assert pending_journals(lab.vault) == []


@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_rollback_when_server_keeps_old_certificate(lab: Lab, kind: str) -> None:
    srv, old, new = one_site(lab, kind)
    spec = dict(srv.spec, reload=["true"])  # the "reload" does nothing: old cert stays served
    [res] = activate(lab.vault, make_adapter(spec),
                     [Activation("www", new[0], new[1], (srv.endpoint,), "www.test")],
                     validate=chain_validator([lab.a.root.cert, lab.b.root.cert]),
                     verify_timeout=1.5)
    assert not res.ok and res.rolled_back
    assert "not verified after" in res.message and "proven served" in res.message
    assert res.seconds == -1.0
    assert served_sha(srv.endpoint, "www.test") == old[1]
    assert lab.vault.live_target("www") == old[0]


def test_haproxy_without_live_crt_is_a_config_error_and_store_flips_back(lab: Lab) -> None:
    old = lab.a.issue_into(lab.vault, "www", ["www.test"])
    new = lab.b.issue_into(lab.vault, "www", ["www.test"])
    lab.vault.point_live("www", old[0])
    copy = lab.tmp / "copy"
    shutil.copytree(old[0], copy)  # haproxy loads a copy, not the live link
    srv = lab.start("haproxy", [VHost("www.test", (copy,))])
    [res] = activate(lab.vault, make_adapter(srv.spec),
                     [Activation("www", new[0], new[1], (srv.endpoint,), "www.test")],
                     validate=chain_validator([lab.a.root.cert, lab.b.root.cert]))
    assert not res.ok and res.rolled_back
    assert "config test failed" in res.message and "no certificate loaded under" in res.message
    assert lab.vault.live_target("www") == old[0]
    assert served_sha(srv.endpoint, "www.test") == old[1]


def test_nginx_config_test_failure_flips_back(lab: Lab) -> None:
    srv, old, new = one_site(lab, "nginx")
    # a broken archive dir: the key does not belong to the certificate
    bad = lab.tmp / "bad"
    shutil.copytree(new[0], bad)
    other, _ = lab.a.issue_into(lab.vault, "other", ["other.test"])
    shutil.copy(other / "privkey.pem", bad / "privkey.pem")
    adapter = make_adapter(srv.spec)
    with pytest.raises(ServerConfigError, match="config test"):
        lab.vault.point_live("www", bad)
        try:
            adapter.apply([LiveChange("www", lab.vault.live_path("www"), bad)])
        finally:
            lab.vault.point_live("www", old[0])
    [res] = activate(lab.vault, adapter,
                     [Activation("www", bad, new[1], (srv.endpoint,), "www.test")],
                     validate=chain_validator([lab.a.root.cert, lab.b.root.cert]))
    assert not res.ok and res.rolled_back and "config test failed" in res.message
    assert "key values mismatch" in res.message or "mismatch" in res.message.lower()
    assert lab.vault.live_target("www") == old[0]
    assert served_sha(srv.endpoint, "www.test") == old[1]


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_sites_one_apply(lab: Lab, kind: str) -> None:
    names = [f"s{i}" for i in range(4)]
    olds, news = {}, {}
    for n in names:
        olds[n] = lab.a.issue_into(lab.vault, n, [f"{n}.test"])
        news[n] = lab.b.issue_into(lab.vault, n, [f"{n}.test"])
        lab.vault.point_live(n, olds[n][0])
    srv = lab.start(kind, [VHost(f"{n}.test", (lab.vault.live_path(n),)) for n in names])
    counting = CountingAdapter(make_adapter(srv.spec))
    trusted = chain_validator([lab.a.root.cert, lab.b.root.cert])
    batch = [Activation(n, news[n][0], news[n][1], (srv.endpoint,), f"{n}.test")
             for n in names[:3]]  # s3 stays
    results = activate(lab.vault, counting, batch, validate=trusted)
    assert [r.site for r in results] == names[:3]
    assert all(r.ok for r in results), [r.message for r in results]
    assert counting.calls == [names[:3]]  # ONE reload / hot-swap round for the batch
    for n in names[:3]:
        assert served_sha(srv.endpoint, f"{n}.test") == news[n][1]
    assert served_sha(srv.endpoint, "s3.test") == olds["s3"][1]


@pytest.mark.parametrize("kind", KINDS)
def test_batch_rolls_back_only_the_failing_site(lab: Lab, kind: str) -> None:
    good_old = lab.a.issue_into(lab.vault, "good", ["good.test"])
    good_new = lab.b.issue_into(lab.vault, "good", ["good.test"])
    bad_old = lab.a.issue_into(lab.vault, "bad", ["bad.test"])
    bad_new = lab.b.issue_into(lab.vault, "bad", ["wrong-name.test"])  # does not cover bad.test
    lab.vault.point_live("good", good_old[0])
    lab.vault.point_live("bad", bad_old[0])
    srv = lab.start(kind, [VHost("good.test", (lab.vault.live_path("good"),)),
                           VHost("bad.test", (lab.vault.live_path("bad"),))])
    counting = CountingAdapter(make_adapter(srv.spec))
    results = activate(lab.vault, counting, [
        Activation("good", good_new[0], good_new[1], (srv.endpoint,), "good.test"),
        Activation("bad", bad_new[0], bad_new[1], (srv.endpoint,), "bad.test"),
    ], validate=chain_validator([lab.a.root.cert, lab.b.root.cert]), verify_timeout=5)
    by = {r.site: r for r in results}
    assert by["good"].ok and not by["bad"].ok and by["bad"].rolled_back, by["bad"].message
    assert counting.calls == [["good", "bad"], ["bad"]]
    assert served_sha(srv.endpoint, "good.test") == good_new[1]
    assert served_sha(srv.endpoint, "bad.test") == bad_old[1]
    assert lab.vault.live_target("bad") == bad_old[0]


@pytest.mark.parametrize("kind", KINDS)
def test_dual_key_types_fail_over_independently(lab: Lab, kind: str) -> None:
    ec_old = lab.a.issue_into(lab.vault, "www-ec", ["www.test"], key_type="ec-p256")
    rsa_old = lab.a.issue_into(lab.vault, "www-rsa", ["www.test"], key_type="rsa-2048")
    ec_new = lab.b.issue_into(lab.vault, "www-ec", ["www.test"], key_type="ec-p256")
    lab.vault.point_live("www-ec", ec_old[0])
    lab.vault.point_live("www-rsa", rsa_old[0])
    srv = lab.start(kind, [VHost("www.test", (lab.vault.live_path("www-ec"),
                                              lab.vault.live_path("www-rsa")))])
    assert served_sha(srv.endpoint, "www.test", "ec") == ec_old[1]
    assert served_sha(srv.endpoint, "www.test", "rsa") == rsa_old[1]
    [res] = activate(lab.vault, make_adapter(srv.spec),
                     [Activation("www-ec", ec_new[0], ec_new[1], (srv.endpoint,), "www.test",
                                 key_type="ec")],
                     validate=chain_validator([lab.a.root.cert, lab.b.root.cert]))
    assert res.ok, res.message
    assert served_sha(srv.endpoint, "www.test", "ec") == ec_new[1]
    assert served_sha(srv.endpoint, "www.test", "rsa") == rsa_old[1]
