"""Activate certificates on a server, prove it with a handshake, roll back what does not verify.

One batch = the sites that change on ONE server in one tick:

    1. journal   <vault>/journal/<site>.json per site (atomic), BEFORE anything changes
    2. flip      every site's live symlink -> its new archive dir
    3. apply     adapter.apply(batch): one reload / hot swap for all sites
    4. verify    handshake at every endpoint of every site until the served leaf is the expected
                 one and validate() accepts the served chain (reloads are asynchronous)
    5. rollback  sites that did not verify in time: journal phase "rollback", flip back, apply
                 once more for them, re-probe until the previous leaf is served
                 (a chain switch, docs/chains.md: the same leaf in another chain directory of
                 the same certificate; then the served chain must be the expected one too)
    6. forget    remove the journals

If the process dies anywhere in between, the server still runs the state it loaded last (a
reload either happens completely or not at all), and `recover()` at start-up makes the store
agree with it: a site whose endpoints all serve the new leaf is finished; any other site is
undone (live flipped back, applied, re-probed).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from .errors import ServerConfigError, ServerError, StoreError
from .probe import ProbeError, leaf_sha256, served_chain
from .servers.base import Endpoint, LiveChange, ServerAdapter
from .store.files import atomic_write, fsync_dir
from .store.vault import Vault, base_dir, load_pem_certs

__all__ = [
    "Activation",
    "ActivationResult",
    "RecoveryResult",
    "Validate",
    "activate",
    "journal_dir",
    "pending_journals",
    "recover",
]

Validate = Callable[[list[x509.Certificate], str], str | None]
Phase = Callable[[str], None]


@dataclass(frozen=True)
class Activation:
    site: str
    target: Path  # archive dir to activate
    expected_sha256: str  # hex SHA-256 of the leaf DER that must be served afterwards
    endpoints: tuple[Endpoint, ...]
    sni: str
    key_type: str | None = None  # "ec" / "rsa": probe this one of a dual-certificate pair


@dataclass(frozen=True)
class ActivationResult:
    site: str
    ok: bool
    rolled_back: bool
    previous: Path | None
    message: str
    seconds: float  # decision to first handshake showing the new leaf (-1 if never seen)


@dataclass(frozen=True)
class RecoveryResult:
    site: str
    action: str  # "finished" (new cert kept) | "undone" (previous restored) | "failed"
    live: Path | None  # what live/<site> points at now
    message: str


# -- journal ------------------------------------------------------------------------------------

def journal_dir(vault: Vault) -> Path:
    return vault.root / "journal"


def _journal_path(vault: Vault, site: str) -> Path:
    return journal_dir(vault) / f"{vault.live_path(site).name}.json"


def _write_journal(vault: Vault, act: Activation, server: str, previous: Path | None,
                   phase: str) -> None:
    d = journal_dir(vault)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    entry = {
        "version": 1, "site": act.site, "server": server, "phase": phase,
        "previous": str(previous) if previous else None, "target": str(act.target),
        "expected_sha256": act.expected_sha256, "sni": act.sni, "key_type": act.key_type,
        "endpoints": [str(e) for e in act.endpoints],
    }
    atomic_write(_journal_path(vault, act.site), json.dumps(entry, indent=1).encode(), mode=0o600)


def _forget(vault: Vault, site: str) -> None:
    try:
        _journal_path(vault, site).unlink()
    except FileNotFoundError:
        return
    fsync_dir(journal_dir(vault))


@dataclass(frozen=True)
class _Entry:
    act: Activation
    server: str
    phase: str
    previous: Path | None


def _read_journal(path: Path) -> _Entry:
    try:
        raw: Any = json.loads(path.read_text())
        prev = raw["previous"]
        act = Activation(site=raw["site"], target=Path(raw["target"]),
                         expected_sha256=raw["expected_sha256"],
                         endpoints=tuple(Endpoint.parse(e) for e in raw["endpoints"]),
                         sni=raw["sni"], key_type=raw.get("key_type"))
        return _Entry(act, str(raw["server"]), str(raw["phase"]), Path(prev) if prev else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: unreadable activation journal: {exc}") from exc


def pending_journals(vault: Vault) -> list[Path]:
    d = journal_dir(vault)
    return sorted(d.glob("*.json")) if d.is_dir() else []


# -- probing ------------------------------------------------------------------------------------

def _leaf_of(directory: Path) -> str:
    return leaf_sha256(load_pem_certs((directory / "cert.pem").read_bytes(),
                                      str(directory / "cert.pem"))[0])


Chain = tuple[str, ...]  # SHA-256 of the certificates served after the leaf


def _chain_of(directory: Path) -> Chain:
    data = (directory / "chain.pem").read_bytes()
    return tuple(leaf_sha256(c) for c in load_pem_certs(data, str(directory / "chain.pem"))) \
        if data.strip() else ()


def _chain_switch(frm: Path | None, to: Path) -> bool:
    """`frm` and `to` are two chain directories of one certificate: the leaf does not change,
    so only the served chain can prove the switch."""
    return frm is not None and Path(frm).resolve() != Path(to).resolve() and \
        base_dir(Path(frm).resolve()) == base_dir(Path(to).resolve())


def _expect(act: Activation, sha: str, frm: Path | None,
            to: Path) -> tuple[Activation, str, Chain | None]:
    return act, sha, _chain_of(to) if _chain_switch(frm, to) else None


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    message: str
    first_seen: float  # seconds since t0 of the first handshake showing the expected leaf


def _wait_served(items: Mapping[str, tuple[Activation, str, Chain | None]],
                 validate: Validate | None, t0: float, timeout: float,
                 settle: float) -> dict[str, _Outcome]:
    """Probe until every endpoint of every site steadily serves its expected leaf (and, for a
    chain switch, its expected chain).

    "Steadily": the expected leaf at an endpoint, and no handshake there showing anything else,
    for `settle` seconds (nginx lets the old and the new worker generation accept side by side
    for ~0.1 s after a reload, so one good handshake proves little). The evidence is per site
    (two expected answers `settle` apart), or per endpoint: once every handshake at an endpoint,
    for any site of the batch, has shown its expected leaf for `settle` seconds, the old
    generation there no longer answers, and one expected answer proves a site. A large batch
    then costs one handshake per site, not two. validate() must accept the served chain; it
    runs once per distinct chain a site serves.
    """
    deadline = time.monotonic() + timeout
    todo = {site: set(act.endpoints) for site, (act, _, _) in items.items()}
    streak: dict[tuple[str, Endpoint], float] = {}
    clean_since: dict[Endpoint, float] = {}  # only expected answers at the endpoint since then
    judged: dict[tuple[str, tuple[str, ...]], str | None] = {}  # (site, chain) -> validate()
    last: dict[str, str] = {site: "not probed" for site in items}
    first: dict[str, float] = {}
    failed: dict[str, str] = {}

    def unexpected(site: str, ep: Endpoint, why: str) -> None:
        streak.pop((site, ep), None)
        clean_since.pop(ep, None)
        last[site] = why

    while True:
        for site, (act, sha, want_chain) in items.items():
            if site in failed:
                continue
            for ep in sorted(todo[site], key=str):
                per_probe = max(1.0, min(2.0, deadline - time.monotonic()))
                try:
                    chain = served_chain(ep, act.sni, timeout=per_probe,
                                         key_type=act.key_type)
                except (ProbeError, OSError) as exc:
                    unexpected(site, ep, str(exc))
                    continue
                got = leaf_sha256(chain[0])
                now = time.monotonic()
                if got != sha:
                    unexpected(site, ep, f"{ep} serves leaf {got[:16]}…, expected {sha[:16]}…")
                    continue
                served = tuple(leaf_sha256(c) for c in chain[1:])
                if want_chain is not None and served != want_chain:
                    # the same leaf, still with the old chain
                    unexpected(site, ep, f"{ep} serves the expected leaf with another chain")
                    continue
                first.setdefault(site, now - t0)
                if validate is not None and (site, served) not in judged:
                    judged[(site, served)] = validate(chain, act.sni)
                err = judged.get((site, served))
                if err is not None:  # the right leaf that does not validate will not improve
                    failed[site] = f"{ep} serves the expected leaf but it does not validate: {err}"
                    break
                since = streak.setdefault((site, ep), now)
                clean = clean_since.setdefault(ep, now)
                if now - since >= settle or now - clean >= settle:
                    todo[site].discard(ep)
                else:
                    last[site] = f"{ep} serves the expected leaf, not yet for {settle:g} s"
        pending = [s for s in items if todo[s] and s not in failed]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    out: dict[str, _Outcome] = {}
    for site in items:
        if site in failed:
            out[site] = _Outcome(False, failed[site], first.get(site, -1.0))
        elif todo[site]:
            out[site] = _Outcome(False, f"not verified after {timeout:g} s: {last[site]}",
                                 first.get(site, -1.0))
        else:
            eps = ", ".join(str(e) for e in items[site][0].endpoints)
            out[site] = _Outcome(True, f"verified at {eps}", first[site])
    return out


# -- activation ---------------------------------------------------------------------------------

def _noop(_: str) -> None:
    return None


def activate(vault: Vault, adapter: ServerAdapter, batch: Sequence[Activation], *,
             validate: Validate, verify_timeout: float = 10.0, settle: float = 0.3,
             on_phase: Phase = _noop) -> list[ActivationResult]:
    """Flip, apply once, prove by handshake; roll back the sites that do not verify.

    `settle`: how long every handshake at an endpoint must show the expected leaf.
    `on_phase` is called with each phase name (journal, flip, apply, verify, rollback-…, done).
    """
    t0 = time.monotonic()
    sites = [a.site for a in batch]
    if len(set(sites)) != len(sites):
        raise ValueError(f"a site appears twice in one batch: {sites}")
    for a in batch:
        if not a.endpoints:
            raise ValueError(f"site {a.site!r}: no endpoints to verify the activation at")
    previous = {a.site: vault.live_target(a.site) for a in batch}
    on_phase("journal")
    for a in batch:
        _write_journal(vault, a, adapter.name, previous[a.site], "activate")
    on_phase("flip")
    for a in batch:
        vault.point_live(a.site, a.target)
    on_phase("apply")
    try:
        adapter.apply([LiveChange(a.site, vault.live_path(a.site), a.target) for a in batch])
    except ServerConfigError as exc:
        # the server refused the new state and still runs the old one: only the store goes back
        on_phase("config-error")
        refused: list[ActivationResult] = []
        for a in batch:
            _restore_live(vault, a.site, previous[a.site])
            _forget(vault, a.site)
            refused.append(ActivationResult(a.site, False, previous[a.site] is not None,
                                            previous[a.site], f"config test failed: {exc}",
                                            -1.0))
        return refused
    except ServerError as exc:
        on_phase("apply-error")
        return _rollback(vault, adapter, list(batch), previous,
                         {a.site: f"apply failed: {exc}" for a in batch}, {}, verify_timeout,
                         settle, on_phase)
    on_phase("verify")
    outcomes = _wait_served({a.site: _expect(a, a.expected_sha256, previous[a.site], a.target)
                             for a in batch}, validate, t0, verify_timeout, settle)
    results: list[ActivationResult] = []
    for a in batch:
        o = outcomes[a.site]
        if o.ok:
            _forget(vault, a.site)
            results.append(ActivationResult(a.site, True, False, previous[a.site], o.message,
                                            o.first_seen))
    bad = [a for a in batch if not outcomes[a.site].ok]
    if bad:
        results += _rollback(vault, adapter, bad, previous,
                             {a.site: outcomes[a.site].message for a in bad},
                             {a.site: outcomes[a.site].first_seen for a in bad},
                             verify_timeout, settle, on_phase)
    on_phase("done")
    order = {s: i for i, s in enumerate(sites)}
    return sorted(results, key=lambda r: order[r.site])


def _restore_live(vault: Vault, site: str, previous: Path | None) -> None:
    if previous is not None:
        vault.point_live(site, previous)


def _rollback(vault: Vault, adapter: ServerAdapter, bad: list[Activation],
              previous: Mapping[str, Path | None], why: Mapping[str, str],
              seen: Mapping[str, float], verify_timeout: float, settle: float,
              on_phase: Phase) -> list[ActivationResult]:
    on_phase("rollback-journal")
    for a in bad:
        _write_journal(vault, a, adapter.name, previous[a.site], "rollback")
    on_phase("rollback-flip")
    back = [a for a in bad if previous[a.site] is not None]
    for a in back:
        _restore_live(vault, a.site, previous[a.site])
    results: list[ActivationResult] = []
    note: dict[str, str] = {}
    if back:
        on_phase("rollback-apply")
        try:
            adapter.apply([LiveChange(a.site, vault.live_path(a.site), previous[a.site] or a.target)
                           for a in back])
        except ServerError as exc:
            note = {a.site: f"; re-apply of the previous certificate failed: {exc}" for a in back}
    on_phase("rollback-verify")
    olds: dict[str, tuple[Activation, str, Chain | None]] = {}
    for a in back:
        prev = previous[a.site]
        assert prev is not None
        olds[a.site] = _expect(a, _leaf_of(prev), a.target, prev)
    proven = _wait_served(olds, None, time.monotonic(), verify_timeout, settle) if olds else {}
    for a in bad:
        p = proven.get(a.site)
        if previous[a.site] is None:
            tail = "; nothing to roll back to (first activation): left in place"
        elif p is not None and p.ok:
            tail = "; rolled back, previous certificate proven served"
        else:
            tail = f"; rolled back, previous certificate NOT proven: {p.message if p else '?'}"
        results.append(ActivationResult(a.site, False, previous[a.site] is not None,
                                        previous[a.site], why[a.site] + tail + note.get(a.site, ""),
                                        seen.get(a.site, -1.0)))
        _forget(vault, a.site)
    return results


# -- crash recovery -----------------------------------------------------------------------------

def recover(vault: Vault, adapters: Mapping[str, ServerAdapter], *, validate: Validate,
            verify_timeout: float = 10.0, settle: float = 0.3) -> list[RecoveryResult]:
    """Finish or undo activations interrupted by a crash, judged by what the server serves.

    A site in phase "activate" whose every endpoint serves the new leaf (and validates) is
    finished: live stays on the new certificate. Every other site is undone: live back to the
    previous certificate, the adapter applied once per server, the previous leaf re-probed.
    """
    results: list[RecoveryResult] = []
    undo: dict[str, list[_Entry]] = {}
    live_dir = vault.root / "live"
    if live_dir.is_dir():
        for stray in live_dir.glob(".*.tmp"):  # a symlink rename interrupted by the crash
            stray.unlink(missing_ok=True)
    for path in pending_journals(vault):
        e = _read_journal(path)
        site = e.act.site
        if e.server not in adapters:
            results.append(RecoveryResult(site, "failed", vault.live_target(site),
                                          f"journal {path} names server {e.server!r}, "
                                          "which is not configured; left for the operator"))
            continue
        if e.phase == "activate":
            o = _wait_served({site: _expect(e.act, e.act.expected_sha256, e.previous,
                                            e.act.target)},
                             validate, time.monotonic(), settle + 1.0, settle)[site]
            if o.ok:
                vault.point_live(site, e.act.target)
                _forget(vault, site)
                results.append(RecoveryResult(site, "finished", e.act.target,
                                              "interrupted activation was complete: " + o.message))
                continue
        undo.setdefault(e.server, []).append(e)
    for server, entries in undo.items():
        adapter = adapters[server]
        changes = []
        for e in entries:
            dest = e.previous if e.previous is not None else e.act.target
            vault.point_live(e.act.site, dest)
            changes.append(LiveChange(e.act.site, vault.live_path(e.act.site), dest))
        err = ""
        try:
            adapter.apply(changes)
        except ServerError as exc:
            err = f"; apply failed: {exc}"
        expect = {e.act.site: _expect(e.act, _leaf_of(e.previous or e.act.target), e.act.target,
                                      e.previous or e.act.target) for e in entries}
        proven = _wait_served(expect, None, time.monotonic(), verify_timeout, settle)
        for e in entries:
            p = proven[e.act.site]
            what = "undone" if e.previous is not None else "finished"
            if p.ok and not err:
                _forget(vault, e.act.site)
                results.append(RecoveryResult(e.act.site, what, vault.live_target(e.act.site),
                                              f"{what} interrupted {e.phase}: {p.message}"))
            else:
                results.append(RecoveryResult(e.act.site, "failed", vault.live_target(e.act.site),
                                              f"could not restore a consistent state: "
                                              f"{p.message}{err}"))
    return results
