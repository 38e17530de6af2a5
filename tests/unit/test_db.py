from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from certfailover.model import Cert, CertState, Event, Finding, Severity, Signal
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
    assert d.migrate() == dbmod.SCHEMA_VERSION >= 4
    assert sa.inspect(d.engine).has_table("orders") and sa.inspect(d.engine).has_table("revoked")
    assert sa.inspect(d.engine).has_table("unknown")
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


def test_typed_findings_round_trip(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    full = Finding("ari", Severity.WARN, "replace me", {"window_start": "x"}, renew=True,
                   replace=True, revoked=True, known=False,
                   next_due={Signal.CRL: NOW, Signal.ARI: NOW + timedelta(hours=6)},
                   program="mozilla", forecast=NOW + timedelta(days=3),
                   cannot_issue_for="chrome", ari_id="aki.serial")
    plain = Finding("key", Severity.OK, "matches")
    d.save_findings("c", NOW, [full, plain])
    assert d.findings("c") == [full, plain]
    assert all(isinstance(k, Signal) for k in d.findings("c")[0].next_due)


def test_findings_stored_before_typed_fields_still_load(db_url: Callable[[], str]) -> None:
    """Rows of schema <= 3 hold a plain detail dict: the flags that matter until the next
    check are kept, hints drop to none (the next check recomputes them), junk loads empty."""
    d = dbmod.Database(db_url())
    d.migrate()
    old = [("validity", "warn", {"renew": True, "renew_at": "2026-03-01T00:00:00+00:00"}),
           ("ari", "warn", {"replace": True, "ari_id": "x.y", "next_poll": "bad"}),
           ("revocation", "fail", {"status": "revoked", "source": "crl"}),
           ("revocation", "warn", {"status": "unknown", "since": "2026-01-01T00:00:00+00:00"}),
           ("trust", "ok", {"program": "mozilla"}),
           ("names", "ok", "not a dict"),
           ("key", "ok", None)]
    with d.engine.begin() as conn:
        for check, sev, detail in old:
            conn.execute(dbmod.findings.insert().values(
                cert_id="c", time=NOW, check=check, severity=sev, reason="r",
                detail=json.dumps(detail)))
        conn.execute(dbmod.findings.insert().values(
            cert_id="c", time=NOW, check="chain", severity="ok", reason="r", detail="{nope"))
    got = d.findings("c")
    assert [(f.check, f.renew, f.replace, f.revoked, f.known) for f in got] == [
        ("validity", True, False, False, True), ("ari", False, True, False, True),
        ("revocation", False, False, True, True), ("revocation", False, False, False, False),
        ("trust", False, False, False, True), ("names", False, False, False, True),
        ("key", False, False, False, True), ("chain", False, False, False, True)]
    assert all(not f.next_due and f.program is None and f.ari_id is None for f in got)
    assert got[1].detail["ari_id"] == "x.y", "the old dict stays, as display data"


def test_unknown_streaks_keep_their_start(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    d.set_unknown("www", {("www/a/1", "revocation"): NOW, ("www/a/2", "ari"): NOW})
    d.set_unknown("www", {("www/a/1", "revocation"): NOW + timedelta(hours=1)})
    d.set_unknown("api", {("api/a/1", "revocation"): NOW})
    assert d.unknown_since("www") == {("www/a/1", "revocation"): NOW, ("www/a/2", "ari"): NOW}
    d.set_unknown("www", {("www/a/2", "ari"): None, ("www/a/9", "ari"): None})
    assert d.unknown_since("www") == {("www/a/1", "revocation"): NOW}
    assert d.unknown_since("api") == {("api/a/1", "revocation"): NOW}


def test_racing_writers_of_unknown_and_revoked_never_fail(db_url: Callable[[], str]) -> None:
    """The tick and a background check start the same streak / record the same revocation at
    once: no IntegrityError, one row, the first writer's, and exactly one 'recorded'."""
    import threading

    d = dbmod.Database(db_url())
    d.migrate()
    results: list[bool] = []
    errors: list[BaseException] = []

    def write(i: int, cert_id: str, start: threading.Barrier) -> None:
        try:
            start.wait()
            d.set_unknown("www", {(cert_id, "revocation"): NOW + timedelta(seconds=i)})
            results.append(d.mark_revoked(cert_id, "www", NOW, f"writer {i}"))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    for round_ in range(5):
        cert_id = f"www/a/{round_}"
        start = threading.Barrier(6)
        results.clear()
        threads = [threading.Thread(target=write, args=(i, cert_id, start)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(results) == [False] * 5 + [True]
        since = d.unknown_since("www")[(cert_id, "revocation")]
        assert NOW <= since <= NOW + timedelta(seconds=5)
        assert list(d.revoked("www")).count(cert_id) == 1


def test_a_ca_distrusted_for_one_site(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    d.distrust("a", NOW, "key compromise")
    d.distrust("b", NOW, "unexpected certificate", site="www")
    d.distrust("b", NOW + timedelta(hours=1), "again", site="www")  # replaces, no error
    assert d.distrusted() == {"a": "key compromise"}, "everywhere: the site's is not there"
    assert d.distrusted("www") == {"a": "key compromise", "b": "again (for site www only)"}
    assert d.distrusted("shop") == {"a": "key compromise"}
    assert d.site_distrust() == {"www": {"b": "again"}}
    assert not d.undistrust("b"), "not distrusted everywhere"
    assert d.undistrust("b", site="www") and d.distrusted("www") == {"a": "key compromise"}


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


def test_one_pending_order_per_site_and_ca_is_enforced_by_the_database(
        db_url: Callable[[], str]) -> None:
    import pytest

    from certfailover.errors import OrderInFlight

    d = dbmod.Database(db_url())
    d.migrate()
    first = d.start_order("www", "a", NOW)
    with pytest.raises(OrderInFlight, match="www: an order to a is already in flight"):
        d.start_order("www", "a", NOW)
    other_ca, other_site = d.start_order("www", "b", NOW), d.start_order("shop", "a", NOW)
    assert len({first, other_ca, other_site}) == 3
    d.finish_order(first, NOW, "issued", cert_id="www/a/1")
    assert d.start_order("www", "a", NOW + timedelta(minutes=1)) > first  # free again


def test_abandon_pending_orders_can_spare_recent_ones(db_url: Callable[[], str]) -> None:
    d = dbmod.Database(db_url())
    d.migrate()
    old = d.start_order("www", "a", NOW)
    new = d.start_order("www", "b", NOW + timedelta(minutes=10))
    assert d.abandon_pending_orders(NOW + timedelta(minutes=11),
                                    started_before=NOW + timedelta(minutes=5)) == 1
    outcome = {o.id: o.outcome for o in d.orders()}
    assert outcome == {old: "failed", new: "pending"}
    assert d.abandon_pending_orders(NOW + timedelta(minutes=11)) == 1


def test_schema_8_closes_duplicate_pending_orders_of_an_older_version(
        db_url: Callable[[], str]) -> None:
    url = db_url()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a store at schema 7 with two pending orders for www/a
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO schema_version VALUES (7)"))
        ops = Operations(MigrationContext.configure(conn))
        for m in dbmod.MIGRATIONS[:7]:
            m(ops)
        for n in (1, 2):
            conn.execute(dbmod.orders.insert().values(
                site="www", ca="a", started=NOW + timedelta(seconds=n), finished=None,
                outcome="pending", transient=False, reason="", cert_id=None))
    d = dbmod.Database(url)
    assert d.migrate() == dbmod.SCHEMA_VERSION
    got = sorted((o.id, o.outcome) for o in d.orders())
    assert [o for _, o in got] == ["failed", "pending"]  # the newest stays in flight


def test_schema_9_adds_the_chain_to_fleet_rows_keeping_old_ones(
        db_url: Callable[[], str]) -> None:
    url = db_url()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a store at schema 8 with one desired and one served row
        conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO schema_version VALUES (8)"))
        ops = Operations(MigrationContext.configure(conn))
        for m in dbmod.MIGRATIONS[:8]:
            m(ops)
        conn.execute(sa.text(
            "INSERT INTO fleet_desired (site, cert_id, sha256, epoch, since)"
            " VALUES ('www', 'www/a/1', :s, 3, :t)"), {"s": "ab" * 32, "t": NOW})
        conn.execute(sa.text(
            "INSERT INTO fleet_served (host, site, sha256, verified_at, error, reported)"
            " VALUES ('web1', 'www', :s, :t, '', :t)"), {"s": "ab" * 32, "t": NOW})
    d = dbmod.Database(url)
    assert d.migrate() == dbmod.SCHEMA_VERSION >= 9
    with d.engine.begin() as conn:
        want = conn.execute(sa.select(dbmod.fleet_desired)).one()
        got = conn.execute(sa.select(dbmod.fleet_served)).one()
        assert (want.cert_id, want.sha256, want.chain) == ("www/a/1", "ab" * 32, None)
        assert (got.host, got.sha256, got.chain) == ("web1", "ab" * 32, None)
        conn.execute(dbmod.fleet_desired.update().values(chain="cd" * 32))
        conn.execute(dbmod.fleet_served.update().values(chain="cd" * 32))
        assert conn.execute(sa.select(dbmod.fleet_desired.c.chain)).scalar_one() == "cd" * 32
        assert conn.execute(sa.select(dbmod.fleet_served.c.chain)).scalar_one() == "cd" * 32
