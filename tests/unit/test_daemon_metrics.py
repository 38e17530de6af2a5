"""update_metrics: the daemon's tick report and stored health become Prometheus samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certfailover.daemon import standbys_healthy, update_metrics
from certfailover.engine import TickReport
from certfailover.metrics import Metrics
from certfailover.model import Cert, CertState, Event, Finding, Health, Severity

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def cert(ca: str, state: CertState, days: float = 60) -> Cert:
    return Cert(id=f"www/{ca}/1", site="www", ca=ca, serial="1", not_before=NOW - timedelta(days=1),
                not_after=NOW + timedelta(days=days), sha256="", key_type="ec-p256", issuer_dn="",
                state=state, created=NOW, path="")


def health(cid: str, *findings: Finding) -> Health:
    return Health(cid, (Finding("validity", Severity.OK, "valid"), *findings))


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_update_metrics_from_report_and_health() -> None:
    a, b = cert("a", CertState.ACTIVE, 10), cert("b", CertState.STANDBY)
    hs = {
        a.id: health(a.id, Finding("trust", Severity.OK, "ok", program="mozilla"),
                     Finding("trust", Severity.FAIL, "no", program="chrome"),
                     Finding("trust", Severity.WARN, "?", program="apple", known=False)),
        b.id: health(b.id, Finding("trust", Severity.WARN, "forecast", program="mozilla",
                                   forecast=datetime(2026, 7, 1, tzinfo=UTC))),
    }
    m = Metrics()
    report = TickReport(events=[Event(NOW, "www", "failover", "x"),
                                Event(NOW, "www", "issuance_failed", "y", {"ca": "c"})])
    exported = update_metrics(m, report, [a, b], hs, {}, NOW, set())
    assert exported == {a.id, b.id}
    assert value(m, "certfailover_cert_active", site="www", cert_id=a.id, ca="a") == 1
    assert value(m, "certfailover_cert_active", site="www", cert_id=b.id, ca="b") == 0
    assert value(m, "certfailover_cert_expiry_seconds", site="www", cert_id=a.id,
                 ca="a") == 10 * 86400
    assert value(m, "certfailover_cert_health", site="www", cert_id=a.id, ca="a") == 2
    assert value(m, "certfailover_cert_trusted", site="www", cert_id=a.id, ca="a",
                 program="chrome") == 0
    assert value(m, "certfailover_cert_trusted", site="www", cert_id=b.id, ca="b",
                 program="mozilla") == 1
    assert value(m, "certfailover_cert_trusted", site="www", cert_id=a.id, ca="a",
                 program="apple") is None
    assert value(m, "certfailover_failovers_total", site="www") == 1
    assert value(m, "certfailover_issuance_errors_total", ca="c") == 1
    assert value(m, "certfailover_standbys_healthy", site="www") == 1, "a forecast is no failure"
    assert value(m, "certfailover_last_check_timestamp_seconds") == NOW.timestamp()
    # b retired: its series go away
    update_metrics(m, TickReport(), [a], hs, {}, NOW, exported)
    assert value(m, "certfailover_cert_active", site="www", cert_id=b.id, ca="b") is None


def test_standbys_healthy_counts_independent_unflagged_standbys() -> None:
    a, b = cert("a", CertState.ACTIVE), cert("b", CertState.STANDBY)
    same = Cert(**{**b.__dict__, "id": "www/a/2", "ca": "a"})
    ok = {c.id: health(c.id) for c in (a, b, same)}
    assert standbys_healthy([a, b, same], ok, []) == {"www": 1}
    assert standbys_healthy([a, b, same], ok, ["b"]) == {"www": 0}
    flagged = {**ok, b.id: health(b.id, Finding("ari", Severity.WARN, "r", replace=True))}
    assert standbys_healthy([a, b], flagged, []) == {"www": 0}
    failed = {**ok, b.id: health(b.id, Finding("key", Severity.FAIL, "r"))}
    assert standbys_healthy([a, b], failed, []) == {"www": 0}
    unchecked = {a.id: ok[a.id], b.id: Health(b.id, ())}
    assert standbys_healthy([a, b], unchecked, []) == {"www": 0}
    assert standbys_healthy([b], ok, []) == {"www": 0}, "no active: nothing to stand by for"
