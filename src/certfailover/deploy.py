"""Activate certificates on a server, prove it with a handshake, roll back what does not verify.

One batch = the sites that change on ONE server in one tick:

    1. journal   ONE file <vault>/journal/_batch-<id>.json for the batch (atomic, every site's
                 entry with its phase), BEFORE anything changes
    2. flip      every site's live symlink -> its new archive dir (one rename each, then one
                 fsync of live/ for the batch, before apply)
    3. apply     adapter.apply(batch): one reload / hot swap for all sites
    4. verify    handshake at every endpoint of every site until the served leaf is the expected
                 one and validate() accepts the served chain (reloads are asynchronous:
                 steadily, for `settle` seconds; after a hot swap, apply() returning True,
                 one expected answer proves a site); a
                 small bounded pool of threads (PROBE_WORKERS) does the handshakes
    5. rollback  sites that did not verify in time: the batch journal rewritten with just them,
                 phase "rollback", flip back, apply once more for them, re-probe until the
                 previous leaf is served
                 (a chain switch, docs/chains.md: the same leaf in another chain directory of
                 the same certificate; then the served chain must be the expected one too)
    6. forget    remove the batch journal

Journals written by older versions (`<vault>/journal/<site>.json`, one per site) are still
read by `recover()`; when a site appears in several journals, the newest one holds (an older
entry for a site a new batch activates is dropped when that batch is journaled, as the
per-site file used to be overwritten).

If the process dies anywhere in between, the server still runs the state it loaded last (a
reload either happens completely or not at all), and `recover()` at start-up makes the store
agree with it: a site whose endpoints all serve the new leaf is finished; any other site is
undone (live flipped back, applied, re-probed).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    "PROBE_WORKERS",
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

#: handshakes in flight at once while verifying (pyOpenSSL releases the GIL in the handshake)
PROBE_WORKERS = 8
#: recover(): besides `settle` + 1 s, this much time per site to probe an interrupted batch
RECOVER_PROBE_S = 0.005


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


_BATCH_PREFIX = "_batch-"  # a site name starts with a letter or digit: no clash with <site>.json


@dataclass(frozen=True)
class _Entry:
    act: Activation
    server: str
    phase: str
    previous: Path | None


def _entry_json(e: _Entry) -> dict[str, Any]:
    return {
        "site": e.act.site, "server": e.server, "phase": e.phase,
        "previous": str(e.previous) if e.previous else None, "target": str(e.act.target),
        "expected_sha256": e.act.expected_sha256, "sni": e.act.sni, "key_type": e.act.key_type,
        "endpoints": [str(ep) for ep in e.act.endpoints],
    }


def _entry_of(raw: Any) -> _Entry:
    prev = raw["previous"]
    for key in ("site", "server", "phase", "target", "expected_sha256", "sni"):
        if not isinstance(raw[key], str):
            raise TypeError(f"{key!r} is not a string: {raw[key]!r}")
    act = Activation(site=raw["site"], target=Path(raw["target"]),
                     expected_sha256=raw["expected_sha256"],
                     endpoints=tuple(Endpoint.parse(e) for e in raw["endpoints"]),
                     sni=raw["sni"], key_type=raw.get("key_type"))
    return _Entry(act, str(raw["server"]), str(raw["phase"]), Path(prev) if prev else None)


def _journal_dir_ready(vault: Vault) -> Path:
    d = journal_dir(vault)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def _write_batch(path: Path, entries: Sequence[_Entry], seq: int) -> None:
    """One atomic write (temp file, fsync, rename, fsync of the directory) of all entries."""
    doc = {"version": 2, "seq": seq, "entries": [_entry_json(e) for e in entries]}
    atomic_write(path, json.dumps(doc, indent=0).encode(), mode=0o600)


def _read_journal(path: Path) -> tuple[int, list[_Entry]]:
    """(order, entries) of one journal file: a batch journal (order: when it was written) or a
    per-site journal of an older version (order -1: older than any batch). StoreError names the
    file when it is torn, garbage or incomplete."""
    try:
        raw: Any = json.loads(path.read_text())
        if isinstance(raw, dict) and "entries" in raw:
            return int(raw["seq"]), [_entry_of(e) for e in raw["entries"]]
        return -1, [_entry_of(raw)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"{path}: unreadable activation journal: {exc!r}") from exc


class _Batch:
    """The journal of one activate() call: one file, rewritten whole, removed at the end."""

    def __init__(self, vault: Vault, entries: Sequence[_Entry]) -> None:
        d = _journal_dir_ready(vault)
        older = _readable_journals(vault)  # as a rule none: only after a failed recovery
        # newer than every journal left, even if the wall clock went back
        self.seq = max([time.time_ns(), *(seq + 1 for seq, _ in older.values())])
        self.path = d / f"{_BATCH_PREFIX}{self.seq}-{uuid.uuid4().hex[:8]}.json"
        _write_batch(self.path, entries, self.seq)
        _supersede(older, {e.act.site for e in entries})

    def rewrite(self, entries: Sequence[_Entry]) -> None:
        _write_batch(self.path, entries, self.seq)

    def remove(self) -> None:
        _remove_journals([self.path])


def _remove_journals(paths: Sequence[Path]) -> None:
    """Unlink journal files, then ONE fsync of their directory."""
    removed = False
    for path in paths:
        try:
            path.unlink()
            removed = True
        except FileNotFoundError:
            pass
    if removed:
        fsync_dir(paths[0].parent)


def _readable_journals(vault: Vault) -> dict[Path, tuple[int, list[_Entry]]]:
    """The journal files that can be read (one that cannot is left for recover() to report)."""
    out = {}
    for path in pending_journals(vault):
        try:
            out[path] = _read_journal(path)
        except StoreError:
            continue
    return out


def _supersede(older: Mapping[Path, tuple[int, list[_Entry]]], sites: set[str]) -> None:
    """Drop the older journal entries of `sites`: the new batch journal holds them now."""
    gone: list[Path] = []
    for path, (seq, entries) in older.items():
        kept = [e for e in entries if e.act.site not in sites]
        if len(kept) == len(entries):
            continue
        if kept:  # a batch journal (a per-site one holds one site: all or nothing)
            _write_batch(path, kept, seq)
        else:
            gone.append(path)
    if gone:
        _remove_journals(gone)


def pending_journals(vault: Vault) -> list[Path]:
    """Every journal file left: batch journals and per-site journals of older versions."""
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
    if frm is None:
        return False
    a, b = Path(frm).resolve(), Path(to).resolve()  # each once: a batch has thousands
    return a != b and base_dir(a) == base_dir(b)


def _expect(act: Activation, sha: str, frm: Path | None,
            to: Path) -> tuple[Activation, str, Chain | None]:
    return act, sha, _chain_of(to) if _chain_switch(frm, to) else None


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    message: str
    first_seen: float  # seconds since t0 of the first handshake showing the expected leaf


Probe = tuple[float, str, Endpoint, list[x509.Certificate] | Exception]  # (done at, site, ...)


def _wait_served(items: Mapping[str, tuple[Activation, str, Chain | None]],
                 validate: Validate | None, t0: float, timeout: float,
                 settle: float, workers: int = PROBE_WORKERS) -> dict[str, _Outcome]:
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

    Each round handshakes once for every site at every endpoint where it is not yet proven,
    at most `workers` at a time (a thread pool of that size, for this call only); the answers
    are then judged in this thread in the order the handshakes completed, each at its
    completion time, exactly as one handshake after the other would be. An endpoint where the
    previous round showed no expected answer (the first round; a reload still under way) is
    asked for one site only, each round the next one: a reload that takes seconds costs one
    handshake per round there, not one per site. Rounds repeat (10 ms apart) until all is
    proven or `timeout` has passed; each handshake gets what is left of it, between 1 and 2 s.
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

    def probe(job: tuple[str, Endpoint]) -> Probe:
        site, ep = job
        act = items[site][0]
        per_probe = max(1.0, min(2.0, deadline - time.monotonic()))
        try:
            chain = served_chain(ep, act.sni, timeout=per_probe, key_type=act.key_type)
        except (ProbeError, OSError) as exc:
            return time.monotonic(), site, ep, exc
        return time.monotonic(), site, ep, chain

    n_jobs = sum(len(eps) for eps in todo.values())
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, n_jobs)),
                              thread_name_prefix="probe") if workers > 1 and n_jobs > 1 else None
    live_eps: set[Endpoint] = set()  # endpoints with an expected answer in the last round
    turn = 0
    try:
        while True:
            jobs: list[tuple[str, Endpoint]] = []
            asleep: dict[Endpoint, list[tuple[str, Endpoint]]] = {}
            for site in items:
                if site not in failed:
                    for ep in sorted(todo[site], key=str):
                        (jobs if ep in live_eps else asleep.setdefault(ep, [])).append((site, ep))
            jobs += [waiting[turn % len(waiting)] for waiting in asleep.values()]
            turn += 1
            answers = list(pool.map(probe, jobs) if pool is not None else map(probe, jobs))
            answers.sort(key=lambda a: a[0])  # stable: sequential probing keeps its order
            live_eps = set()
            for now, site, ep, res in answers:
                if site in failed:
                    continue
                act, sha, want_chain = items[site]
                if isinstance(res, Exception):
                    unexpected(site, ep, str(res))
                    continue
                chain = res
                got = leaf_sha256(chain[0])
                if got != sha:
                    unexpected(site, ep, f"{ep} serves leaf {got[:16]}…, expected {sha[:16]}…")
                    continue
                served = tuple(leaf_sha256(c) for c in chain[1:])
                if want_chain is not None and served != want_chain:
                    # the same leaf, still with the old chain
                    unexpected(site, ep, f"{ep} serves the expected leaf with another chain")
                    continue
                live_eps.add(ep)
                first.setdefault(site, now - t0)
                if validate is not None and (site, served) not in judged:
                    judged[(site, served)] = validate(chain, act.sni)
                err = judged.get((site, served))
                if err is not None:  # the right leaf that does not validate will not improve
                    failed[site] = f"{ep} serves the expected leaf but it does not validate: {err}"
                    continue
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
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
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
             on_phase: Phase = _noop, probe_workers: int = PROBE_WORKERS
             ) -> list[ActivationResult]:
    """Flip, apply once, prove by handshake; roll back the sites that do not verify.

    `settle`: how long every handshake at an endpoint must show the expected leaf.
    `on_phase` is called with each phase name (journal, flip, apply, verify, rollback-…, done).
    `probe_workers`: handshakes in flight at once while verifying (1: one after the other).
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
    journal = _Batch(vault, [_Entry(a, adapter.name, "activate", previous[a.site])
                             for a in batch])
    on_phase("flip")
    _point_all(vault, [(a.site, a.target) for a in batch])
    on_phase("apply")
    try:
        swapped = adapter.apply([LiveChange(a.site, vault.live_path(a.site), a.target)
                                 for a in batch]) is True
    except ServerConfigError as exc:
        # the server refused the new state and still runs the old one: only the store goes back
        on_phase("config-error")
        _point_all(vault, [(a.site, previous[a.site] or a.target) for a in batch
                           if previous[a.site] is not None])
        journal.remove()
        return [ActivationResult(a.site, False, previous[a.site] is not None, previous[a.site],
                                 f"config test failed: {exc}", -1.0) for a in batch]
    except ServerError as exc:
        on_phase("apply-error")
        return _rollback(vault, adapter, journal, list(batch), previous,
                         {a.site: f"apply failed: {exc}" for a in batch}, {}, verify_timeout,
                         settle, on_phase, probe_workers)
    on_phase("verify")
    outcomes = _wait_served({a.site: _expect(a, a.expected_sha256, previous[a.site], a.target)
                             for a in batch}, validate, t0, verify_timeout,
                            0.0 if swapped else settle,  # a hot swap: one answer proves it
                            probe_workers)
    results = [ActivationResult(a.site, True, False, previous[a.site], outcomes[a.site].message,
                                outcomes[a.site].first_seen)
               for a in batch if outcomes[a.site].ok]
    bad = [a for a in batch if not outcomes[a.site].ok]
    if bad:
        results += _rollback(vault, adapter, journal, bad, previous,
                             {a.site: outcomes[a.site].message for a in bad},
                             {a.site: outcomes[a.site].first_seen for a in bad},
                             verify_timeout, settle, on_phase, probe_workers)
    else:
        journal.remove()
    on_phase("done")
    order = {s: i for i, s in enumerate(sites)}
    return sorted(results, key=lambda r: order[r.site])


def _point_all(vault: Vault, links: Sequence[tuple[str, Path]]) -> None:
    """Point each live link (one atomic rename each), then fsync live/ once, also when one of
    them fails (the journal covers every site either way)."""
    vault.point_live_many(links)


def _rollback(vault: Vault, adapter: ServerAdapter, journal: _Batch, bad: list[Activation],
              previous: Mapping[str, Path | None], why: Mapping[str, str],
              seen: Mapping[str, float], verify_timeout: float, settle: float,
              on_phase: Phase, probe_workers: int) -> list[ActivationResult]:
    on_phase("rollback-journal")
    # the verified sites leave the journal, the others are marked "rollback" (always undone)
    journal.rewrite([_Entry(a, adapter.name, "rollback", previous[a.site]) for a in bad])
    on_phase("rollback-flip")
    back = [a for a in bad if previous[a.site] is not None]
    _point_all(vault, [(a.site, previous[a.site] or a.target) for a in back])
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
    proven = _wait_served(olds, None, time.monotonic(), verify_timeout, settle,
                          probe_workers) if olds else {}
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
    journal.remove()
    return results


# -- crash recovery -----------------------------------------------------------------------------

def recover(vault: Vault, adapters: Mapping[str, ServerAdapter], *, validate: Validate,
            verify_timeout: float = 10.0, settle: float = 0.3,
            probe_workers: int = PROBE_WORKERS) -> list[RecoveryResult]:
    """Finish or undo activations interrupted by a crash, judged by what the server serves.

    A site in phase "activate" whose every endpoint serves the new leaf (and validates) is
    finished: live stays on the new certificate. Every other site is undone: live back to the
    previous certificate, the adapter applied once per server, the previous leaf re-probed.

    Reads batch journals and the per-site journals of older versions; a site in several holds
    its newest entry. The sites of one server in phase "activate" are probed together, for
    `settle` + 1 s + RECOVER_PROBE_S per site. A journal file is removed once all its sites
    are finished or undone; the entries of sites that failed stay in it for the next start.
    A journal that cannot be read raises StoreError naming the file (nothing is changed).
    """
    results: list[RecoveryResult] = []
    live_dir = vault.root / "live"
    if live_dir.is_dir():
        for stray in live_dir.glob(".*.tmp"):  # a symlink rename interrupted by the crash
            stray.unlink(missing_ok=True)
    files = {path: _read_journal(path) for path in pending_journals(vault)}
    newest: dict[str, tuple[int, Path, _Entry]] = {}
    for path, (seq, entries) in sorted(files.items(), key=lambda kv: (kv[1][0], str(kv[0]))):
        for e in entries:
            newest[e.act.site] = (seq, path, e)  # later (newer) files win
    open_sites: set[str] = set()  # sites whose entry stays journaled ("failed")
    todo: dict[str, list[_Entry]] = {}
    for site, (_, path, e) in newest.items():
        if e.server not in adapters:
            open_sites.add(site)
            results.append(RecoveryResult(site, "failed", vault.live_target(site),
                                          f"journal {path} names server {e.server!r}, "
                                          "which is not configured; left for the operator"))
            continue
        todo.setdefault(e.server, []).append(e)
    for server, entries in todo.items():
        adapter = adapters[server]
        started = [e for e in entries if e.phase == "activate"]
        done: dict[str, _Outcome] = {}
        if started:
            done = _wait_served({e.act.site: _expect(e.act, e.act.expected_sha256, e.previous,
                                                     e.act.target) for e in started},
                                validate, time.monotonic(),
                                settle + 1.0 + RECOVER_PROBE_S * len(started), settle,
                                probe_workers)
        finished = [e for e in started if done[e.act.site].ok]
        _point_all(vault, [(e.act.site, e.act.target) for e in finished])
        for e in finished:
            results.append(RecoveryResult(e.act.site, "finished", e.act.target,
                                          "interrupted activation was complete: "
                                          + done[e.act.site].message))
        undo = [e for e in entries if e.act.site not in done or not done[e.act.site].ok]
        if undo:
            results += _undo(vault, adapter, undo, open_sites, verify_timeout, settle,
                             probe_workers)
    gone: list[Path] = []
    for path, (seq, entries) in files.items():
        kept = [e for e in entries
                if e.act.site in open_sites and newest[e.act.site][1] == path]
        if not kept:
            gone.append(path)
        elif len(kept) != len(entries):
            _write_batch(path, kept, seq if seq >= 0 else time.time_ns())
    if gone:
        _remove_journals(gone)
    return results


def _undo(vault: Vault, adapter: ServerAdapter, entries: Sequence[_Entry], open_sites: set[str],
          verify_timeout: float, settle: float, probe_workers: int) -> list[RecoveryResult]:
    """Live back to the previous certificate (or on to the target when there is none), one
    apply, re-probe; a site that cannot be proven goes to `open_sites` (its journal stays)."""
    results: list[RecoveryResult] = []
    dest = {e.act.site: e.previous if e.previous is not None else e.act.target for e in entries}
    _point_all(vault, list(dest.items()))
    err = ""
    try:
        adapter.apply([LiveChange(site, vault.live_path(site), d) for site, d in dest.items()])
    except ServerError as exc:
        err = f"; apply failed: {exc}"
    expect = {e.act.site: _expect(e.act, _leaf_of(dest[e.act.site]), e.act.target,
                                  dest[e.act.site]) for e in entries}
    proven = _wait_served(expect, None, time.monotonic(), verify_timeout, settle, probe_workers)
    for e in entries:
        p = proven[e.act.site]
        what = "undone" if e.previous is not None else "finished"
        if p.ok and not err:
            results.append(RecoveryResult(e.act.site, what, vault.live_target(e.act.site),
                                          f"{what} interrupted {e.phase}: {p.message}"))
        else:
            open_sites.add(e.act.site)
            results.append(RecoveryResult(e.act.site, "failed", vault.live_target(e.act.site),
                                          f"could not restore a consistent state: "
                                          f"{p.message}{err}"))
    return results
