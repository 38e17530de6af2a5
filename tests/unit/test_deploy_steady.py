"""How deploy.activate decides that an endpoint steadily serves the new certificates, with the
server's answers scripted (a generation model of a reload: until `switch_at`, every handshake
answers with the old leaf; afterwards the new one). Real servers: tests/integration."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import deploy, keys
from certfailover.probe import leaf_sha256
from certfailover.servers.base import Endpoint, LiveChange
from certfailover.store.vault import Vault
from certfailover.testing import pki

EP = Endpoint("127.0.0.1", 1)


class NoReload:
    name = "scripted"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        pass


class Server:
    """Answers each handshake with the site's old leaf until `switch_at`, the new one after."""

    def __init__(self, old: dict[str, x509.Certificate], new: dict[str, x509.Certificate],
                 switch_at: float, handshake: float = 0.0) -> None:
        self.old, self.new, self.switch_at, self.handshake = old, new, switch_at, handshake
        self.probes = 0
        self.new_seen_at: float | None = None
        self.lock = threading.Lock()  # deploy probes from a pool of threads

    def __call__(self, ep: Endpoint, sni: str, *, timeout: float = 5.0,
                 key_type: str | None = None) -> list[x509.Certificate]:
        with self.lock:
            self.probes += 1
        time.sleep(self.handshake)
        site = sni.split(".")[0]
        if time.monotonic() < self.switch_at:
            return [self.old[site]]
        with self.lock:
            if self.new_seen_at is None:
                self.new_seen_at = time.monotonic()
        return [self.new[site]]


def batch(tmp_path: Path, n: int, endpoints: tuple[Endpoint, ...] = (EP,)
          ) -> tuple[Vault, list[deploy.Activation],
                                           dict[str, x509.Certificate],
                                           dict[str, x509.Certificate]]:
    root = pki.make_root("R")
    vault = Vault(tmp_path / "store")
    vault.ensure()
    old, new, acts = {}, {}, []
    for i in range(n):
        site = f"s{i}"
        for which, ca in ((old, "a"), (new, "b")):
            leaf, key = pki.make_leaf(root, [f"{site}.test"])
            path = vault.save(site, ca, format(leaf.serial_number, "x"),
                              leaf_pem=leaf.public_bytes(Encoding.PEM), chain_pem=b"",
                              key_pem=keys.key_pem(key))
            which[site] = leaf
            if ca == "a":
                vault.point_live(site, path)
        acts.append(deploy.Activation(site, path, leaf_sha256(new[site]), endpoints,
                                      f"{site}.test"))
    return vault, acts, old, new


def test_a_large_batch_costs_about_one_handshake_per_site(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, old, new = batch(tmp_path, 300)
    # a handshake takes 8 ms, 8 at a time (deploy.PROBE_WORKERS), so a pass over the batch
    # (0.3 s) is longer than settle (0.02 s)
    server = Server(old, new, switch_at=0.0, handshake=0.008)
    monkeypatch.setattr(deploy, "served_chain", server)
    validated: list[str] = []

    def validate(chain: Sequence[x509.Certificate], sni: str) -> str | None:
        validated.append(sni)
        return None
    results = deploy.activate(vault, NoReload(), acts, validate=validate, settle=0.02)
    assert all(r.ok for r in results)
    # per site only (the rule before): two handshakes per site, 600
    assert server.probes < 1.2 * len(acts), server.probes
    assert sorted(validated) == sorted(a.sni for a in acts), "each chain validated once"


def test_nothing_is_proven_before_the_endpoint_answered_new_for_settle_seconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, old, new = batch(tmp_path, 40)
    settle = 0.2
    server = Server(old, new, switch_at=time.monotonic() + 0.3)
    monkeypatch.setattr(deploy, "served_chain", server)
    results = deploy.activate(vault, NoReload(), acts, validate=lambda c, s: None,
                              settle=settle)
    done = time.monotonic()
    assert all(r.ok for r in results)
    assert server.new_seen_at is not None and done - server.new_seen_at >= settle


def test_an_old_answer_at_the_endpoint_restarts_the_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old and new generations answer side by side (alternating): no site is proven by the
    endpoint rule while old answers keep coming, only by its own answers settle apart."""
    vault, acts, old, new = batch(tmp_path, 2)
    calls = {"s0": 0, "s1": 0}
    lock = threading.Lock()  # probes run in a pool of threads

    def mixed(ep: Endpoint, sni: str, *, timeout: float = 5.0,
              key_type: str | None = None) -> list[x509.Certificate]:
        site = sni.split(".")[0]
        with lock:  # s1's own handshakes alternate: old, new, old, ...
            calls[site] += 1
            n = calls[site]
        return [new[site]] if site == "s0" or n % 2 == 0 else [old[site]]
    monkeypatch.setattr(deploy, "served_chain", mixed)
    t0 = time.monotonic()
    results = deploy.activate(vault, NoReload(), acts, validate=lambda c, s: None, settle=0.1,
                              verify_timeout=0.6)
    by_site = {r.site: r for r in results}
    assert not by_site["s1"].ok, "s1 keeps getting its old leaf"
    assert by_site["s1"].rolled_back
    assert time.monotonic() - t0 >= 0.6


class HotSwap:
    """An adapter whose apply() is in force for every new connection when it returns."""

    name = "hot"

    def apply(self, changes: Sequence[LiveChange]) -> bool:
        return True


def test_after_a_hot_swap_one_expected_answer_proves_a_site(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, old, new = batch(tmp_path, 40)
    server = Server(old, new, switch_at=0.0)
    monkeypatch.setattr(deploy, "served_chain", server)
    t0 = time.monotonic()
    results = deploy.activate(vault, HotSwap(), acts, validate=lambda c, s: None, settle=5.0)
    assert all(r.ok for r in results)
    assert time.monotonic() - t0 < 5.0, "no settle window after a hot swap"
    assert server.probes == len(acts), "one handshake per site"
    # a reload (apply returns None) still waits for steady evidence
    vault2, acts2, old2, new2 = batch(tmp_path / "reload", 5)
    monkeypatch.setattr(deploy, "served_chain", Server(old2, new2, switch_at=0.0))
    t0 = time.monotonic()
    assert all(r.ok for r in deploy.activate(vault2, NoReload(), acts2,
                                             validate=lambda c, s: None, settle=0.3))
    assert time.monotonic() - t0 >= 0.3
