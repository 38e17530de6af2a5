from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from certfailover.model import Cert, CertState, Event, Finding, Severity
from certfailover.store import db as dbmod

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def cert(n: int, state: CertState = CertState.STANDBY) -> Cert:
    return Cert(id=f"www/a/{n}", site="www", ca="a", serial=str(n), not_before=NOW,
                not_after=NOW + timedelta(days=90), sha256="ab" * 32, key_type="ec-p256",
                issuer_dn="CN=x", state=state, created=NOW + timedelta(seconds=n), path=f"/x/{n}")


def test_fresh_store_is_migrated_to_latest(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    assert d.version() == 0
    assert d.migrate() == dbmod.SCHEMA_VERSION
    assert d.migrate() == dbmod.SCHEMA_VERSION  # idempotent


def test_old_store_is_upgraded_in_place_keeping_data(db_url: Callable[[], str]) -> None:
    url = db_url()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a store written by version 1 of the schema
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO schema_version VALUES (1)"))
        dbmod.MIGRATIONS[0](Operations(MigrationContext.configure(conn)))
    d = dbmod.Database(url)
    d.add_cert(cert(1))
    assert not sa.inspect(d.engine).has_table("distrust")
    assert d.migrate() == dbmod.SCHEMA_VERSION == 3
    assert sa.inspect(d.engine).has_table("orders") and sa.inspect(d.engine).has_table("revoked")
    assert d.certs("www")[0].id == "www/a/1"
    d.distrust("a", NOW, "news")
    assert d.distrusted() == {"a": "news"}


def test_set_active_keeps_exactly_one_active(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    for n in (1, 2, 3):
        d.add_cert(cert(n))
    d.set_active("www", "www/a/1")
    d.set_active("www", "www/a/2")
    states = {c.id: c.state for c in d.certs("www")}
    assert states == {"www/a/1": CertState.STANDBY, "www/a/2": CertState.ACTIVE,
                      "www/a/3": CertState.STANDBY}
    d.set_state("www/a/3", CertState.RETIRED)
    assert [c.id for c in d.certs("www")] == ["www/a/1", "www/a/2"]
    assert len(d.certs("www", include_retired=True)) == 3


def test_findings_replace_and_events_filter(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    d.save_findings("c", NOW, [Finding("x", Severity.FAIL, "bad", {"k": 1})])
    d.save_findings("c", NOW, [Finding("y", Severity.OK, "fine")])
    assert d.findings("c") == [Finding("y", Severity.OK, "fine", {})]
    d.add_events([Event(NOW, "www", "failover", "m1", {"a": 1}),
                  Event(NOW + timedelta(hours=1), "api", "issued", "m2")])
    assert [e.message for e in d.events(site="www")] == ["m1"]
    assert [e.message for e in d.events(since=NOW + timedelta(minutes=1))] == ["m2"]
    assert d.events()[0].time.tzinfo is not None


def test_the_table_definitions_equal_the_schema_the_migrations_produce(
        db_url: Callable[[], str]) -> None:
    """The frozen migrations and `metadata` are written twice on purpose; alembic's autogenerate
    comparison proves they say the same (tables, columns, types, nullability, indexes)."""
    from alembic.autogenerate import compare_metadata

    d = dbmod.Database(db_url())
    d.migrate()
    with d.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), dbmod.metadata)
    # schema_version is the runner's own bookkeeping table, not part of `metadata`
    diff = [x for x in diff if not (x[0] == "remove_table" and x[1].name == "schema_version")]
    assert diff == []
