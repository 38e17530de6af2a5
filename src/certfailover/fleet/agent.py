"""The agent: applies the desired certificate of each site to the servers on its own host.

One `sync()`:

    1. read the desired certificate of this host's sites (`fleet_desired`, one query);
    2. for each site whose verified leaf differs: unseal its material (`fleet_sealed`, one
       query) and write it to the host's own vault (`Vault.save`: atomic, key 0600);
    3. per server, ONE `deploy.activate` batch: journal, flip live links, one reload / hot swap,
       prove every site by handshake at this host's endpoints, roll back what does not verify;
    4. report per site what this host verifiably serves (`fleet_served`: leaf SHA-256, verified
       at, error) and a heartbeat for all its sites.

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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .. import deploy
from ..errors import CertFailoverError, StoreError
from ..probe import leaf_sha256
from ..servers.base import Endpoint, ServerAdapter
from ..store.db import fleet_desired, fleet_served
from ..store.vault import Vault
from . import sealed
from .coord import Listener, chunks
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


def _split(cert_id: str) -> tuple[str, str, str]:
    site, ca, serial = cert_id.split("/")
    return site, ca, serial


class Agent:
    def __init__(self, host: str, engine: sa.Engine, ring: Keyring, vault: Vault,
                 adapters: Mapping[str, ServerAdapter], sites: Sequence[AgentSite], *,
                 validate: deploy.Validate, verify_timeout: float = 10.0,
                 settle: float = 0.3, writers: int = 8) -> None:
        self.writers = writers
        self.host, self.engine, self.ring, self.vault = host, engine, ring, vault
        self.adapters, self.validate = adapters, validate
        self.sites = {s.name: s for s in sites}
        for s in sites:
            if s.server not in adapters:
                raise StoreError(f"agent {host}: site {s.name!r} names server {s.server!r}, "
                                 "which is not configured")
        self.verify_timeout, self.settle = verify_timeout, settle
        self.verified: dict[str, str] = {}  # site -> leaf SHA-256 this host proved it serves
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
            rows = conn.execute(sa.select(fleet_served.c.site, fleet_served.c.sha256)
                                .where(fleet_served.c.host == self.host))
            self.verified = {r.site: r.sha256 for r in rows if r.sha256 and r.site in self.sites}
        if notes:
            self.verified = {}  # recovery changed what is served: prove everything again
        return notes

    def stage(self) -> int:
        """Before the servers first start: write and link the desired material of every site
        that has no live link yet (a web server cannot start on a missing certificate)."""
        with self.engine.connect() as conn:
            desired = self._desired(conn)
            todo = {s: d for s, d in desired.items() if self.vault.live_target(s) is None}
            records = self._fetch(conn, todo)
        self._write(records)
        for site, (cert_id, _) in todo.items():
            self.vault.point_live(site, self.vault.archive_dir(*_split(cert_id)))
        return len(todo)

    # -- one pass ------------------------------------------------------------------------------
    def _desired(self, conn: sa.Connection) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for part in chunks(sorted(self.sites), 5000):
            out.update((r.site, (r.cert_id, r.sha256)) for r in conn.execute(
                sa.select(fleet_desired.c.site, fleet_desired.c.cert_id, fleet_desired.c.sha256)
                .where(fleet_desired.c.site.in_(part))))
        return out

    def _fetch(self, conn: sa.Connection,
               todo: Mapping[str, tuple[str, str]]) -> dict[str, sealed.Sealed]:
        """The sealed records of the certificates not in the vault yet (one query per 1,000)."""
        need = {cid for cid, _ in todo.values()
                if not (self.vault.archive_dir(*_split(cid)) / "privkey.pem").is_file()}
        records = sealed.load_many(conn, sorted(need)) if need else {}
        missing = sorted(need - set(records))
        if missing:
            raise StoreError(f"no sealed material for {', '.join(missing[:5])} in the database")
        return records

    def _write(self, records: Mapping[str, sealed.Sealed]) -> None:
        """Unseal and save into the vault, after the database connection went back to the
        pool (writing thousands of directories must not hold a transaction open)."""
        def write(cid: str) -> None:
            plain = sealed.open_record(self.ring, records[cid])
            site, ca, serial = _split(cid)
            self.vault.save(site, ca, serial, leaf_pem=plain.cert_pem,
                            chain_pem=plain.chain_pem, key_pem=plain.key_pem)

        # each save fsyncs its files and directories: threads overlap that I/O (one site's
        # directory per thread at a time; a site has one desired certificate)
        with ThreadPoolExecutor(max_workers=self.writers) as pool:
            list(pool.map(write, sorted(records)))

    def sync(self) -> SyncResult:
        """One pass (see the module docstring). Raises StoreError when the database cannot be
        read: nothing on this host changes then."""
        queries = 0
        t0 = time.monotonic()
        spent: dict[str, float] = {}
        try:
            with self.engine.connect() as conn:
                desired = self._desired(conn)
                queries += 1
                todo = {s: d for s, d in desired.items() if self.verified.get(s) != d[1]}
                records = self._fetch(conn, todo) if todo else {}
                queries += 1 if records else 0
        except sa.exc.SQLAlchemyError as exc:
            self._stale(exc)
            raise StoreError(f"agent {self.host}: cannot read the database: {exc}") from exc
        spent["read"] = time.monotonic() - t0
        self._write(records)
        spent["unseal_and_write"] = time.monotonic() - t0 - spent["read"]
        failed: dict[str, str] = {}
        changed: list[str] = []
        applies: dict[str, int] = {}
        by_server: dict[str, list[deploy.Activation]] = defaultdict(list)
        for site, (cert_id, sha) in sorted(todo.items()):
            s = self.sites[site]
            by_server[s.server].append(deploy.Activation(
                site=site, target=self.vault.archive_dir(*_split(cert_id)), expected_sha256=sha,
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
                    changed.append(r.site)
                else:
                    failed[r.site] = r.message
                    if r.rolled_back:
                        applies[server] += 1
        spent["switch_and_verify"] = time.monotonic() - t1
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
        result = SyncResult(len(desired), tuple(changed), failed, applies, queries, spent)
        if todo:
            self.last_switch = result
        return result

    def _stale(self, exc: BaseException) -> None:
        if self.stale_since is None:
            self.stale_since = datetime.now(UTC)
        self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("agent %s: database unreachable, serving the last verified certificates "
                    "(%s)", self.host, self.last_error)

    def _report(self, changed: Sequence[str], failed: Mapping[str, str]) -> int:
        now = datetime.now(UTC)
        rows = [{"host": self.host, "site": s, "sha256": self.verified.get(s),
                 "verified_at": now, "error": "", "reported": now} for s in changed]
        rows += [{"host": self.host, "site": s, "sha256": self.verified.get(s),
                  "verified_at": None, "error": why[:2000], "reported": now}
                 for s, why in failed.items()]
        with self.engine.begin() as conn:
            for part in chunks(rows):
                ins = pg_insert(fleet_served).values(part)
                keep_verified = sa.func.coalesce(ins.excluded.verified_at,
                                                 fleet_served.c.verified_at)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["host", "site"],
                    set_={"sha256": ins.excluded.sha256, "verified_at": keep_verified,
                          "error": ins.excluded.error, "reported": ins.excluded.reported}))
            conn.execute(fleet_served.update().where(fleet_served.c.host == self.host)
                         .values(reported=now))  # the heartbeat: this host is in touch
        return 1 + len(chunks(rows))

    # -- the loop ------------------------------------------------------------------------------
    def run(self, url: str, stop: threading.Event, *, poll: float = 30.0,
            retry: float = 5.0) -> None:
        """Sync now, then on every NOTIFY and at least every `poll` seconds, until `stop`."""
        listener = Listener(url, app=f"certfailover agent {self.host}")
        try:
            while not stop.is_set():
                try:
                    self.sync()
                except StoreError as exc:
                    log.warning("%s", exc)
                    stop.wait(retry)
                    continue
                until = time.monotonic() + poll
                try:  # short slices: `stop` is seen within a second
                    while not stop.is_set() and time.monotonic() < until:
                        if listener.wait(min(1.0, max(0.0, until - time.monotonic()))):
                            break
                except StoreError as exc:
                    self._stale(exc)
                    stop.wait(retry)
        finally:
            listener.close()

    def live_sha(self, site: str) -> str | None:
        """The leaf SHA-256 the live link of `site` points at (what the servers load)."""
        target = self.vault.live_target(site)
        if target is None:
            return None
        return leaf_sha256(self.vault.load(Path(target)).leaf)
