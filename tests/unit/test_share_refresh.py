"""`ControllerShare.refresh` reads only what changed since the last refresh (change marks,
store/db.py `read_changes`), misses no row committed late, and reads everything again every
`full_every` seconds or when asked (`resync_next`), on a real PostgreSQL.

The rows another controller writes are written straight into the database here; the measured
controller holds every site unless a test gives some to another holder."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from certfailover.fleet import coord, sealed
from certfailover.fleet import share as share_mod
from certfailover.fleet.coord import Leases
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.fleet.share import ControllerShare
from certfailover.model import Cert, CertState
from certfailover.store import db as dbmod
from certfailover.store.vault import Vault
from certfailover_lab.postgres import PostgresServer

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SITES = ["s1", "s2", "s3"]
_n = count(1)


def plain(tag: str) -> Plain:
    return Plain(f"-----BEGIN CERTIFICATE-----\n{tag}\n-----END CERTIFICATE-----\n".encode(),
                 b"", f"-----BEGIN PRIVATE KEY-----\n{tag}\n-----END PRIVATE KEY-----\n".encode())


@dataclass
class Fleet:
    url: str
    db: dbmod.Database
    vault: Vault
    ring: Keyring
    engine: sa.Engine  # another controller's writes
    reads: dict[str, list[str]] = field(default_factory=dict)  # table -> keys, last refresh
    engines: list[sa.Engine] = field(default_factory=list)  # the shares', disposed at the end

    def cert(self, site: str, serial: str) -> Cert:
        return Cert(id=f"{site}/a/{serial}", site=site, ca="a", serial=serial, not_before=NOW,
                    not_after=NOW + timedelta(days=90), sha256="ab" * 32, key_type="ec-p256",
                    issuer_dn="CN=test", state=CertState.STANDBY, created=NOW,
                    path=str(self.vault.archive_dir(site, "a", serial)))

    def store(self, conn: sa.Connection, site: str, serial: str) -> Cert:
        """Another controller stores and seals a certificate (not in this vault)."""
        c = self.cert(site, serial)
        conn.execute(dbmod.certs.insert().values(
            id=c.id, site=c.site, ca=c.ca, serial=c.serial, not_before=c.not_before,
            not_after=c.not_after, sha256=c.sha256, key_type=c.key_type,
            issuer_dn=c.issuer_dn, state=c.state.value, created=c.created, path=c.path))
        sealed.seal_many(conn, self.ring, [(c.id, c.site, plain(c.id))])
        return c

    def written(self, cert_id: str) -> bool:
        site, ca, serial = cert_id.split("/")
        key = self.vault.archive_dir(site, ca, serial) / "privkey.pem"
        return key.is_file() and key.read_bytes() == plain(cert_id).key_pem

    def share(self, *, full_every: float = share_mod.FULL_EVERY) -> ControllerShare:
        self.engines.append(coord.make_engine(self.url, "test share"))
        return ControllerShare(Leases(self.engines[-1], "c1"), SITES, db=self.db,
                               vault=self.vault, ring=self.ring, full_every=full_every)

    def refresh(self, share: ControllerShare) -> dict[str, list[str]]:
        """One refresh; returns the keys it read per table (also kept in `reads`)."""
        self.reads = {}
        share.refresh()
        return self.reads


def desire(conn: sa.Connection, site: str, cert_id: str) -> None:
    conn.execute(sa.text(
        "INSERT INTO fleet_desired (site, cert_id, sha256, epoch, since)"
        " VALUES (:s, :c, 'ab', 1, now()) ON CONFLICT (site) DO UPDATE SET cert_id = :c"),
        {"s": site, "c": cert_id})


@pytest.fixture
def fleet(postgres: PostgresServer, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """A migrated database with one certificate per site (s1/a/1, ...), sealed by another
    controller and desired; this controller's vault is empty."""
    url = postgres.create_database(f"share_refresh_{next(_n)}")
    db = dbmod.Database(url)
    db.migrate()
    engine = sa.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # no auto-analyze transaction (it takes a transaction id) running beside a refresh:
        # the counts of rows read below are exact
        for t in conn.execute(sa.text("SELECT tablename FROM pg_tables"
                                      " WHERE schemaname = 'public'")).scalars():
            conn.execute(sa.text(f'ALTER TABLE "{t}" SET (autovacuum_enabled = off)'))
    vault = Vault(tmp_path / "store")
    vault.ensure()
    f = Fleet(url, db, vault, Keyring(Kek(os.urandom(32))), engine)
    with engine.begin() as conn:
        for s in SITES:
            f.store(conn, s, "1")
            desire(conn, s, f"{s}/a/1")

    real_read, real_certs = dbmod.read_changes, dbmod.Database.cert_changes

    def read_changes(conn: sa.Connection, query: Any, table: sa.Table, since: int | None,
                     **kw: Any) -> dbmod.Changes:
        got = real_read(conn, query, table, since, **kw)
        key = "site" if table is dbmod.fleet_desired else "cert_id"
        f.reads[table.name] = sorted(str(r._mapping[key]) for r in got.rows)
        return got

    def cert_changes(self: dbmod.Database, since: int | None
                     ) -> tuple[int | None, bool, list[Cert]]:
        got = real_certs(self, since)
        f.reads["certs"] = sorted(c.id for c in got[2])
        return got

    monkeypatch.setattr(share_mod, "read_changes", read_changes)
    monkeypatch.setattr(dbmod.Database, "cert_changes", cert_changes)
    yield f
    for e in (engine, db.engine, *f.engines):
        e.dispose()


NOTHING: dict[str, list[str]] = {"certs": [], "fleet_sealed": [], "fleet_desired": []}


def test_a_refresh_after_a_change_reads_exactly_the_change(fleet: Fleet) -> None:
    share = fleet.share()
    first = fleet.refresh(share)  # the first refresh reads everything and writes the material
    assert first["certs"] == ["s1/a/1", "s2/a/1", "s3/a/1"]
    assert all(fleet.written(f"{s}/a/1") for s in SITES)
    assert share.owned == frozenset(SITES) and share._desired["s2"] == ("s2/a/1", None)
    assert fleet.refresh(share) == NOTHING

    mine = fleet.cert("s1", "b1")  # stored here, its seal on storing failed
    fleet.vault.save("s1", "a", "b1", leaf_pem=b"leaf", chain_pem=b"", key_pem=b"key")
    fleet.db.add_cert(mine)
    with fleet.engine.begin() as conn:  # another controller, meanwhile
        fleet.store(conn, "s1", "2")
        desire(conn, "s2", "s2/a/9")
    fleet.db.set_state("s3/a/1", CertState.RETIRED)

    assert fleet.refresh(share) == {"certs": ["s1/a/2", "s1/a/b1", "s3/a/1"],
                                    "fleet_sealed": ["s1/a/2"], "fleet_desired": ["s2"]}
    assert fleet.written("s1/a/2")  # written from its sealed record
    assert share._desired["s2"] == ("s2/a/9", None)
    assert "s3/a/1" not in share.seen.certs and "s1/a/b1" in share.seen.sealed
    with fleet.engine.connect() as conn:  # sealed from this vault
        rec = sealed.load(conn, "s1/a/b1")
    assert rec is not None and sealed.open_record(fleet.ring, rec).key_pem == b"key"
    # its own seal comes back once (the overlap is the rows at or after the mark), then nothing
    assert fleet.refresh(share) == {**NOTHING, "fleet_sealed": ["s1/a/b1"]}
    assert fleet.refresh(share) == NOTHING


def test_a_row_committed_late_is_not_missed(fleet: Fleet) -> None:
    """A transaction that wrote before another one but commits after it (and after a refresh
    that saw the other): a mark from the last id seen, or from the clock, would skip it."""
    share = fleet.share()
    fleet.refresh(share)
    late_conn = fleet.engine.connect()
    try:
        late = late_conn.begin()
        c = fleet.store(late_conn, "s1", "late")
        desire(late_conn, "s1", c.id)
        late_xid = int(late_conn.execute(sa.text("SELECT txid_current()")).scalar_one())
        with fleet.engine.begin() as conn:  # starts after, commits first
            desire(conn, "s2", "s2/a/early")
            early_xid = int(conn.execute(sa.text("SELECT txid_current()")).scalar_one())
        assert early_xid > late_xid
        assert fleet.refresh(share) == {**NOTHING, "fleet_desired": ["s2"]}
        assert share._desired["s2"] == ("s2/a/early", None)
        assert share._desired["s1"] == ("s1/a/1", None) and c.id not in share.seen.certs
        late.commit()
    finally:
        late_conn.close()
    assert fleet.refresh(share) == {"certs": [c.id], "fleet_sealed": [c.id],
                                    "fleet_desired": ["s1", "s2"]}  # s2: at the mark again
    assert share._desired["s1"] == (c.id, None) and fleet.written(c.id)


@pytest.mark.parametrize("how", ["asked", "periodic"])
def test_the_full_read_catches_what_the_marks_cannot_show(fleet: Fleet, how: str) -> None:
    """A row deleted, a row written past the trigger, a key file removed from the vault: no
    mark shows them; the next full read does."""
    every = 2.0  # far longer than the steps below take, on a loaded host too
    share = fleet.share(full_every=share_mod.FULL_EVERY if how == "asked" else every)
    fleet.refresh(share)
    started = time.monotonic()  # after the full read's start
    with fleet.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))  # no triggers
        conn.execute(sa.text("UPDATE fleet_desired SET cert_id = 's1/a/9' WHERE site = 's1'"))
        conn.execute(sa.text("DELETE FROM fleet_desired WHERE site = 's2'"))
    shutil.rmtree(fleet.vault.archive_dir("s3", "a", "1"))
    assert fleet.refresh(share) == NOTHING  # not seen yet
    assert share._desired["s1"] == ("s1/a/1", None) and "s2" in share._desired
    assert not fleet.written("s3/a/1")
    if how == "asked":
        share.resync_next()
    else:
        time.sleep(max(0.0, every - (time.monotonic() - started)) + 0.05)
    full = fleet.refresh(share)
    assert full["certs"] == ["s1/a/1", "s2/a/1", "s3/a/1"] and full["fleet_desired"] == ["s1", "s3"]
    assert share._desired == {"s1": ("s1/a/9", None), "s3": ("s3/a/1", None)}
    assert fleet.written("s3/a/1")  # written again from its sealed record
    assert fleet.refresh(share) == NOTHING  # and incremental again


def test_a_site_gained_gets_its_material_though_no_row_changed(fleet: Fleet) -> None:
    with fleet.engine.begin() as conn:  # another live controller holds s3
        hour = NOW.replace(year=2100)
        conn.execute(dbmod.fleet_leases.insert(), [
            {"work": "controller:other", "holder": "other", "expires": hour},
            {"work": "site:s3", "holder": "other", "expires": hour}])
    share = fleet.share()
    fleet.refresh(share)
    assert share.owned == frozenset({"s1", "s2"}) and not fleet.written("s3/a/1")
    with fleet.engine.begin() as conn:  # it dies: its leases expire
        conn.execute(sa.text("UPDATE fleet_leases SET expires = now() - interval '1 second'"
                             " WHERE holder = 'other'"))
    assert fleet.refresh(share) == NOTHING
    assert share.owned == frozenset(SITES) and fleet.written("s3/a/1")
    assert share._desired["s3"] == ("s3/a/1", None)
