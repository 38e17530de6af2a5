"""State in SQLAlchemy: certificates, latest findings, events (the audit log), distrust list.

SQLite by default; any SQLAlchemy URL (PostgreSQL for fleets) works. The schema is created and
upgraded by numbered migrations written with alembic's operations API; the applied version is
kept in the `schema_version` table, so a newer certfailover upgrades an existing store in place.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import OrderInFlight, StoreError
from ..model import Cert, CertState, Event, Finding, Order, RevokedFact, Severity, Signal
from .pgdeadline import PG_CALL_DEADLINE, pg_deadlines, pg_extra_time

metadata = sa.MetaData()

certs = sa.Table(
    "certs", metadata,
    sa.Column("id", sa.String(300), primary_key=True),
    sa.Column("site", sa.String(100), nullable=False, index=True),
    sa.Column("ca", sa.String(100), nullable=False),
    sa.Column("serial", sa.String(100), nullable=False),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("key_type", sa.String(20), nullable=False),
    sa.Column("issuer_dn", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    # schema 10: the id of the transaction that last wrote the row (`read_changes`)
    sa.Column("changed", sa.BigInteger, nullable=True, index=True),
)
findings = sa.Table(
    "findings", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("cert_id", sa.String(300), nullable=False, index=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("check", sa.String(50), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)
events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("site", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)
distrust = sa.Table(
    "distrust", metadata,
    sa.Column("ca", sa.String(100), primary_key=True),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(100), nullable=False),
    sa.Column("ca", sa.String(100), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("transient", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("cert_id", sa.String(300), nullable=True),
    sa.Index("ix_orders_ca_started", "ca", "started"),
    # at most one order in flight per site and CA, whichever process (or fleet controller)
    # places it: the database refuses the second (migration 8)
    sa.Index("ux_orders_pending", "site", "ca", unique=True,
             sqlite_where=sa.text("outcome = 'pending'"),
             postgresql_where=sa.text("outcome = 'pending'")),
)
revoked = sa.Table(
    "revoked", metadata,
    sa.Column("cert_id", sa.String(300), primary_key=True),
    sa.Column("site", sa.String(100), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
unknown = sa.Table(
    "unknown", metadata,
    sa.Column("cert_id", sa.String(300), primary_key=True),
    sa.Column("check", sa.String(50), primary_key=True),
    sa.Column("site", sa.String(100), nullable=False, index=True),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)

# fleets (certfailover.fleet): sealed key material, the leader's epoch, work leases, and the
# desired / served certificate of every site on every agent host
fleet_sealed = sa.Table(
    "fleet_sealed", metadata,
    sa.Column("cert_id", sa.String(300), primary_key=True),
    sa.Column("site", sa.String(100), nullable=False, index=True),
    sa.Column("kek_id", sa.String(32), nullable=False, index=True),
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("changed", sa.BigInteger, nullable=True, index=True),  # schema 10
)
fleet_epoch = sa.Table(
    "fleet_epoch", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)
fleet_leases = sa.Table(
    "fleet_leases", metadata,
    sa.Column("work", sa.String(300), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
)
fleet_desired = sa.Table(
    "fleet_desired", metadata,
    sa.Column("site", sa.String(100), primary_key=True),
    sa.Column("cert_id", sa.String(300), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    # schema 9: SHA-256 of the served chain's DER certificates (None: any chain, an old row)
    sa.Column("chain", sa.String(64), nullable=True),
    sa.Column("changed", sa.BigInteger, nullable=True, index=True),  # schema 10
)
fleet_served = sa.Table(
    "fleet_served", metadata,
    sa.Column("host", sa.String(100), primary_key=True),
    sa.Column("site", sa.String(100), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("reported", sa.DateTime(timezone=True), nullable=False),
    sa.Column("chain", sa.String(64), nullable=True),  # schema 9: the chain the host proved
)

# the CT watch (certfailover.ct): per log, the verified tree head and compact tree it reached
ct_logs = sa.Table(
    "ct_logs", metadata,
    sa.Column("log_id", sa.String(44), primary_key=True),  # base64 of the SHA-256 log ID
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root_hash", sa.String(44), nullable=False),
    sa.Column("sth_timestamp", sa.BigInteger, nullable=False),
    sa.Column("nodes", sa.Text, nullable=False),  # JSON list of base64 compact-tree hashes
    sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("problem", sa.Text, nullable=False),  # "" when the last poll verified
)
site_distrust = sa.Table(
    "site_distrust", metadata,
    sa.Column("site", sa.String(100), primary_key=True),
    sa.Column("ca", sa.String(100), primary_key=True),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

def _insert_new(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same primary key exists; True when inserted. One
    statement (INSERT ... ON CONFLICT DO NOTHING), so two writers racing (the tick and a
    background check) never fail on the key: the first one's row stays."""
    keys = [c.name for c in table.primary_key.columns]
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    else:  # another engine: a savepoint around a plain insert
        try:
            with conn.begin_nested():
                conn.execute(table.insert().values(**values))
        except sa.exc.IntegrityError:
            return False
        return True
    # RETURNING, not rowcount: psycopg reports -1 for a skipped ON CONFLICT row
    return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None


def _m1(op: Operations) -> None:
    """Schema 1: certificates, findings, events. Migrations are frozen: never edit one, add one."""
    op.create_table(
        "certs",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("site", sa.String(100), nullable=False, index=True),
        sa.Column("ca", sa.String(100), nullable=False),
        sa.Column("serial", sa.String(100), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("key_type", sa.String(20), nullable=False),
        sa.Column("issuer_dn", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cert_id", sa.String(300), nullable=False, index=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("check", sa.String(50), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("site", sa.String(100), nullable=False, index=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )


def _m2(op: Operations) -> None:
    """Schema 2: the operator's distrust list."""
    op.create_table(
        "distrust",
        sa.Column("ca", sa.String(100), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def _m3(op: Operations) -> None:
    """Schema 3: every order sent to a CA (the issuance budget), and verified revocations,
    which are facts that never go back."""
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("ca", sa.String(100), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("transient", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cert_id", sa.String(300), nullable=True),
    )
    op.create_index("ix_orders_ca_started", "orders", ["ca", "started"])
    op.create_table(
        "revoked",
        sa.Column("cert_id", sa.String(300), primary_key=True),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def _m4(op: Operations) -> None:
    """Schema 4: since when a certificate's finding has been unknown (a revocation status no
    source could give), so a hard-fail site's clock survives a restart."""
    op.create_table(
        "unknown",
        sa.Column("cert_id", sa.String(300), primary_key=True),
        sa.Column("check", sa.String(50), primary_key=True),
        sa.Column("site", sa.String(100), nullable=False, index=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def _m5(op: Operations) -> None:
    """Schema 5: fleets (certfailover.fleet): sealed key material, the leader's epoch (fencing),
    work leases, and the desired / served certificate per site and agent host."""
    op.create_table(
        "fleet_sealed",
        sa.Column("cert_id", sa.String(300), primary_key=True),
        sa.Column("site", sa.String(100), nullable=False, index=True),
        sa.Column("kek_id", sa.String(32), nullable=False, index=True),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fleet_epoch",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fleet_leases",
        sa.Column("work", sa.String(300), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fleet_desired",
        sa.Column("site", sa.String(100), primary_key=True),
        sa.Column("cert_id", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fleet_served",
        sa.Column("host", sa.String(100), primary_key=True),
        sa.Column("site", sa.String(100), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("reported", sa.DateTime(timezone=True), nullable=False),
    )


def _m6(op: Operations) -> None:
    """Schema 6: the CT watch's verified position in each log (certfailover.ct.positions)."""
    op.create_table(
        "ct_logs",
        sa.Column("log_id", sa.String(44), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.String(44), nullable=False),
        sa.Column("sth_timestamp", sa.BigInteger, nullable=False),
        sa.Column("nodes", sa.Text, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
    )


def _m7(op: Operations) -> None:
    """Schema 7: distrust of a CA for one site only (an unexpected certificate for the site
    from that CA, seen in CT; `distrust CA --site SITE`)."""
    op.create_table(
        "site_distrust",
        sa.Column("site", sa.String(100), primary_key=True),
        sa.Column("ca", sa.String(100), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def _m8(op: Operations) -> None:
    """Schema 8: one pending order per (site, CA), enforced by a partial unique index, so two
    fleet controllers can never both order the same certificate. Duplicates left by an older
    version (all but the newest) count as interrupted first."""
    op.execute(sa.text(
        "UPDATE orders SET outcome = 'failed', transient = :t, finished = started,"
        " reason = 'interrupted (a duplicate pending order, closed by schema 8)'"
        " WHERE outcome = 'pending' AND id NOT IN"
        " (SELECT max(id) FROM orders WHERE outcome = 'pending' GROUP BY site, ca)"
    ).bindparams(t=True))
    where = sa.text("outcome = 'pending'")
    op.create_index("ux_orders_pending", "orders", ["site", "ca"], unique=True,
                    sqlite_where=where, postgresql_where=where)


def _m9(op: Operations) -> None:
    """Schema 9: fleets publish and report the chain too (a chain switch: the same leaf with
    another of its stored chains). `chain` is the SHA-256 (hex) of the chain's certificates'
    DER, concatenated in order; NULL in rows written before (any chain, the leaf decides)."""
    op.add_column("fleet_desired", sa.Column("chain", sa.String(64), nullable=True))
    op.add_column("fleet_served", sa.Column("chain", sa.String(64), nullable=True))


#: the tables whose rows carry a change mark (schema 10)
CHANGE_MARKED = ("certs", "fleet_sealed", "fleet_desired")


def _m10(op: Operations) -> None:
    """Schema 10: a change mark on the rows fleet controllers keep in step with, so a controller
    reads only what was written since its last refresh (fleet/share.py, `read_changes`).
    `changed` is the id of the transaction that last inserted or updated the row, set by a
    trigger on PostgreSQL (whatever the writer, an older certfailover included); it is NULL on
    other databases (no fleets there) and in rows written before this schema."""
    for table in CHANGE_MARKED:
        op.add_column(table, sa.Column("changed", sa.BigInteger, nullable=True))
        op.create_index(f"ix_{table}_changed", table, ["changed"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE OR REPLACE FUNCTION certfailover_mark_changed() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN NEW.changed := txid_current(); RETURN NEW; END $$")
    for table in CHANGE_MARKED:
        op.execute(f"CREATE TRIGGER {table}_changed BEFORE INSERT OR UPDATE ON {table}"
                   " FOR EACH ROW EXECUTE FUNCTION certfailover_mark_changed()")


MIGRATIONS: tuple[Callable[[Operations], None], ...] = (_m1, _m2, _m3, _m4, _m5, _m6, _m7, _m8,
                                                        _m9, _m10)
SCHEMA_VERSION = len(MIGRATIONS)
#: seconds each call of a migration may take beyond the deadline, on PostgreSQL
MIGRATE_DEADLINE = 300.0
#: the PostgreSQL advisory lock key taken while migrating (fleet controllers start together)
_MIGRATE_LOCK = 0x63_66_6D_69_67_72_61_74  # "cfmigrat"


@contextmanager
def _extra_time(conn: sa.Connection, seconds: float) -> Iterator[None]:
    """`pg_extra_time` on the connection's psycopg connection (nothing on other drivers)."""
    raw = conn.connection.driver_connection
    if conn.dialect.driver != "psycopg" or raw is None:
        yield
        return
    with pg_extra_time(raw, seconds):
        yield


def change_mark(conn: sa.Connection) -> int | None:
    """Where the next read of changes starts: the oldest transaction id still running (every
    transaction below it has ended), from PostgreSQL's own snapshot, so neither clock skew nor
    a transaction that commits late (it is still running now, so its id is at or above the
    mark) makes a reader miss a row. None on other databases (no change marks)."""
    marks = _snapshot(conn)
    return marks[0] if marks is not None else None


def _snapshot(conn: sa.Connection) -> tuple[int, int] | None:
    """(oldest transaction id still running, next transaction id) on PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return None
    row = conn.execute(sa.text("SELECT txid_snapshot_xmin(s), txid_snapshot_xmax(s)"
                               " FROM txid_current_snapshot() AS s")).one()
    return int(row[0]), int(row[1])


class Changes(NamedTuple):
    """Rows read by `read_changes`: every row (`full`) or those written since the mark asked
    for, and the mark to ask for next time (None: read everything next time)."""

    mark: int | None
    full: bool
    rows: Sequence[sa.Row[Any]]


def read_changes(conn: sa.Connection, query: sa.Select[Any], table: sa.Table,
                 since: int | None, *, full_where: sa.ColumnElement[bool] | None = None
                 ) -> Changes:
    """The rows of `query` (on `table`, one of CHANGE_MARKED) written since the mark `since`,
    a mark an earlier call returned; every row (filtered by `full_where`) when `since` is None,
    on a database without marks, or when the mark went backwards (a database restored from a
    dump: its transaction ids start again lower). Rows written at the mark are read again
    next time (the overlap that catches a transaction still running now). A row marked with
    an id this database has not reached yet (restored from a dump) is left to full reads."""
    marks = _snapshot(conn)  # before the rows: a write after it is read next time
    mark = marks[0] if marks is not None else None
    full = since is None or marks is None or marks[0] < since
    if full or marks is None:
        q = query if full_where is None else query.where(full_where)
    else:  # BIGINT: the index's type
        q = query.where(table.c.changed >= sa.cast(since, sa.BigInteger),
                        table.c.changed < sa.cast(marks[1], sa.BigInteger))
    return Changes(mark, full, conn.execute(q).all())


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _encode(f: Finding) -> str:
    """A finding's detail and typed signals as one JSON document (the `detail` column)."""
    typed = {
        "renew": f.renew, "replace": f.replace, "revoked": f.revoked, "known": f.known,
        "next_due": {Signal(k).value: v.isoformat() for k, v in f.next_due.items()},
        "program": f.program, "forecast": f.forecast.isoformat() if f.forecast else None,
        "cannot_issue_for": f.cannot_issue_for, "ari_id": f.ari_id,
    }
    return json.dumps({"typed": typed, "detail": f.detail}, default=str)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _decode(check: str, severity: Severity, reason: str, text: str) -> Finding:
    """Read back what `_encode` wrote. A row from before typed findings (schema <= 3: only a
    detail dict) keeps its flags that matter until its next check (renew, replace, revoked,
    unknown); its hints default to none: the next check recomputes them."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return Finding(check, severity, reason)
    detail = doc.get("detail")
    typed = doc.get("typed")
    if not (set(doc) == {"typed", "detail"} and isinstance(typed, dict)
            and isinstance(detail, dict)):
        return _legacy(check, severity, reason, doc)
    raw_due = typed.get("next_due")
    due = {Signal(k): t for k, v in (raw_due.items() if isinstance(raw_due, dict) else ())
           if k in {s.value for s in Signal} and (t := _when(v)) is not None}
    return Finding(check, severity, reason, detail,
                   renew=typed.get("renew") is True, replace=typed.get("replace") is True,
                   revoked=typed.get("revoked") is True, known=typed.get("known") is not False,
                   next_due=due, program=_text(typed.get("program")),
                   forecast=_when(typed.get("forecast")),
                   cannot_issue_for=_text(typed.get("cannot_issue_for")),
                   ari_id=_text(typed.get("ari_id")))


def _legacy(check: str, severity: Severity, reason: str, old: dict[str, Any]) -> Finding:
    status = old.get("status")
    return Finding(check, severity, reason, old, renew=old.get("renew") is True,
                   replace=old.get("replace") is True, revoked=status == "revoked",
                   known=status != "unknown")


def _cert(row: Any) -> Cert:
    return Cert(
        id=row.id, site=row.site, ca=row.ca, serial=row.serial,
        not_before=_aware(row.not_before), not_after=_aware(row.not_after), sha256=row.sha256,
        key_type=row.key_type, issuer_dn=row.issuer_dn, state=CertState(row.state),
        created=_aware(row.created), path=row.path,
    )


def _shown(url: str) -> str:
    """A URL for messages: the password hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unreadable URL)"


class Database:
    """The store's tables on one SQLAlchemy URL. On PostgreSQL (psycopg) every call on the
    database has a client-side deadline, `deadline` seconds per round trip (store/lock.py,
    `pg_deadlines`): a server that is alive but stuck makes the call raise DatabaseDeadline
    (a StoreError naming host:port/database, never the password) instead of hanging; a new
    connection waits at most `connect_timeout` seconds (unless the URL sets its own)."""

    def __init__(self, url: str, *, deadline: float = PG_CALL_DEADLINE,
                 connect_timeout: int = 5) -> None:
        self.url = url
        try:
            u = sa.engine.make_url(url)
            pg = u.get_backend_name() == "postgresql"
            args: dict[str, Any] = {}
            if pg and "connect_timeout" not in u.query:
                args["connect_timeout"] = max(2, connect_timeout)  # libpq: whole seconds, >= 2
            self.engine = sa.create_engine(url, future=True, connect_args=args)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"database URL {_shown(url)!r}: {exc}") from exc
        if pg:
            pg_deadlines(self.engine, url, deadline)
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
                cur = dbapi_conn.cursor()
                try:
                    cur.execute("PRAGMA busy_timeout=5000")
                    cur.execute("PRAGMA journal_mode=WAL")
                except sqlite3.DatabaseError as exc:  # a damaged schema page: the connection
                    if "malformed" not in str(exc):  # is made, its first statement says so
                        raise
                finally:
                    cur.close()

    # -- schema ---------------------------------------------------------------------------
    def version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            return int(conn.execute(sa.text("SELECT version FROM schema_version")).scalar() or 0)

    def migrate(self) -> int:
        """Apply every migration newer than the store's version; returns the new version.
        On PostgreSQL each call may take MIGRATE_DEADLINE seconds more than the deadline (a
        wait for another process's migration, an index built on a large table)."""
        try:
            with self.engine.begin() as conn, _extra_time(conn, MIGRATE_DEADLINE):
                if conn.dialect.name == "postgresql":  # several processes may start at once
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"),
                                 {"k": _MIGRATE_LOCK})
                insp = sa.inspect(conn)
                if not insp.has_table("schema_version"):
                    conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
                    conn.execute(sa.text("INSERT INTO schema_version (version) VALUES (0)"))
                current = int(conn.execute(sa.text("SELECT version FROM schema_version")).scalar() or 0)
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{_shown(self.url)}: store schema version {current} is newer than this "
                        f"certfailover ({SCHEMA_VERSION}); upgrade certfailover")
                op = Operations(MigrationContext.configure(conn))
                for number in range(current, SCHEMA_VERSION):
                    MIGRATIONS[number](op)
                conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION})
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{_shown(self.url)}: cannot open or migrate the database: "
                             f"{exc}") from exc
        return SCHEMA_VERSION

    # -- certificates ---------------------------------------------------------------------
    def add_cert(self, cert: Cert) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(certs.c.id).where(certs.c.id == cert.id)).first()
            if exists:
                return
            conn.execute(certs.insert().values(
                id=cert.id, site=cert.site, ca=cert.ca, serial=cert.serial,
                not_before=cert.not_before, not_after=cert.not_after, sha256=cert.sha256,
                key_type=cert.key_type, issuer_dn=cert.issuer_dn, state=cert.state.value,
                created=cert.created, path=cert.path))

    def certs(self, site: str | None = None, *, include_retired: bool = False) -> list[Cert]:
        q = sa.select(certs).order_by(certs.c.site, certs.c.created)
        if site is not None:
            q = q.where(certs.c.site == site)
        if not include_retired:
            q = q.where(certs.c.state != CertState.RETIRED.value)
        with self.engine.connect() as conn:
            return [_cert(r) for r in conn.execute(q)]

    def cert_changes(self, since: int | None) -> tuple[int | None, bool, list[Cert]]:
        """(mark, full, certificates) as `read_changes` gives them: those written since the
        mark `since`, retired ones included (so a reader drops them); or every certificate not
        retired (`full`)."""
        with self.engine.connect() as conn:
            got = read_changes(conn, sa.select(certs), certs, since,
                               full_where=certs.c.state != CertState.RETIRED.value)
            return got.mark, got.full, [_cert(r) for r in got.rows]

    def cert(self, cert_id: str) -> Cert | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(certs).where(certs.c.id == cert_id)).first()
        return _cert(row) if row else None

    def set_state(self, cert_id: str, state: CertState) -> None:
        with self.engine.begin() as conn:
            conn.execute(certs.update().where(certs.c.id == cert_id).values(state=state.value))

    def set_active(self, site: str, cert_id: str) -> None:
        """Mark one certificate active and the site's other active one standby, in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(certs.update()
                         .where(certs.c.site == site, certs.c.state == CertState.ACTIVE.value)
                         .values(state=CertState.STANDBY.value))
            conn.execute(certs.update().where(certs.c.id == cert_id)
                         .values(state=CertState.ACTIVE.value))

    # -- findings -------------------------------------------------------------------------
    def save_findings(self, cert_id: str, time: datetime, items: Sequence[Finding], *,
                      checks: Iterable[str] | None = None) -> None:
        """Replace the latest findings of a certificate: all of them, or only those named
        `checks` (the other findings stay as they are)."""
        with self.engine.begin() as conn:
            gone = findings.delete().where(findings.c.cert_id == cert_id)
            if checks is not None:
                gone = gone.where(findings.c.check.in_(sorted(checks)))
            conn.execute(gone)
            if items:
                conn.execute(findings.insert(), [
                    {"cert_id": cert_id, "time": time, "check": f.check, "severity": f.severity.value,
                     "reason": f.reason, "detail": _encode(f)}
                    for f in items])

    def findings(self, cert_id: str) -> list[Finding]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(findings).where(findings.c.cert_id == cert_id)
                                .order_by(findings.c.id))
            return [_decode(r.check, Severity(r.severity), r.reason, r.detail) for r in rows]

    # -- events ---------------------------------------------------------------------------
    def add_events(self, items: Iterable[Event]) -> None:
        rows = [{"time": e.time, "site": e.site, "kind": e.kind, "message": e.message,
                 "data": json.dumps(e.data, default=str)} for e in items]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(events.insert(), rows)

    def events(self, *, site: str | None = None, since: datetime | None = None,
               limit: int = 1000, kinds: Iterable[str] | None = None) -> list[Event]:
        """The last `limit` events (of `kinds`, for `site`, since `since`), oldest first."""
        q = sa.select(events).order_by(events.c.id.desc()).limit(limit)
        if site is not None:
            q = q.where(events.c.site == site)
        if since is not None:
            q = q.where(events.c.time >= since)
        if kinds is not None:
            q = q.where(events.c.kind.in_(list(kinds)))
        with self.engine.connect() as conn:
            rows = list(conn.execute(q))[::-1]
        return [Event(_aware(r.time), r.site, r.kind, r.message, json.loads(r.data)) for r in rows]

    # -- operator distrust ----------------------------------------------------------------
    def distrust(self, ca: str, since: datetime, reason: str, *, site: str | None = None
                 ) -> None:
        """Distrust `ca` everywhere, or for `site` only."""
        table, key = self._distrust_key(ca, site)
        with self.engine.begin() as conn:
            conn.execute(table.delete().where(key))
            values = {"ca": ca, "since": since, "reason": reason}
            conn.execute(table.insert().values(**values, **({"site": site} if site else {})))

    def undistrust(self, ca: str, *, site: str | None = None) -> bool:
        table, key = self._distrust_key(ca, site)
        with self.engine.begin() as conn:
            return conn.execute(table.delete().where(key)).rowcount > 0

    @staticmethod
    def _distrust_key(ca: str, site: str | None) -> tuple[sa.Table, sa.ColumnElement[bool]]:
        if site is None:
            return distrust, distrust.c.ca == ca
        return site_distrust, (site_distrust.c.site == site) & (site_distrust.c.ca == ca)

    def distrusted(self, site: str | None = None) -> dict[str, str]:
        """CA -> reason: the CAs distrusted everywhere, and with `site` also those distrusted
        for that site only."""
        with self.engine.connect() as conn:
            out = {r.ca: r.reason for r in conn.execute(sa.select(distrust))}
            if site is not None:
                q = sa.select(site_distrust).where(site_distrust.c.site == site)
                for r in conn.execute(q):
                    out.setdefault(r.ca, f"{r.reason} (for site {site} only)")
            return out

    def site_distrust(self) -> dict[str, dict[str, str]]:
        """site -> {CA -> reason}: the distrusts of one site only."""
        out: dict[str, dict[str, str]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(site_distrust)):
                out.setdefault(r.site, {})[r.ca] = r.reason
        return out

    # -- orders (the issuance budget) ----------------------------------------------------------
    def start_order(self, site: str, ca: str, started: datetime) -> int:
        """Record an order as pending; OrderInFlight when one is pending for the site and CA
        already (placed by another process: the database decides, not a read before)."""
        try:
            with self.engine.begin() as conn:
                res = conn.execute(orders.insert().values(
                    site=site, ca=ca, started=started, finished=None, outcome="pending",
                    transient=False, reason="", cert_id=None))
                key = res.inserted_primary_key
                assert key is not None
                return int(key[0])
        except sa.exc.IntegrityError:
            raise OrderInFlight(f"{site}: an order to {ca} is already in flight "
                                "(another process placed it)") from None

    def drop_order(self, order_id: int) -> None:
        """Remove a pending order that was never sent to the CA."""
        with self.engine.begin() as conn:
            conn.execute(orders.delete().where(orders.c.id == order_id,
                                               orders.c.outcome == "pending"))

    def finish_order(self, order_id: int, finished: datetime, outcome: str, *,
                     reason: str = "", transient: bool = False, cert_id: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(orders.update().where(orders.c.id == order_id).values(
                finished=finished, outcome=outcome, reason=reason, transient=transient,
                cert_id=cert_id))

    def orders(self, *, ca: str | None = None, since: datetime | None = None) -> list[Order]:
        """Orders started at or after `since` (all: None), oldest first."""
        q = sa.select(orders).order_by(orders.c.started, orders.c.id)
        if ca is not None:
            q = q.where(orders.c.ca == ca)
        if since is not None:
            q = q.where(orders.c.started >= since)
        with self.engine.connect() as conn:
            return [Order(r.id, r.site, r.ca, _aware(r.started),
                          _aware(r.finished) if r.finished is not None else None, r.outcome,
                          bool(r.transient), r.reason, r.cert_id) for r in conn.execute(q)]

    def abandon_pending_orders(self, finished: datetime, *,
                               started_before: datetime | None = None) -> int:
        """Orders left "pending" by a process that died: they count, as failures.
        `started_before`: only those older (fleet controllers share the table: another one's
        order in flight is not abandoned)."""
        stale = orders.c.outcome == "pending"
        if started_before is not None:
            stale = sa.and_(stale, orders.c.started < started_before)
        with self.engine.begin() as conn:
            return int(conn.execute(orders.update().where(stale).values(
                finished=finished, outcome="failed", transient=True,
                reason="interrupted (the process stopped during the order)")).rowcount)

    # -- revocation facts -----------------------------------------------------------------
    def mark_revoked(self, cert_id: str, site: str, at: datetime, reason: str) -> bool:
        """Record a verified revocation; False when it was already recorded."""
        with self.engine.begin() as conn:
            return _insert_new(conn, revoked, {"cert_id": cert_id, "site": site, "at": at,
                                                   "reason": reason})

    def revoked(self, site: str | None = None) -> dict[str, RevokedFact]:
        q = sa.select(revoked)
        if site is not None:
            q = q.where(revoked.c.site == site)
        with self.engine.connect() as conn:
            return {r.cert_id: RevokedFact(r.cert_id, _aware(r.at), r.reason)
                    for r in conn.execute(q)}

    # -- unknown since --------------------------------------------------------------------
    def unknown_since(self, site: str) -> dict[tuple[str, str], datetime]:
        """(cert id, finding name) -> since when that finding has been unknown."""
        q = sa.select(unknown).where(unknown.c.site == site)
        with self.engine.connect() as conn:
            return {(r.cert_id, r.check): _aware(r.since) for r in conn.execute(q)}

    def set_unknown(self, site: str, changes: Mapping[tuple[str, str], datetime | None]) -> None:
        """Start (a time) or end (None) unknown streaks; a streak already started keeps its
        start."""
        if not changes:
            return
        with self.engine.begin() as conn:
            for (cert_id, name), since in changes.items():
                key = (unknown.c.cert_id == cert_id) & (unknown.c.check == name)
                if since is None:
                    conn.execute(unknown.delete().where(key))
                else:
                    _insert_new(conn, unknown, {"cert_id": cert_id, "check": name, "site": site,
                                                    "since": since})
