"""The agent: applies the desired certificate of each site to the servers on its own host.

One `sync()`:

    1. read the desired certificate and chain of this host's sites (`fleet_desired`, one
       query);
    2. for each site whose verified leaf or chain differs: find the desired chain's directory
       in the host's vault (chain 0 is the archive directory, chain i `chains/<i>`, as on the
       controller; a chain is named by `sealed.chain_digest`, not by its index); when it is not
       there, unseal the certificate's record (`fleet_sealed`, one query: leaf, key and every
       stored chain) and write it (`Vault.save`: atomic, key 0600), or add the chains the
       vault lacks to a certificate already there (`Vault.add_chain`);
    3. per server, ONE `deploy.activate` batch: journal, flip live links, one reload / hot swap,
       prove every site by handshake at this host's endpoints (a chain switch, the same leaf
       in another chain directory, by the served chain too), roll back what does not verify;
    4. report per site what this host verifiably serves (`fleet_served`: leaf SHA-256, chain
       digest, verified at, error) and a heartbeat for all its sites;
    5. prefetch: unseal and write into the vault the sealed records of this host's sites that
       are not there yet (the standbys the controllers sealed), at most `prefetch` per pass, in
       slices that stop as soon as a notice arrives. A later switch to a prefetched
       certificate unseals nothing: it is a flip, one reload and the handshake proof.

A site whose material is missing, does not unseal or cannot be written fails alone (reported
with the certificate id and the cause); the other sites of the pass go on. A site that failed
is not tried again with the same desired certificate before its backoff delay (`backoff`:
first delay and cap, doubling per failure) has passed; a new desired certificate is tried at
once. The delay is in the reported error text.

`run()` repeats sync on every NOTIFY from a controller, and every `poll` seconds as the
fallback. When the database cannot be reached the agent changes nothing: the servers keep the
last verified certificate, `stale_since` says since when, and `fleet status` shows the host's
reports getting old. A crash mid-switch is finished or undone at start by `deploy.recover`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .. import deploy
from ..backoff import Backoff
from ..errors import CertFailoverError, StoreError
from ..probe import leaf_sha256
from ..servers.base import Endpoint, ServerAdapter
from ..store.db import fleet_desired, fleet_sealed, fleet_served
from ..store.vault import Vault, chain_dirs
from . import sealed
from .coord import Listener, attempt, attempt_failed, chunks
from .sealed import Keyring

__all__ = ["Agent", "AgentSite", "SyncResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSite:
    """A site as this host serves it."""

    name: str
    server: str
    endpoints: tuple[Endpoint, ...]
    sni: str
    key_type: str | None = None  # "ec"/"rsa" when the server holds a dual pair for the name


@dataclass(frozen=True)
class SyncResult:
    checked: int  # sites with a desired certificate
    changed: tuple[str, ...]  # sites switched and verified
    failed: Mapping[str, str] = field(default_factory=dict)  # site -> why (rolled back)
    applies: Mapping[str, int] = field(default_factory=dict)  # server -> apply batches
    queries: int = 0
    seconds: Mapping[str, float] = field(default_factory=dict)  # phase -> time spent
    prefetched: int = 0  # sealed records unsealed and written ahead of their switch
    prefetch_failed: Mapping[str, str] = field(default_factory=dict)  # cert id -> why
    deferred: Mapping[str, str] = field(default_factory=dict)  # site -> its backoff (not tried)


# a site's desired state: certificate id, leaf SHA-256, chain digest (None: any chain, a row
# published before schema 9)
_Want = tuple[str, str, str | None]


def _split(cert_id: str) -> tuple[str, str, str]:
    site, ca, serial = cert_id.split("/")
    return site, ca, serial


def _cause(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) or not text else text


class Agent:
    def __init__(self, host: str, engine: sa.Engine, ring: Keyring, vault: Vault,
                 adapters: Mapping[str, ServerAdapter], sites: Sequence[AgentSite], *,
                 validate: deploy.Validate, verify_timeout: float = 10.0,
                 settle: float = 0.3, writers: int = 8, prefetch: int = 2000,
                 backoff: tuple[float, float] = (5.0, 300.0),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.writers = writers
        self.prefetch_batch = prefetch  # records per pass (0: no prefetch)
        self.prefetch_slice = 100  # records between two looks for a waiting notice
        self.clock = clock
        # site -> its wait after a failed switch (target: the attempt), on self.clock
        self._retry: Backoff[str] = Backoff(*backoff)
        # (cert id, sealed at) -> its wait after it failed to unseal or be written
        self._prefetch_retry: Backoff[tuple[str, datetime]] = Backoff(*backoff)
        self._in_vault: set[str] = set()  # certificate ids known to be in the vault
        # set by run(): True when a notice is waiting (prefetch then yields to the switch)
        self.interrupted: Callable[[], bool] = lambda: False
        self.host, self.engine, self.ring, self.vault = host, engine, ring, vault
        self.adapters, self.validate = adapters, validate
        self.sites = {s.name: s for s in sites}
        for s in sites:
            if s.server not in adapters:
                raise StoreError(f"agent {host}: site {s.name!r} names server {s.server!r}, "
                                 "which is not configured")
        self.verify_timeout, self.settle = verify_timeout, settle
        self.verified: dict[str, str] = {}  # site -> leaf SHA-256 this host proved it serves
        self.verified_chain: dict[str, str | None] = {}  # site -> the chain proved with it
        self._digests: dict[Path, str | None] = {}  # chain directory -> its chain digest
        self.stale_since: datetime | None = None
        self.last_error = ""
        self.last_switch: SyncResult | None = None  # the last pass that had work

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Finish or undo a switch a crash interrupted, then register this host's sites (a row
        per site in `fleet_served`, keeping earlier reports) and load what it last verified."""
        self.vault.ensure()
        notes = [f"{r.site}: {r.action}: {r.message}" for r in
                 deploy.recover(self.vault, {a.name: a for a in self.adapters.values()},
                                validate=self.validate,
                                verify_timeout=self.verify_timeout, settle=self.settle)]
        now = datetime.now(UTC)
        fresh = [{"host": self.host, "site": s, "sha256": None, "verified_at": None,
                  "error": "registered, nothing verified yet", "reported": now}
                 for s in sorted(self.sites)]
        with self.engine.begin() as conn:
            for part in chunks(fresh):
                conn.execute(pg_insert(fleet_served).values(part).on_conflict_do_nothing())
            rows = [r for r in conn.execute(
                sa.select(fleet_served.c.site, fleet_served.c.sha256, fleet_served.c.chain)
                .where(fleet_served.c.host == self.host)) if r.sha256 and r.site in self.sites]
            self.verified = {r.site: r.sha256 for r in rows}
            self.verified_chain = {r.site: r.chain for r in rows}
        if notes:  # recovery changed what is served: prove everything again
            self.verified, self.verified_chain = {}, {}
        return notes

    def stage(self) -> int:
        """Before the servers first start: write and link the desired material of every site
        that has no live link yet (a web server cannot start on a missing certificate)."""
        with self.engine.connect() as conn:
            desired = self._desired(conn)
            todo = {s: d for s, d in desired.items() if self.vault.live_target(s) is None}
            records, missing = self._fetch(conn, todo)
        errors = self._write(records)
        failed = {s: missing.get(cid) or errors[cid] for s, (cid, _, _) in todo.items()
                  if cid in missing or cid in errors}
        for site, (cert_id, _, chain) in todo.items():
            if site not in failed:
                target = self._target(cert_id, chain)
                if target is None:
                    failed[site] = self._no_chain(cert_id, chain)
                else:
                    self.vault.point_live(site, target)
        if failed:
            raise StoreError(f"agent {self.host}: {len(todo) - len(failed)} site(s) staged, "
                             f"{len(failed)} not: " + "; ".join(
                                 f"{s}: {why}" for s, why in sorted(failed.items())[:10]))
        return len(todo)

    # -- one pass ------------------------------------------------------------------------------
    def _desired(self, conn: sa.Connection) -> dict[str, _Want]:
        out: dict[str, _Want] = {}
        for part in chunks(sorted(self.sites), 5000):
            out.update((r.site, (r.cert_id, r.sha256, r.chain)) for r in conn.execute(
                sa.select(fleet_desired.c.site, fleet_desired.c.cert_id, fleet_desired.c.sha256,
                          fleet_desired.c.chain)
                .where(fleet_desired.c.site.in_(part))))
        return out

    def _digest(self, directory: Path) -> str | None:
        """The chain digest of a chain directory of the vault (None: unreadable); its files
        never change once written, so it is computed once."""
        if directory not in self._digests:
            try:
                self._digests[directory] = sealed.chain_digest(
                    (directory / "chain.pem").read_bytes())
            except (OSError, ValueError):
                return None
        return self._digests[directory]

    def _target(self, cert_id: str, chain: str | None) -> Path | None:
        """The vault directory serving `cert_id` with `chain` (None: chain 0), or None when
        the vault does not hold it (yet)."""
        try:
            base = self.vault.archive_dir(*_split(cert_id))
        except (ValueError, StoreError):
            return None
        if not (base / "privkey.pem").is_file():
            return None
        if chain is None:
            return base
        try:
            dirs = chain_dirs(base)
        except OSError:
            return None
        return next((d for d in dirs if (d / "privkey.pem").is_file()
                     and self._digest(d) == chain), None)

    def _no_chain(self, cert_id: str, chain: str | None) -> str:
        held: list[str] = []
        try:
            held = [self._digest(d) or "unreadable"
                    for d in chain_dirs(self.vault.archive_dir(*_split(cert_id)))]
        except (OSError, ValueError, StoreError):
            pass
        return (f"certificate {attempt(cert_id, chain)}: that chain is neither in its sealed "
                f"record nor in the vault (chains here: "
                f"{', '.join(h[:16] for h in held) or 'none'})")

    def _has(self, cert_id: str) -> bool:
        """The certificate's material is in the vault (nothing is ever removed from it)."""
        if cert_id in self._in_vault:
            return True
        try:
            there = (self.vault.archive_dir(*_split(cert_id)) / "privkey.pem").is_file()
        except (ValueError, StoreError):
            return False
        if there:
            self._in_vault.add(cert_id)
        return there

    def _fetch(self, conn: sa.Connection, todo: Mapping[str, _Want]
               ) -> tuple[dict[str, sealed.Sealed], dict[str, str]]:
        """The sealed records of the certificates (with the chain) not in the vault yet (one
        query per 1,000), and cert id -> why for those the database has no record of."""
        need = {cid for cid, _, chain in todo.values() if self._target(cid, chain) is None}
        records = sealed.load_many(conn, sorted(need)) if need else {}
        missing = {cid: f"certificate {cid}: no sealed material in the database (fleet_sealed)"
                   for cid in sorted(need - set(records))}
        return records, missing

    def _write(self, records: Mapping[str, sealed.Sealed]) -> dict[str, str]:
        """Unseal and save into the vault, after the database connection went back to the
        pool (writing thousands of directories must not hold a transaction open). Returns
        cert id -> why for the records that could not be unsealed or written (a wrong or
        unknown KEK, a tampered record, a full or read-only disk): the others are written. A
        certificate already in the vault gets the record's chains it lacks (`add_chain`)."""
        def write(cid: str) -> str | None:
            try:
                plain = sealed.open_record(self.ring, records[cid])
                site, ca, serial = _split(cid)
                base = self.vault.archive_dir(site, ca, serial)
                if not (base / "privkey.pem").is_file():
                    if plain.alt_chains:
                        self.vault.save(site, ca, serial, leaf_pem=plain.cert_pem,
                                        chain_pem=plain.chain_pem, key_pem=plain.key_pem,
                                        alt_chains_pem=plain.alt_chains)
                    else:
                        self.vault.save(site, ca, serial, leaf_pem=plain.cert_pem,
                                        chain_pem=plain.chain_pem, key_pem=plain.key_pem)
                else:
                    here = {self._digest(d) for d in chain_dirs(base)}
                    for pem in plain.chains:
                        if sealed.chain_digest(pem) not in here:
                            self._digest(self.vault.add_chain(base, pem))
            except sealed.SealError as exc:
                return f"certificate {cid}: cannot unseal: {_cause(exc)}"
            except (OSError, CertFailoverError, ValueError) as exc:
                return f"certificate {cid}: cannot write it into the vault: {_cause(exc)}"
            self._in_vault.add(cid)
            return None

        # each save fsyncs its files and directories: threads overlap that I/O (one site's
        # directory per thread at a time; a site has one desired certificate)
        ids = sorted(records)
        with ThreadPoolExecutor(max_workers=max(1, self.writers)) as pool:
            errors = {cid: why for cid, why in zip(ids, pool.map(write, ids), strict=True)
                      if why is not None}
        for why in errors.values():
            log.warning("agent %s: %s", self.host, why)
        return errors

    def sync(self) -> SyncResult:
        """One pass (see the module docstring). Raises StoreError when the database cannot be
        read: nothing on this host changes then."""
        queries = 0
        t0 = time.monotonic()
        spent: dict[str, float] = {}
        now = self.clock()
        deferred: dict[str, str] = {}
        try:
            with self.engine.connect() as conn:
                desired = self._desired(conn)
                queries += 1
                todo: dict[str, _Want] = {}
                for site, (cert_id, sha, chain) in desired.items():
                    if self.verified.get(site) == sha and \
                            (chain is None or self.verified_chain.get(site) == chain):
                        self._retry.forget(site)
                        continue
                    wait = self._retry.waiting(site, attempt(cert_id, chain), now)
                    if wait is not None:
                        deferred[site] = wait.note  # failed with this certificate: not yet again
                        continue
                    todo[site] = (cert_id, sha, chain)
                records, missing = self._fetch(conn, todo) if todo else ({}, {})
                queries += 1 if records or missing else 0
        except sa.exc.SQLAlchemyError as exc:
            self._stale(exc)
            raise StoreError(f"agent {self.host}: cannot read the database: {exc}") from exc
        spent["read"] = time.monotonic() - t0
        unwritable = {**missing, **self._write(records)}
        spent["unseal_and_write"] = time.monotonic() - t0 - spent["read"]
        failed: dict[str, str] = {}
        changed: list[str] = []
        applies: dict[str, int] = {}
        by_server: dict[str, list[deploy.Activation]] = defaultdict(list)
        for site, (cert_id, sha, chain) in sorted(todo.items()):
            if cert_id in unwritable:  # this site alone: the others of the pass go on
                failed[site] = unwritable[cert_id]
                continue
            target = self._target(cert_id, chain)
            if target is None:  # the record lacks that chain (or the vault lost it)
                failed[site] = self._no_chain(cert_id, chain)
                continue
            s = self.sites[site]
            by_server[s.server].append(deploy.Activation(
                site=site, target=target, expected_sha256=sha,
                endpoints=s.endpoints, sni=s.sni, key_type=s.key_type))
        t1 = time.monotonic()
        for server, batch in sorted(by_server.items()):
            applies[server] = 1
            try:
                results = deploy.activate(self.vault, self.adapters[server], batch,
                                          validate=self.validate,
                                          verify_timeout=self.verify_timeout, settle=self.settle)
            except CertFailoverError as exc:
                failed.update({a.site: f"{server}: {exc}" for a in batch})
                continue
            for r, a in zip(results, batch, strict=True):
                if r.ok:
                    self.verified[r.site] = a.expected_sha256
                    self.verified_chain[r.site] = self._digest(a.target)
                    self._retry.forget(r.site)
                    changed.append(r.site)
                else:
                    failed[r.site] = r.message
                    if r.rolled_back:
                        applies[server] += 1
        spent["switch_and_verify"] = time.monotonic() - t1
        for site in failed:
            failed[site] += self._back_off(site, attempt(todo[site][0], todo[site][2]))
        t1 = time.monotonic()
        try:
            queries += self._report(changed, failed)
        except sa.exc.SQLAlchemyError as exc:
            self._stale(exc)
            raise StoreError(f"agent {self.host}: cannot report to the database: {exc}") from exc
        spent["report"] = time.monotonic() - t1
        self.stale_since, self.last_error = None, ""
        if todo:
            log.info("agent %s: %d switched, %d failed; %s", self.host, len(changed),
                     len(failed), ", ".join(f"{k} {v:.2f}s" for k, v in spent.items()))
        t1 = time.monotonic()
        prefetched, prefetch_failed = 0, dict[str, str]()
        if self.prefetch_batch > 0 and not self.interrupted():
            try:
                prefetched, prefetch_failed, n = self.prefetch(self.prefetch_batch)
                queries += n
            except StoreError as exc:  # the switch is done and reported: only staging waits
                log.warning("%s", exc)
        spent["prefetch"] = time.monotonic() - t1
        result = SyncResult(len(desired), tuple(changed), failed, applies, queries, spent,
                            prefetched, prefetch_failed, deferred)
        if todo:
            self.last_switch = result
        return result

    # -- backoff -------------------------------------------------------------------------------
    def _back_off(self, site: str, cert_id: str) -> str:
        """Record a failed attempt of `site` with `cert_id`; returns the note for its error."""
        def note(attempts: int, delay: float) -> str:
            when = datetime.now(UTC) + timedelta(seconds=delay)
            return (f" [backoff: attempt {attempts} {attempt_failed(cert_id)}; next try in "
                    f"{delay:g} s (after {when:%H:%M:%S} UTC), at once if another certificate "
                    "is desired]")
        return self._retry.failed(site, cert_id, self.clock(), note).note

    def next_retry(self) -> float | None:
        """Seconds until the earliest backed-off site may be tried again (None: none waits)."""
        return self._retry.next_retry(self.clock())

    # -- prefetch ------------------------------------------------------------------------------
    def prefetch(self, limit: int, *, slice_size: int | None = None
                 ) -> tuple[int, dict[str, str], int]:
        """Unseal and write into the vault up to `limit` sealed records of this host's sites
        that are not in it yet (the standbys). Works in slices of `slice_size` and stops early
        when `self.interrupted()` says a notice is waiting: a switch never waits for it.
        A record that fails (wrong KEK, tampered, disk full) is logged and skipped until its
        backoff delay has passed or it is sealed again. Returns (written, cert id -> why,
        queries); StoreError when the database cannot be read."""
        now = self.clock()
        todo: list[tuple[str, datetime]] = []
        queries = 0
        try:
            with self.engine.connect() as conn:
                for names in chunks(sorted(self.sites), 5000):
                    queries += 1
                    for r in conn.execute(
                            sa.select(fleet_sealed.c.cert_id, fleet_sealed.c.site,
                                      fleet_sealed.c.sealed_at)
                            .where(fleet_sealed.c.site.in_(names))
                            .order_by(fleet_sealed.c.sealed_at.desc())):
                        cid = str(r.cert_id)
                        if cid in self._in_vault or cid.count("/") != 2 \
                                or _split(cid)[0] != r.site:
                            continue
                        if self._prefetch_retry.waiting((cid, r.sealed_at), cid, now):
                            continue
                        if not self._has(cid):
                            todo.append((cid, r.sealed_at))
                            if len(todo) >= limit:
                                break
                    if len(todo) >= limit:
                        break
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"agent {self.host}: prefetch: cannot read the database: "
                             f"{str(exc).splitlines()[0]}") from exc
        written, failed = 0, dict[str, str]()
        slice_size = max(1, slice_size or self.prefetch_slice)
        for i in range(0, len(todo), slice_size):
            if i and self.interrupted():
                break  # a switch is waiting: the rest waits for the next pass
            part = todo[i:i + slice_size]
            try:
                with self.engine.connect() as conn:
                    records = sealed.load_many(conn, [cid for cid, _ in part])
                queries += 1
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(f"agent {self.host}: prefetch: cannot read the database: "
                                 f"{str(exc).splitlines()[0]}") from exc
            errors = self._write(records)
            for cid, at in part:
                if cid not in records:
                    continue  # removed since the listing: nothing to stage
                if cid in errors:
                    self._prefetch_retry.failed((cid, at), cid, self.clock())
                    failed[cid] = errors[cid]
                else:
                    self._prefetch_retry.forget((cid, at))
                    written += 1
        if written or failed:
            log.info("agent %s: prefetched %d certificate(s) into the vault, %d failed",
                     self.host, written, len(failed))
        return written, failed, queries

    def _stale(self, exc: BaseException) -> None:
        if self.stale_since is None:
            self.stale_since = datetime.now(UTC)
        self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("agent %s: database unreachable, serving the last verified certificates "
                    "(%s)", self.host, self.last_error)

    def _report(self, changed: Sequence[str], failed: Mapping[str, str]) -> int:
        now = datetime.now(UTC)
        rows = [{"host": self.host, "site": s, "sha256": self.verified.get(s),
                 "chain": self.verified_chain.get(s), "verified_at": now, "error": "",
                 "reported": now} for s in changed]
        rows += [{"host": self.host, "site": s, "sha256": self.verified.get(s),
                  "chain": self.verified_chain.get(s), "verified_at": None,
                  "error": why[:2000], "reported": now}
                 for s, why in failed.items()]
        with self.engine.begin() as conn:
            for part in chunks(rows):
                ins = pg_insert(fleet_served).values(part)
                keep_verified = sa.func.coalesce(ins.excluded.verified_at,
                                                 fleet_served.c.verified_at)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["host", "site"],
                    set_={"sha256": ins.excluded.sha256, "chain": ins.excluded.chain,
                          "verified_at": keep_verified,
                          "error": ins.excluded.error, "reported": ins.excluded.reported}))
            # the heartbeat (this host is in touch) for the rows not just written
            conn.execute(fleet_served.update().where(fleet_served.c.host == self.host,
                                                     fleet_served.c.reported < now)
                         .values(reported=now))
        return 1 + len(chunks(rows))

    # -- the loop ------------------------------------------------------------------------------
    def run(self, url: str, stop: threading.Event, *, poll: float = 30.0,
            retry: float = 5.0) -> None:
        """Sync now, then on every NOTIFY, when a backed-off site may be tried again, and at
        least every `poll` seconds, until `stop`."""
        listener = Listener(url, app=f"certfailover agent {self.host}")
        woken = False

        def interrupted() -> bool:  # prefetch yields to a waiting notice (and to stop)
            nonlocal woken
            if stop.is_set() or woken:
                return True
            try:
                woken = bool(listener.wait(0))
            except StoreError:
                return False  # the loop below reconnects
            return woken

        self.interrupted = interrupted
        try:
            while not stop.is_set():
                woken = False
                try:
                    self.sync()
                except StoreError as exc:
                    log.warning("%s", exc)
                    stop.wait(retry)
                    continue
                if woken:
                    continue  # a notice arrived during the prefetch: sync again at once
                backoff = self.next_retry()
                until = time.monotonic() + (poll if backoff is None else min(poll, backoff))
                try:  # short slices: `stop` is seen within a second
                    while not stop.is_set() and time.monotonic() < until:
                        if listener.wait(min(1.0, max(0.0, until - time.monotonic()))):
                            break
                except StoreError as exc:
                    self._stale(exc)
                    stop.wait(retry)
        finally:
            self.interrupted = lambda: False
            listener.close()

    def live_sha(self, site: str) -> str | None:
        """The leaf SHA-256 the live link of `site` points at (what the servers load)."""
        target = self.vault.live_target(site)
        if target is None:
            return None
        return leaf_sha256(self.vault.load(Path(target)).leaf)

    def live_chain(self, site: str) -> str | None:
        """The chain digest of the directory the live link of `site` points at."""
        target = self.vault.live_target(site)
        return None if target is None else self._digest(Path(target))
