"""Schema 10's change marks: every write of a marked row records its transaction id (a trigger
on PostgreSQL), and `read_changes` reads the rows written since a mark from the database's
own snapshot (store/db.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from certfailover.model import Cert, CertState
from certfailover.store import db as dbmod
from certfailover_lab.postgres import PostgresServer

_n = count(1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def cert(n: int, site: str = "www", state: CertState = CertState.STANDBY) -> Cert:
    return Cert(id=f"{site}/a/{n}", site=site, ca="a", serial=str(n), not_before=NOW,
                not_after=NOW + timedelta(days=90), sha256="ab" * 32, key_type="ec-p256",
                issuer_dn="CN=x", state=state, created=NOW, path=f"/x/{site}/{n}")


def desire(conn: sa.Connection, site: str, cert_id: str) -> None:
    conn.execute(sa.text(
        "INSERT INTO fleet_desired (site, cert_id, sha256, epoch, since)"
        " VALUES (:s, :c, 'ab', 1, CURRENT_TIMESTAMP) ON CONFLICT (site) DO UPDATE SET cert_id = :c"),
        {"s": site, "c": cert_id})


@pytest.fixture
def pg(postgres: PostgresServer) -> dbmod.Database:
    """A migrated store on PostgreSQL (change marks exist there only)."""
    d = dbmod.Database(postgres.create_database(f"changes_{next(_n)}"))
    d.migrate()
    return d


def changes(d: dbmod.Database, since: int | None) -> dbmod.Changes:
    q = sa.select(dbmod.fleet_desired.c.site, dbmod.fleet_desired.c.cert_id)
    with d.engine.connect() as conn:
        return dbmod.read_changes(conn, q, dbmod.fleet_desired, since)


def test_a_write_marks_its_row_with_its_transaction_id(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    d.add_cert(cert(1))
    pg = d.engine.dialect.name == "postgresql"
    with d.engine.begin() as conn:
        desire(conn, "www", "www/a/1")
        xid = int(conn.execute(sa.text("SELECT txid_current()")).scalar_one()) if pg else 0
    with d.engine.connect() as conn:
        marks: dict[str, int | None] = dict(conn.execute(sa.text(
            "SELECT 'desired', changed FROM fleet_desired UNION ALL"
            " SELECT 'cert', changed FROM certs")).all())
    if not pg:  # no fleets on SQLite: no marks, every read full
        assert marks == {"desired": None, "cert": None}
        got = changes(d, 12345)
        assert got.full and got.mark is None and len(got.rows) == 1
        return
    cert_mark = marks["cert"]
    assert marks["desired"] == xid and cert_mark is not None and cert_mark < xid
    d.set_state("www/a/1", CertState.ACTIVE)  # an update marks the row again
    mark, full, rows = d.cert_changes(xid)
    assert not full and [c.state for c in rows] == [CertState.ACTIVE] and mark is not None
    assert mark > xid


def test_read_changes_reads_what_was_written_since_the_mark(pg: dbmod.Database) -> None:
    d = pg
    with d.engine.begin() as conn:
        desire(conn, "a", "a/1")
        desire(conn, "b", "b/1")
    first = changes(d, None)
    assert first.full and sorted(r.site for r in first.rows) == ["a", "b"]
    assert changes(d, first.mark).rows == []  # nothing since
    with d.engine.begin() as conn:
        desire(conn, "b", "b/2")
        desire(conn, "c", "c/1")
    got = changes(d, first.mark)
    assert not got.full and sorted(tuple(r) for r in got.rows) == [("b", "b/2"), ("c", "c/1")]
    assert got.mark is not None and first.mark is not None and got.mark > first.mark


def test_a_mark_that_went_backwards_reads_everything(pg: dbmod.Database) -> None:
    """A database restored from a dump counts its transaction ids from lower again: a mark
    above the database's own is not trusted."""
    d = pg
    with d.engine.begin() as conn:
        desire(conn, "a", "a/1")
    now = changes(d, None).mark
    assert now is not None
    ahead = changes(d, now + 1_000_000)
    assert ahead.full and [r.site for r in ahead.rows] == ["a"] and ahead.mark == now
    # and a row marked with an id this database has not reached yet (restored with the dump)
    # is not read again at every refresh: the full reads have it
    with d.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))  # no trigger
        conn.execute(sa.text("UPDATE fleet_desired SET changed = :c"), {"c": now + 1_000_000})
        desire(conn, "b", "b/1")
    assert [r.site for r in changes(d, now).rows] == []  # b: NULL (no trigger), a: ahead
    assert sorted(r.site for r in changes(d, None).rows) == ["a", "b"]
    with d.engine.begin() as conn:
        desire(conn, "c", "c/1")
    assert [r.site for r in changes(d, now).rows] == ["c"]


def test_schema_10_marks_new_writes_and_leaves_old_rows_to_a_full_read(
        db_url: Callable[[], str]) -> None:
    url = db_url()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a store at schema 9 with one desired row
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO schema_version VALUES (9)"))
        ops = Operations(MigrationContext.configure(conn))
        for m in dbmod.MIGRATIONS[:9]:
            m(ops)
        desire(conn, "old", "old/1")
    engine.dispose()
    d = dbmod.Database(url)
    assert d.migrate() == dbmod.SCHEMA_VERSION >= 10
    first = changes(d, None)
    assert [tuple(r) for r in first.rows] == [("old", "old/1")]
    with d.engine.begin() as conn:
        desire(conn, "new", "new/1")
    if d.engine.dialect.name == "postgresql":
        assert [r.site for r in changes(d, first.mark).rows] == ["new"]  # the old row: NULL
