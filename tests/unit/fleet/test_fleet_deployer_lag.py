"""A lagging host never holds the controller's switch (no database, no web server): a site is
settled as soon as its outcome is known (every live host verified it; or lag_grace after a
first host did; or every live host reported an error from an attempt at it: fail fast; or
converge_timeout), and the hosts left behind are alerted by `track()` once, converge_timeout
after the publish, in one query per call."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from certfailover import keys
from certfailover.engine import Switch
from certfailover.events import EventKind
from certfailover.fleet import controller, coord, deployer
from certfailover.fleet.controller import HostView, Laggard
from certfailover.fleet.deployer import FleetDeployer
from certfailover.fleet.sealed import Kek, Keyring, chain_digest
from certfailover.model import Cert, Event
from certfailover.store.vault import Vault
from certfailover.testing import pki

SITES = ("www", "api")


class FakeLeader:
    epoch = 1
    engine: Any = None

    def try_lead(self) -> bool:
        return True

    @contextmanager
    def fenced(self) -> Iterator[object]:
        yield object()


@dataclasses.dataclass
class World:
    deployer: FleetDeployer
    switches: list[Switch]
    certs: dict[str, Cert]
    chain: str
    since: datetime
    script: list[tuple[float, list[HostView]]] = dataclasses.field(default_factory=list)
    t0: float = 0.0
    polls: int = 0
    lag: list[Laggard] = dataclasses.field(default_factory=list)
    lag_calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    recorded: list[Event] = dataclasses.field(default_factory=list)

    def view(self, site: str, host: str, *, verified: bool = False, error: str = "",
             stale: bool = False, reported: datetime | None = None,
             served: str | None = None) -> HostView:
        c = self.certs[site]
        sha = c.sha256 if verified else (served or "0" * 64)
        return HostView(site, host, c.sha256, sha, self.since, reported or self.since, error,
                        stale, self.chain, self.chain, c.id, self.since)

    def failed(self, site: str, host: str, why: str = "handshake failed") -> HostView:
        """The error an agent reports for a failed attempt at the desired certificate."""
        wanted = coord.attempt(self.certs[site].id, self.chain)
        return self.view(site, host, error=f"{why} [backoff: attempt 1 "
                                            f"{coord.attempt_failed(wanted)}; next try in 5 s]",
                         reported=self.since + timedelta(seconds=1))

    def run(self) -> tuple[list[Any], float]:
        t0 = time.monotonic()
        results = self.deployer(None, self.switches)
        return results, time.monotonic() - t0


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    vault = Vault(tmp_path / "controller")
    vault.ensure()
    root = pki.make_root("Root a")
    certs: dict[str, Cert] = {}
    for s in SITES:
        leaf, key = pki.make_leaf(root, [f"{s}.example.test"])
        path = vault.save(s, "a", format(leaf.serial_number, "x"), leaf_pem=pki.pem(leaf),
                          chain_pem=b"", key_pem=keys.key_pem(key))
        certs[s] = dataclasses.replace(pki.material(leaf, path=str(path)).cert,
                                       id=f"{s}/a/{leaf.serial_number:x}", site=s)
    switches = [Switch(SimpleNamespace(name=s), certs[s], None)  # type: ignore[arg-type]
                for s in SITES]
    d = FleetDeployer(FakeLeader(), Keyring(Kek(os.urandom(32))), vault,  # type: ignore[arg-type]
                      converge_timeout=3.0, lag_grace=0.5, poll=0.01, stale_after=5.0,
                      record=lambda evs: w.recorded.extend(evs))
    w = World(d, switches, certs, chain_digest(b""), datetime.now(UTC))

    def publish(conn: object, ring: object, items: Sequence[controller.Desired], *,
                epoch: int = 0) -> int:
        w.t0 = time.monotonic()
        return len(items)

    def progress(engine: object, *, site: str | None = None, stale_after: float = 120.0,
                 sites: Sequence[str] | None = None) -> list[HostView]:
        w.polls += 1
        now = time.monotonic() - w.t0
        views = [vs for at, vs in w.script if at <= now][-1]
        return [v for v in views if sites is None or v.site in sites]

    def laggards(engine: object, **kw: Any) -> list[Laggard]:
        w.lag_calls.append(kw)
        return list(w.lag)

    monkeypatch.setattr(controller, "publish", publish)
    monkeypatch.setattr(controller, "progress", progress)
    monkeypatch.setattr(controller, "laggards", laggards)
    return w


def test_a_host_that_lags_gets_lag_grace_then_the_switch_is_done_without_it(
        world: World) -> None:
    w = world
    w.script = [(0.0, [w.view(s, h) for s in SITES for h in ("web1", "web2")]),
                (0.2, [w.view(s, "web1", verified=True) for s in SITES]
                 + [w.view(s, "web2") for s in SITES])]  # web2 never verifies
    results, took = w.run()
    assert 0.2 + 0.5 <= took < 1.5, took  # lag_grace after web1 verified, not converge_timeout
    assert [(r.site, r.ok, r.rolled_back) for r in results] == [(s, True, False) for s in SITES]
    assert results[0].message == ("verified on web1; web2 not yet verified (tracked: alert if "
                                  "not verified 3 s after the publish)")
    assert 0.15 < results[0].seconds < 0.5  # when web1 proved it
    assert w.recorded == []  # not alerted inside the switch: tracked
    # the tracker: nothing is due before converge_timeout after the publish ...
    due = w.deployer.next_track()
    assert due is not None and 1.5 < due <= 3.1
    w.lag = [Laggard(s, "web2", w.certs[s].sha256, "0" * 64, w.since, "", w.chain)
             for s in SITES]
    time.sleep(due)
    assert w.deployer.next_track() == 0.0
    events = w.deployer.track()
    assert [(e.site, e.kind, e.data["host"]) for e in events] == \
        [(s, EventKind.FLEET_NOT_CONVERGED, "web2") for s in SITES]
    assert w.recorded == events
    assert sorted(w.lag_calls[-1]["sites"]) == sorted(SITES)  # the watched sites, one query
    assert w.deployer.next_track() is None  # looked at once: done
    assert w.deployer.track() == [] and len(w.recorded) == 2  # once per site, host, desired


def test_a_site_every_host_verified_returns_at_once(world: World) -> None:
    w = world
    w.script = [(0.0, [w.view(s, h, verified=True) for s in SITES for h in ("web1", "web2")])]
    results, took = w.run()
    assert took < 0.3 and all(r.ok and r.message == "verified on every host" for r in results)
    assert w.deployer.next_track() is None and w.polls == 1


def test_every_live_host_failed_the_attempt_fails_fast(world: World) -> None:
    """No host verified it and every live one reported an error from an attempt at this
    certificate (a stale one is not waited for): failed at once, each host's error named."""
    w = world
    w.script = [(0.0, [w.view(s, h) for s in SITES for h in ("web1", "web2")]
                 + [w.view(s, "web3", stale=True) for s in SITES]),
                (0.1, [w.failed(s, "web1", "nginx -t failed")
                       for s in SITES] + [w.view(s, "web2") for s in SITES]
                 + [w.view(s, "web3", stale=True) for s in SITES]),
                (0.2, [w.failed(s, "web1", "nginx -t failed") for s in SITES]
                 + [w.failed(s, "web2", "handshake failed") for s in SITES]
                 + [w.view(s, "web3", stale=True) for s in SITES])]
    results, took = w.run()
    assert took < 1.0, took  # not converge_timeout (3 s)
    assert not any(r.ok or r.rolled_back for r in results)
    msg = results[0].message
    assert msg.startswith("no host verified it: web1 failed: nginx -t failed [backoff")
    assert "; web2 failed: handshake failed [backoff" in msg
    assert "web3 stale (no report for over 5 s; not waited for)" in msg
    # the stale host is alerted at once; the failed ones at converge_timeout, by track()
    assert [(e.site, e.data["host"]) for e in w.recorded] == [(s, "web3") for s in SITES]
    assert w.deployer.next_track() is not None


def test_one_host_verified_and_the_other_failed_is_done_without_the_grace(
        world: World) -> None:
    w = world
    w.script = [(0.0, [w.view(s, "web1", verified=True) for s in SITES]
                 + [w.failed(s, "web2") for s in SITES])]
    results, took = w.run()
    assert took < 0.3, took
    assert all(r.ok for r in results)
    assert results[0].message.startswith("verified on web1; web2 failed: handshake failed")


@pytest.mark.parametrize("old", ["before the publish", "another certificate"])
def test_an_error_that_is_not_from_this_attempt_keeps_the_host_waited_for(
        world: World, old: str) -> None:
    """An error reported before the publish, or naming another desired certificate (an
    earlier switch of the site), says nothing of this one: the host is waited for, up to
    converge_timeout when no host verified the site; then it is failed and alerted at once."""
    w = world
    w.deployer.converge_timeout = 0.6
    stale_error = [dataclasses.replace(
        w.failed(s, "web1"), reported=w.since - timedelta(seconds=1)) if old ==
        "before the publish" else dataclasses.replace(
            w.failed(s, "web1"), error="handshake failed [backoff: attempt 1 with "
                                       f"{s}/b/99 failed; next try in 5 s]")
        for s in SITES]
    assert not any(controller.failed_attempt(v) for v in stale_error)
    assert all(controller.failed_attempt(w.failed(s, "web1")) for s in SITES)
    w.script = [(0.0, stale_error)]
    results, took = w.run()
    assert 0.6 <= took < 1.2, took
    assert not any(r.ok for r in results)
    assert results[0].message == ("no host verified it: not verified on web1 after 0.6 s "
                                  "(the desired certificate stays published)")
    assert [(e.site, e.data["host"]) for e in w.recorded] == [(s, "web1") for s in SITES]


def test_a_site_no_host_serves_is_published_at_once(world: World) -> None:
    w = world
    w.script = [(0.0, [])]
    results, took = w.run()
    assert took < 0.3 and [r.message for r in results] == \
        ["published; no host serves this site yet"] * 2


def test_track_covers_recent_switches_and_the_watched_sites_in_one_query(
        world: World) -> None:
    w = world
    ct = timedelta(seconds=w.deployer.converge_timeout)
    assert w.deployer.track() == []
    first = w.lag_calls[-1]
    # the first call looks back an hour (a restarted controller alerts what still lags)
    assert first["since_after"] == first["now"] - 2 * ct - timedelta(seconds=deployer.LOOKBACK)
    assert first["after"] == w.deployer.converge_timeout and first["sites"] == []
    w.deployer.track()
    second = w.lag_calls[-1]
    # then from where the last call stopped (its cutoff), less converge_timeout (an overlap:
    # a switch another controller published with a clock behind, or a site taken over late)
    assert second["since_after"] == first["now"] - ct - ct
    assert len(w.lag_calls) == 2


def test_track_alerts_only_the_sites_held_and_survives_a_database_fault(
        world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    w = world
    w.lag = [Laggard(s, "web2", w.certs[s].sha256, None, w.since, "", w.chain) for s in SITES]

    def down(engine: object, **kw: Any) -> list[Laggard]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    w.deployer._watch["www"] = time.monotonic() - 1  # a switch left unconverged, due
    with monkeypatch.context() as m:
        m.setattr(controller, "laggards", down)
        assert w.deployer.track(frozenset({"www"})) == []  # logged, not raised
    assert "fleet convergence not checked" in caplog.text
    due = w.deployer.next_track()
    assert due is not None and due > deployer.RETRY - 1  # tried again later, not at once
    events = w.deployer.track(frozenset({"www"}))
    assert [(e.site, e.data["host"]) for e in events] == [("www", "web2")]
    # the record refused: said again at the next call
    w.deployer.record = lambda evs: (_ for _ in ()).throw(
        sa.exc.OperationalError("INSERT", {}, Exception("gone")))
    assert w.deployer.track() == []
    w.deployer.record = w.recorded.extend
    assert [(e.site, e.data["host"]) for e in w.deployer.track()] == [("api", "web2")]
    # the window did not move past the alerts that were not recorded
    assert w.lag_calls[-1]["since_after"] == w.lag_calls[-2]["since_after"]


# -- the daemon asks the port each tick, and wakes when a tracked switch is due ----------------

class TrackingPort:
    """A deploy port that switches at once and follows its switches (as FleetDeployer): a
    switch is due for track() `after` seconds later."""

    def __init__(self, after: float | None) -> None:
        self.after = after
        self.at: float | None = None
        self.calls, self.pending, self.switched = list[tuple[float, Any]](), list[Event](), 0

    def __call__(self, server: str | None, switches: Sequence[Switch]) -> list[Any]:
        from certfailover.engine import SwitchResult
        self.switched += len(switches)
        if self.after is not None:
            self.at = time.monotonic() + self.after
        return [SwitchResult(sw.site.name, True, False, "verified on every host", 0.01)
                for sw in switches]

    def track(self, sites: frozenset[str] | None) -> list[Event]:
        self.calls.append((time.monotonic(), sites))
        if self.at is not None and self.at <= time.monotonic():
            self.at = None
        out, self.pending = self.pending, []
        return out

    def next_track(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())


def daemon_with(tmp_path: Path, port: TrackingPort) -> tuple[Any, list[Event]]:
    from certfailover import config as config_mod
    from certfailover.daemon import Daemon
    from certfailover.wiring import build

    roots = [pki.make_root(f"Root {ca}") for ca in ("a", "b")]
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "store")},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}/dir"} for ca in ("a", "b")],
        "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                  "trust": [str(pki.write_bundle(tmp_path / "roots.pem", *roots))]}]}
    rt = build(config_mod.parse(raw, file=str(tmp_path / "t.toml"), base=tmp_path, env={}))
    for ca, root in zip(("a", "b"), roots, strict=True):
        leaf, key = pki.make_leaf(root, ["www.example.test"],
                                  not_before=datetime.now(UTC) - timedelta(hours=1))
        rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=pki.pem(leaf), chain_pem=b"",
                             key_pem=keys.key_pem(key), source=f"test {ca}")
    notified: list[Event] = []
    rt.engine.deploy = port
    rt.engine.notify = notified.append
    return Daemon(rt.engine, interval=300), notified


def test_each_tick_hands_the_ports_alerts_to_the_report_and_notifications(
        tmp_path: Path) -> None:
    port = TrackingPort(None)
    d, notified = daemon_with(tmp_path, port)
    alert = Event(datetime.now(UTC), "www", EventKind.FLEET_NOT_CONVERGED, "host web2 ...",
                  {"host": "web2"})
    port.pending = [alert]
    report = d.tick()
    assert [c[1] for c in port.calls] == [None]  # no share: every site
    assert alert in report.events and notified[-1] == alert
    assert d.tick() is not None and len(port.calls) == 2  # once per tick


def test_the_loop_wakes_when_a_tracked_switch_is_due(tmp_path: Path) -> None:
    port = TrackingPort(0.3)  # a switch of the first tick reaches converge_timeout in 0.3 s
    d, _ = daemon_with(tmp_path, port)
    loop = threading.Thread(target=d.run, kwargs={"max_ticks": 2})
    loop.start()
    loop.join(10)
    if loop.is_alive():  # waiting for the 300 s interval: the failure
        d.stop_event.set()
        d.wake()
        loop.join(10)
    assert port.switched == 1 and len(port.calls) == 2
    assert 0.25 < port.calls[1][0] - port.calls[0][0] < 5.0  # not the 300 s interval
