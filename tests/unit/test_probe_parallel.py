"""deploy verifies with a small bounded pool of handshakes in flight, and keeps its rules:
validate() once per distinct chain, the overall deadline, no thread left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from test_deploy_steady import batch as steady_batch

from certfailover import deploy
from certfailover.servers.base import Endpoint, LiveChange
from certfailover.store.vault import Vault

EPS = (Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2))


class NoReload:
    name = "scripted"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        pass


class Counting:
    """Serves `leaves[site]` after `handshake` seconds; records the most handshakes in flight."""

    def __init__(self, leaves: dict[str, x509.Certificate], handshake: float = 0.005) -> None:
        self.leaves, self.handshake = leaves, handshake
        self.lock = threading.Lock()
        self.inflight = self.most = self.probes = 0

    def __call__(self, ep: Endpoint, sni: str, *, timeout: float = 5.0,
                 key_type: str | None = None) -> list[x509.Certificate]:
        assert 1.0 <= timeout <= 2.0
        with self.lock:
            self.inflight += 1
            self.probes += 1
            self.most = max(self.most, self.inflight)
        time.sleep(self.handshake)
        with self.lock:
            self.inflight -= 1
        return [self.leaves[sni.split(".")[0]]]


def batch(tmp_path: Path, n: int) -> tuple[Vault, list[deploy.Activation],
                                           dict[str, x509.Certificate],
                                           dict[str, x509.Certificate]]:
    return steady_batch(tmp_path, n, EPS)  # two endpoints per site


@pytest.mark.parametrize("workers", [1, 3, deploy.PROBE_WORKERS])
def test_handshakes_in_flight_are_bounded_by_the_pool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    vault, acts, _, new = batch(tmp_path, 40)
    server = Counting(new)
    monkeypatch.setattr(deploy, "served_chain", server)
    def probes() -> list[str]:  # the pool's threads (others, of earlier tests, may still end)
        return [t.name for t in threading.enumerate() if t.name.startswith("probe")]
    before = probes()
    validated: list[str] = []
    lock = threading.Lock()

    def validate(chain: list[x509.Certificate], sni: str) -> str | None:
        with lock:
            validated.append(sni)
        return None
    results = deploy.activate(vault, NoReload(), acts, validate=validate, settle=0.02,
                              probe_workers=workers)
    assert all(r.ok for r in results)
    assert (2 <= server.most <= workers) if workers > 1 else server.most == 1, server.most
    assert probes() == before, "the pool's threads are gone"
    # one distinct chain per site, two endpoints: validated once per site
    assert sorted(validated) == sorted(a.sni for a in acts)


def test_the_overall_deadline_holds_with_the_pool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, old, _ = batch(tmp_path, 20)
    server = Counting(old)  # the reload never happens
    monkeypatch.setattr(deploy, "served_chain", server)
    t0 = time.monotonic()
    results = deploy.activate(vault, NoReload(), acts, validate=lambda c, s: None, settle=0.02,
                              verify_timeout=0.3)
    took = time.monotonic() - t0
    assert not any(r.ok for r in results) and all(r.rolled_back for r in results)
    assert all("not verified after 0.3 s" in r.message for r in results)
    # verify (0.3 s + one round) then the rollback's proof of the old leaf (fast)
    assert took < 1.5, took
    assert server.most <= deploy.PROBE_WORKERS


def test_a_failed_probe_is_an_unexpected_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors from a worker thread reach the judgement (and its message), not the caller."""
    vault, acts, _, new = batch(tmp_path, 3)

    def refuse(ep: Endpoint, sni: str, *, timeout: float = 5.0,
               key_type: str | None = None) -> list[x509.Certificate]:
        if sni == "s1.test":
            raise deploy.ProbeError(f"{ep} (SNI {sni}): cannot connect: refused")
        return [new[sni.split(".")[0]]]
    monkeypatch.setattr(deploy, "served_chain", refuse)
    results = {r.site: r for r in deploy.activate(vault, NoReload(), acts,
                                                  validate=lambda c, s: None, settle=0.02,
                                                  verify_timeout=0.2)}
    assert results["s0"].ok and results["s2"].ok
    assert not results["s1"].ok and "cannot connect: refused" in results["s1"].message
