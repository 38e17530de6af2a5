"""State in SQLAlchemy: certificates, latest findings, events (the audit log), distrust list.

SQLite by default; any SQLAlchemy URL (PostgreSQL for fleets) works. The schema is created and
upgraded by numbered migrations written with alembic's operations API; the applied version is
kept in the `schema_version` table, so a newer certfailover upgrades an existing store in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from ..errors import StoreError
from ..model import Cert, CertState, Event, Finding, Order, RevokedFact, Severity

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
)
revoked = sa.Table(
    "revoked", metadata,
    sa.Column("cert_id", sa.String(300), primary_key=True),
    sa.Column("site", sa.String(100), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)


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


MIGRATIONS: tuple[Callable[[Operations], None], ...] = (_m1, _m2, _m3)
SCHEMA_VERSION = len(MIGRATIONS)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cert(row: Any) -> Cert:
    return Cert(
        id=row.id, site=row.site, ca=row.ca, serial=row.serial,
        not_before=_aware(row.not_before), not_after=_aware(row.not_after), sha256=row.sha256,
        key_type=row.key_type, issuer_dn=row.issuer_dn, state=CertState(row.state),
        created=_aware(row.created), path=row.path,
    )


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = sa.create_engine(url, future=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"database URL {url!r}: {exc}") from exc
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

    # -- schema ---------------------------------------------------------------------------
    def version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            return int(conn.execute(sa.text("SELECT version FROM schema_version")).scalar() or 0)

    def migrate(self) -> int:
        """Apply every migration newer than the store's version; returns the new version."""
        try:
            with self.engine.begin() as conn:
                insp = sa.inspect(conn)
                if not insp.has_table("schema_version"):
                    conn.execute(sa.text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
                    conn.execute(sa.text("INSERT INTO schema_version (version) VALUES (0)"))
                current = int(conn.execute(sa.text("SELECT version FROM schema_version")).scalar() or 0)
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.url}: store schema version {current} is newer than this certfailover "
                        f"({SCHEMA_VERSION}); upgrade certfailover")
                op = Operations(MigrationContext.configure(conn))
                for number in range(current, SCHEMA_VERSION):
                    MIGRATIONS[number](op)
                conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION})
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.url}: cannot open or migrate the database: {exc}") from exc
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
                     "reason": f.reason, "detail": json.dumps(f.detail, default=str)}
                    for f in items])

    def findings(self, cert_id: str) -> list[Finding]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(findings).where(findings.c.cert_id == cert_id)
                                .order_by(findings.c.id))
            return [Finding(r.check, Severity(r.severity), r.reason, json.loads(r.detail)) for r in rows]

    # -- events ---------------------------------------------------------------------------
    def add_events(self, items: Iterable[Event]) -> None:
        rows = [{"time": e.time, "site": e.site, "kind": e.kind, "message": e.message,
                 "data": json.dumps(e.data, default=str)} for e in items]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(events.insert(), rows)

    def events(self, *, site: str | None = None, since: datetime | None = None,
               limit: int = 1000) -> list[Event]:
        q = sa.select(events).order_by(events.c.id)
        if site is not None:
            q = q.where(events.c.site == site)
        if since is not None:
            q = q.where(events.c.time >= since)
        with self.engine.connect() as conn:
            rows = list(conn.execute(q))[-limit:]
        return [Event(_aware(r.time), r.site, r.kind, r.message, json.loads(r.data)) for r in rows]

    # -- operator distrust ----------------------------------------------------------------
    def distrust(self, ca: str, since: datetime, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(distrust.delete().where(distrust.c.ca == ca))
            conn.execute(distrust.insert().values(ca=ca, since=since, reason=reason))

    def undistrust(self, ca: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(distrust.delete().where(distrust.c.ca == ca)).rowcount > 0

    def distrusted(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.ca: r.reason for r in conn.execute(sa.select(distrust))}

    # -- orders (the issuance budget) ----------------------------------------------------------
    def start_order(self, site: str, ca: str, started: datetime) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(orders.insert().values(
                site=site, ca=ca, started=started, finished=None, outcome="pending",
                transient=False, reason="", cert_id=None))
            key = res.inserted_primary_key
            assert key is not None
            return int(key[0])

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

    def abandon_pending_orders(self, finished: datetime) -> int:
        """Orders left "pending" by a process that died: they count, as failures."""
        with self.engine.begin() as conn:
            return int(conn.execute(orders.update().where(orders.c.outcome == "pending").values(
                finished=finished, outcome="failed", transient=True,
                reason="interrupted (the process stopped during the order)")).rowcount)

    # -- revocation facts -----------------------------------------------------------------
    def mark_revoked(self, cert_id: str, site: str, at: datetime, reason: str) -> bool:
        """Record a verified revocation; False when it was already recorded."""
        with self.engine.begin() as conn:
            if conn.execute(sa.select(revoked.c.cert_id).where(revoked.c.cert_id == cert_id)).first():
                return False
            conn.execute(revoked.insert().values(cert_id=cert_id, site=site, at=at, reason=reason))
            return True

    def revoked(self, site: str | None = None) -> dict[str, RevokedFact]:
        q = sa.select(revoked)
        if site is not None:
            q = q.where(revoked.c.site == site)
        with self.engine.connect() as conn:
            return {r.cert_id: RevokedFact(r.cert_id, _aware(r.at), r.reason)
                    for r in conn.execute(q)}
