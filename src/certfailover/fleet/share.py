"""Several controllers share the sites: each works on the sites whose lease it holds.

`ControllerShare.refresh()` (before every tick, and every `ttl / 3` seconds in `run()`):

    1. heartbeat: this controller's own lease `controller:<holder>`;
    2. a fair share: ceil(sites / live controllers), counted from the unexpired heartbeats;
    3. renew the site leases (`site:<name>`) it holds, give back those beyond its share (a
       controller that joins gets them), claim free or expired ones up to its share
       (`Leases.claim`: SKIP LOCKED, never waits on another controller);
    4. take the fleet's leader role if it is free (`coord.Leader`: the singleton work, the CT
       watch, runs on the leader only);
    5. keep the material of its sites in step with the database: seal what it stored that
       is not sealed yet, write into its vault what another controller sealed (so a site that
       moves here can be checked and switched at once);
    6. close orders left pending by a dead controller (older than the issue deadline).

Step 5 and the desired rows (`served_target`) read only what changed since the last refresh
(`Seen`): the certificates, sealed records and desired rows written since a change mark
(store/db.py `read_changes`: transaction ids from the database's own snapshot, no clock, and
a transaction still running at a refresh is read at the next), plus the certificates of the
sites this refresh gained. Every `full_every` seconds (and at the first refresh) it reads
every row again, as a safety net: what the marks cannot show (a row deleted, a key file
removed from the vault, a write that bypassed the trigger) is caught then.

A controller that dies stops renewing: its leases expire after `ttl` and the others take its
sites at their next refresh. The engine ticks only the sites held (`Daemon.share`), orders
only for them, and the database refuses a second pending order for a site and CA anyway
(schema 8), so an issuance happens once, whichever controller does it.

`fenced(sites)` is the transaction a switch is published in (`FleetDeployer`): it locks this
controller's unexpired leases of `sites` until commit and yields the sites still held; a site
whose lease was lost meanwhile is not written (its new holder decides it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ..errors import CertFailoverError, StoreError
from ..model import Cert, CertState
from ..store.db import Database, fleet_desired, fleet_sealed, read_changes
from ..store.vault import Vault, chain_dirs
from . import sealed
from .coord import Leader, Leases
from .sealed import Keyring

__all__ = ["FULL_EVERY", "ControllerShare", "Seen", "site_work"]

log = logging.getLogger(__name__)

_SITE = "site:"
_CONTROLLER = "controller:"
#: seconds between two refreshes that read every row again (the incremental refresh's net)
FULL_EVERY = 300.0


def site_work(site: str) -> str:
    return _SITE + site


class Seen:
    """The fleet's rows as of the last refresh, kept in step by reading the rows written since:
    the certificates not retired, the ids of the sealed records, the desired rows of every
    site, the change mark of each table (None: read everything next time), and `todo`, the
    certificates whose material the next refresh looks at (new ones, newly sealed ones, those
    of sites gained; all of them after a full read)."""

    def __init__(self) -> None:
        self.certs: dict[str, Cert] = {}
        self.by_site: dict[str, set[str]] = {}
        self.sealed: set[str] = set()
        self.desired: dict[str, tuple[str, str | None]] = {}  # site -> (cert id, chain)
        self.cert_mark: int | None = None
        self.sealed_mark: int | None = None
        self.desired_mark: int | None = None
        self.full_at = -math.inf  # time.monotonic() of the last full read
        self.todo: set[str] = set()

    def gain(self, sites: Iterable[str]) -> None:
        for site in sites:
            self.todo |= self.by_site.get(site, set())

    def take_certs(self, full: bool, certs: Iterable[Cert]) -> None:
        if full:
            self.certs, self.by_site = {}, {}
        for c in certs:
            old = self.certs.pop(c.id, None)
            if old is not None:
                self.by_site[old.site].discard(c.id)
            if c.state is CertState.RETIRED:
                self.todo.discard(c.id)
                continue
            self.certs[c.id] = c
            self.by_site.setdefault(c.site, set()).add(c.id)
            if old is None or full:
                self.todo.add(c.id)

    def take_sealed(self, full: bool, ids: Iterable[str]) -> None:
        got = set(ids)
        self.todo |= got - self.sealed
        self.sealed = got if full else self.sealed | got

    def take_desired(self, full: bool, rows: dict[str, tuple[str, str | None]]) -> None:
        self.desired = rows if full else {**self.desired, **rows}


def _few(sites: frozenset[str]) -> str:
    names = sorted(sites)
    return (", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")) \
        if names else "none"


class ControllerShare:
    """This controller's share of `sites` (see the module docstring)."""

    def __init__(self, leases: Leases, sites: Sequence[str], *, db: Database, vault: Vault,
                 ring: Keyring, ttl: float = 30.0, stale_orders: float = 600.0,
                 leader: Leader | None = None, full_every: float = FULL_EVERY) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.leases, self.sites = leases, sorted(set(sites))
        self.db, self.vault, self.ring = db, vault, ring
        self.ttl, self.stale_orders = ttl, stale_orders
        self.owned: frozenset[str] = frozenset()
        #: the fleet's singleton work (the CT watch) runs on the one controller that leads
        self.leader = leader
        self.leading = leader is None
        self.controllers = 1  # live controllers at the last refresh
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._desired: dict[str, tuple[str, str | None]] = {}  # site -> (cert id, chain)
        self._desired_read = False
        self._said: set[str] = set()  # material problems already logged
        self.seen = Seen()
        self.full_every = full_every

    @property
    def holder(self) -> str:
        return self.leases.holder

    @property
    def engine(self) -> sa.Engine:
        return self.leases.engine

    # -- leases ------------------------------------------------------------------------------
    def refresh(self) -> tuple[frozenset[str], frozenset[str]]:
        """Steps 1-6; returns (sites held now, sites gained by this refresh). StoreError when
        the database cannot be reached: then nothing is held any more (`owned` is empty), so a
        controller cut off does not act on sites another may have taken."""
        with self._lock:
            try:
                held, gained = self._balance()
            except sa.exc.SQLAlchemyError as exc:
                self.owned = frozenset()
                raise StoreError(f"controller {self.holder}: cannot refresh its site leases: "
                                 f"{str(exc).splitlines()[0]}") from exc
            self.owned = held
            self._lead()
            try:
                self.seen.gain(gained)
                self._read_changes()
                self._desired = {s: self.seen.desired[s] for s in held if s in self.seen.desired}
                self._desired_read = True
                self._sync_material(held)
                self._close_stale_orders()
            except (sa.exc.SQLAlchemyError, CertFailoverError, OSError) as exc:
                log.warning("controller %s: material or order clean-up: %s", self.holder, exc)
            return held, gained

    def _balance(self) -> tuple[frozenset[str], frozenset[str]]:
        me = _CONTROLLER + self.holder
        if not self.leases.renew([me], ttl=self.ttl):
            self.leases.claim([me], ttl=self.ttl)
        with self.engine.connect() as conn:
            self.controllers = max(1, int(conn.execute(sa.text(
                "SELECT count(*) FROM fleet_leases WHERE work LIKE :p AND expires >= now()"),
                {"p": _CONTROLLER + "%"}).scalar_one()))
        share = math.ceil(len(self.sites) / self.controllers)
        mine = [site_work(s) for s in self.sites]
        held = sorted(self.leases.renew(mine, ttl=self.ttl))  # those still ours
        if len(held) > share:  # give the surplus back: a controller that joined takes it
            self.leases.release(held[share:])
            held = held[:share]
        elif len(held) < share:
            taken = set(held)
            held += self.leases.claim([w for w in mine if w not in taken], ttl=self.ttl,
                                      limit=share - len(held))
        now = frozenset(w[len(_SITE):] for w in held)
        if now != self.owned:
            log.info("controller %s: %d of %d sites (%d controllers); took %s; gave %s",
                     self.holder, len(now), len(self.sites), self.controllers,
                     _few(now - self.owned), _few(self.owned - now))
        return now, now - self.owned

    def _lead(self) -> None:
        if self.leader is None:
            return
        try:
            now = self.leader.try_lead()
        except StoreError as exc:
            log.warning("%s", exc)
            now = False
        if now != self.leading:
            log.info("controller %s %s the fleet's leader (singleton work: the CT watch)",
                     self.holder, "is now" if now else "is no longer")
        self.leading = now

    def is_leader(self) -> bool:
        return self.leading

    def release(self) -> None:
        """Give every lease back at once (a clean stop: the others take over without waiting
        for the expiry)."""
        with self._lock:
            try:
                self.leases.release([site_work(s) for s in self.owned]
                                    + [_CONTROLLER + self.holder])
            except sa.exc.SQLAlchemyError as exc:
                log.warning("controller %s: leases not released (they expire in %g s): %s",
                            self.holder, self.ttl, exc)
            self.owned = frozenset()
            if self.leader is not None:
                self.leader.release()
                self.leading = False

    @contextmanager
    def fenced(self, sites: Sequence[str]
               ) -> Iterator[tuple[sa.Connection, frozenset[str], dict[str, str]]]:
        """A transaction holding the leases of `sites` (row locks until commit): those this
        controller holds, and those nobody holds (taken now: a command run by hand, or a
        first tick). Yields it, the sites held, and {site: holder} for the sites another live
        controller holds (not to be written)."""
        works = [site_work(s) for s in sites]
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO fleet_leases (work, holder, expires)"
                " SELECT w, '', 'epoch'::timestamptz FROM unnest(CAST(:ws AS text[])) AS w"
                " ON CONFLICT (work) DO NOTHING"), {"ws": works})
            rows = conn.execute(sa.text(
                "SELECT work, holder, expires >= now() AS live FROM fleet_leases"
                " WHERE work = ANY(CAST(:ws AS text[])) FOR UPDATE"), {"ws": works}).all()
            free = [str(r.work) for r in rows if not r.live]
            if free:
                conn.execute(sa.text(
                    "UPDATE fleet_leases SET holder = :me,"
                    " expires = now() + make_interval(secs => :ttl)"
                    " WHERE work = ANY(CAST(:ws AS text[]))"),
                    {"me": self.holder, "ttl": self.ttl, "ws": free})
            held = frozenset(str(r.work)[len(_SITE):] for r in rows
                             if not r.live or r.holder == self.holder)
            others = {str(r.work)[len(_SITE):]: str(r.holder) for r in rows
                      if r.live and r.holder != self.holder}
            yield conn, held, others

    def run(self, stop: threading.Event, *, on_gain: Callable[[frozenset[str]], None]) -> None:
        """Refresh every ttl / 3 seconds until `stop`; `on_gain` hears of sites taken over."""
        while not stop.wait(self.ttl / 3):
            try:
                _, gained = self.refresh()
            except StoreError as exc:
                log.warning("%s", exc)
                continue
            if gained:
                on_gain(gained)

    # -- material ----------------------------------------------------------------------------
    def fetch_one(self, cert: Cert) -> None:
        """Engine.on_missing: write `cert` from its sealed record, if there is one (errors
        are logged: the engine then reports the material it cannot read, as for any cert)."""
        try:
            with self.engine.connect() as conn:
                rec = sealed.load(conn, cert.id)
            if rec is not None:
                self._write(cert, rec)
        except (sa.exc.SQLAlchemyError, CertFailoverError, OSError) as exc:
            log.warning("controller %s: cannot write %s from its sealed record: %s",
                        self.holder, cert.id, exc)

    def _read_desired(self, site: str) -> tuple[str, str | None] | None:
        """One site's desired row (before the first refresh)."""
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(fleet_desired.c.cert_id, fleet_desired.c.chain)
                             .where(fleet_desired.c.site == site)).first()
        return (str(r.cert_id), r.chain) if r is not None else None

    def served_target(self, site: str) -> Path | None:
        """Engine.served_target on a controller: the directory of what the fleet was told to
        serve for `site` (the desired certificate, in the chain directory whose chain digest
        the desired row names), as a live link's target is on a single host. None: nothing
        desired, or not in this vault. From the rows read at the last refresh (every tick)."""
        if self._desired_read:
            want = self._desired.get(site)
        else:  # no refresh yet (a command run by hand): read this site's row
            want = self._read_desired(site)
        cert = self.db.cert(want[0]) if want is not None else None
        if want is None or cert is None:
            return None
        for d in chain_dirs(Path(cert.path)):
            try:
                if want[1] is None or sealed.chain_digest(
                        (d / "chain.pem").read_bytes()) == want[1]:
                    return d
            except (OSError, ValueError):
                continue
        return None

    def seal_one(self, cert: Cert) -> None:
        """Engine.on_stored: seal a certificate as soon as it is stored."""
        self.seal([cert])

    def seal(self, certs: Sequence[Cert]) -> int:
        """Seal the material of `certs` from this controller's vault (insert or replace)."""
        items = [(c.id, c.site, sealed.material(Path(c.path))) for c in certs]
        if not items:
            return 0
        with self.engine.begin() as conn:
            return sealed.seal_many(conn, self.ring, items)

    def resync_next(self) -> None:
        """Make the next refresh read every row again (as it does every `full_every` s)."""
        self.seen.full_at = -math.inf

    def _read_changes(self) -> None:
        """Bring `seen` up to date: the rows written since the last refresh, or every row
        when a full read is due. Nothing is taken unless every read succeeded."""
        seen = self.seen
        started = time.monotonic()
        full = started - seen.full_at >= self.full_every
        cert_mark, certs_full, certs = self.db.cert_changes(None if full else seen.cert_mark)
        with self.engine.connect() as conn:
            ids = read_changes(conn, sa.select(fleet_sealed.c.cert_id), fleet_sealed,
                               None if full else seen.sealed_mark)
            want = read_changes(conn, sa.select(fleet_desired.c.site, fleet_desired.c.cert_id,
                                                fleet_desired.c.chain), fleet_desired,
                                None if full else seen.desired_mark)
        seen.take_certs(certs_full, certs)
        seen.take_sealed(ids.full, [str(r.cert_id) for r in ids.rows])
        seen.take_desired(want.full, {str(r.site): (str(r.cert_id), r.chain) for r in want.rows})
        seen.cert_mark, seen.sealed_mark, seen.desired_mark = cert_mark, ids.mark, want.mark
        if full:
            seen.full_at = started
        log.debug("controller %s: %s read: %d certificates, %d sealed, %d desired rows",
                  self.holder, "full" if full else "changes", len(certs), len(ids.rows),
                  len(want.rows))

    def _sync_material(self, sites: frozenset[str]) -> None:
        """For the certificates to look at (`Seen.todo`): seal those of this vault not sealed
        yet (whichever site: one issued for a site just given away counts too); write the
        sealed ones of `sites` missing here. A certificate leaves `todo` once looked at (a
        database error leaves it there for the next refresh); a full read puts every one
        back."""
        seen = self.seen
        seal: list[Cert] = []
        fetch: list[Cert] = []
        for cert_id in sorted(seen.todo):
            c = seen.certs.get(cert_id)
            local = c is not None and (Path(c.path) / "privkey.pem").is_file()
            if c is not None and local and cert_id not in seen.sealed:
                seal.append(c)
            elif c is not None and not local and cert_id in seen.sealed and c.site in sites:
                fetch.append(c)
            else:
                seen.todo.discard(cert_id)
        self._seal_local(seal)
        if not fetch:
            return
        with self.engine.connect() as conn:
            records = sealed.load_many(conn, [c.id for c in fetch])
        for c in fetch:
            seen.todo.discard(c.id)
            if (rec := records.get(c.id)) is None:
                continue
            try:
                self._write(c, rec)
            except (CertFailoverError, OSError) as exc:
                self._say(c.id, f"controller {self.holder}: cannot write {c.id} from its "
                          f"sealed record: {exc}")

    def _seal_local(self, certs: Sequence[Cert]) -> None:
        """Seal `certs` from this vault in one transaction (one whose files cannot be read is
        left out, said once)."""
        items = []
        for c in certs:
            try:
                items.append((c.id, c.site, sealed.material(Path(c.path))))
            except OSError as exc:
                self.seen.todo.discard(c.id)
                self._say(c.id, f"controller {self.holder}: cannot seal {c.id}: {exc}")
        if items:
            with self.engine.begin() as conn:
                sealed.seal_many(conn, self.ring, items)
            done = {cert_id for cert_id, _, _ in items}
            self.seen.sealed |= done
            self.seen.todo -= done

    def _say(self, cert_id: str, text: str) -> None:
        if cert_id not in self._said:
            self._said.add(cert_id)
            log.warning("%s", text)

    def _write(self, cert: Cert, rec: sealed.Sealed) -> None:
        """Another controller's certificate into this vault, at the path the store names
        (once: the refresh thread and the engine may both ask)."""
        with self._write_lock:
            if not (Path(cert.path) / "privkey.pem").is_file():
                self._write_locked(cert, rec)

    def _write_locked(self, cert: Cert, rec: sealed.Sealed) -> None:
        where = self.vault.archive_dir(cert.site, cert.ca, cert.serial)
        if where.resolve() != Path(cert.path).resolve():
            if cert.id not in self._said:
                self._said.add(cert.id)
                log.error("controller %s: %s is stored at %s, outside this controller's store "
                          "%s: every controller needs the same [store] directory path "
                          "(docs/fleet.md)", self.holder, cert.id, cert.path, self.vault.root)
            return
        plain = sealed.open_record(self.ring, rec)
        self.vault.save(cert.site, cert.ca, cert.serial, leaf_pem=plain.cert_pem,
                        chain_pem=plain.chain_pem, key_pem=plain.key_pem,
                        alt_chains_pem=plain.alt_chains)
        log.info("controller %s: wrote %s from the sealed record", self.holder, cert.id)

    def _close_stale_orders(self) -> None:
        """Orders a dead controller left pending: failed once older than the issue deadline."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_orders)
        if n := self.db.abandon_pending_orders(datetime.now(UTC), started_before=cutoff):
            log.warning("%d order(s) pending since before %s (a controller that died) now "
                        "count as failures", n, f"{cutoff:%H:%M:%S}Z")
