from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from certfailover.metrics import Metrics, MetricsServer, parse_listen
from certfailover.model import Severity

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "contrib" / "certfailover.example.toml"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    m = Metrics()
    server = m.serve("127.0.0.1", 0)
    try:
        yield m, server
    finally:
        server.stop()


def observe(m: Metrics, cert_id: str, ca: str, *, active: bool, severity: str,
            programs: dict[str, bool], days: float = 60) -> None:
    m.observe_cert(site="shop.example", cert_id=cert_id, ca=ca,
                   not_after=NOW + timedelta(days=days), now=NOW, severity=severity,
                   active=active, programs=programs)


def test_scrape_shows_a_failover(served: tuple[Metrics, MetricsServer]) -> None:
    m, server = served
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
    trusted = {"chrome": True, "mozilla": True}
    observe(m, "shop.example/ca1/0a", "ca1", active=True, severity="ok", programs=trusted)
    observe(m, "shop.example/ca2/0b", "ca2", active=False, severity="ok", programs=trusted,
            days=80)
    m.set_standbys_healthy("shop.example", 1)
    m.set_last_check(NOW)
    before = scrape(server.url)
    a = {"site": "shop.example", "cert_id": "shop.example/ca1/0a", "ca": "ca1"}
    b = {"site": "shop.example", "cert_id": "shop.example/ca2/0b", "ca": "ca2"}
    assert val(before, "certfailover_cert_active", **a) == 1
    assert val(before, "certfailover_cert_active", **b) == 0
    assert val(before, "certfailover_cert_expiry_seconds", **a) == 60 * 86400
    assert val(before, "certfailover_cert_not_after_timestamp_seconds", **b) == (
        (NOW + timedelta(days=80)).timestamp())
    assert val(before, "certfailover_failovers_total", site="shop.example") == 0
    assert val(before, "certfailover_standbys_healthy", site="shop.example") == 1
    assert val(before, "certfailover_last_check_timestamp_seconds") == NOW.timestamp()

    # ca1 is distrusted by chrome: fail over to ca2
    observe(m, "shop.example/ca1/0a", "ca1", active=False, severity="fail",
            programs={"chrome": False, "mozilla": True})
    observe(m, "shop.example/ca2/0b", "ca2", active=True, severity="ok", programs=trusted,
            days=80)
    m.inc_failover("shop.example")
    m.set_standbys_healthy("shop.example", 0)
    m.set_last_check(NOW + timedelta(minutes=1))
    after = scrape(server.url)
    assert val(after, "certfailover_cert_active", **a) == 0
    assert val(after, "certfailover_cert_active", **b) == 1
    assert val(after, "certfailover_cert_health", **a) == 2
    assert val(after, "certfailover_cert_health", **b) == 0
    assert val(after, "certfailover_cert_trusted", program="chrome", **a) == 0
    assert val(after, "certfailover_cert_trusted", program="mozilla", **a) == 1
    assert val(after, "certfailover_failovers_total", site="shop.example") == 1
    assert val(after, "certfailover_standbys_healthy", site="shop.example") == 0
    assert val(after, "certfailover_last_check_timestamp_seconds") == NOW.timestamp() + 60


def test_issuance_errors_per_ca(served: tuple[Metrics, MetricsServer]) -> None:
    m, server = served
    m.inc_issuance_error("ca1")
    m.inc_issuance_error("ca1")
    m.inc_issuance_error("ca2")
    s = scrape(server.url)
    assert val(s, "certfailover_issuance_errors_total", ca="ca1") == 2
    assert val(s, "certfailover_issuance_errors_total", ca="ca2") == 1


def test_forget_cert_and_dropped_programs_remove_series() -> None:
    m = Metrics()
    observe(m, "s/ca1/01", "ca1", active=True, severity="warn",
            programs={"chrome": True, "apple": True})
    observe(m, "s/ca1/01", "ca1", active=True, severity="warn", programs={"chrome": True})
    text = m.render().decode()
    assert 'program="chrome"' in text and 'program="apple"' not in text
    assert "certfailover_cert_health{" in text
    m.forget_cert("s/ca1/01")
    m.forget_cert("never/seen/00")
    text = m.render().decode()
    assert 's/ca1/01' not in text


def test_expired_certificate_has_negative_expiry() -> None:
    m = Metrics()
    observe(m, "s/ca1/01", "ca1", active=True, severity="fail", programs={}, days=-2)
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert fams["certfailover_cert_expiry_seconds"].samples[0].value == -2 * 86400


def test_instances_use_their_own_registry() -> None:
    a, b = Metrics(), Metrics()  # the global registry would raise on duplicate names
    a.inc_failover("x")
    assert b"certfailover_failovers_total{" not in b.render()
    assert b'certfailover_failovers_total{site="x"} 1.0' in a.render()


def test_bad_input_is_refused() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="severity 'bad'"):
        observe(m, "s/ca1/01", "ca1", active=True, severity="bad", programs={})
    with pytest.raises(ValueError, match="timezone-aware"):
        m.set_last_check(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="< 0"):
        m.set_standbys_healthy("s", -1)


def test_endpoint_serves_only_metrics_and_stops(served: tuple[Metrics, MetricsServer]) -> None:
    _, server = served
    resp = requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert resp.status_code == 404
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url, timeout=2)


def test_listen_error_names_the_address(served: tuple[Metrics, MetricsServer]) -> None:
    _, server = served
    with pytest.raises(OSError, match=f"127.0.0.1:{server.port}"):
        Metrics().serve("127.0.0.1", server.port)


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9786", ("127.0.0.1", 9786)), ("[::1]:0", ("::1", 0)),
    ("localhost:80", ("localhost", 80)),
])
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9786", ":9786", "::1:9786", "[zz]:1", "h:99999", "h:x"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_listen(text)


def test_serves_on_ipv6_loopback_when_available() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = Metrics().serve("::1", 0)
    except OSError as exc:
        pytest.skip(f"::1 not configured: {exc}")
    try:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        assert requests.get(server.url, timeout=5).status_code == 200
    finally:
        server.stop()


def test_model_severity_enum_is_accepted() -> None:
    m = Metrics()
    m.observe_cert(site="s", cert_id="s/ca1/01", ca="ca1", not_after=NOW, now=NOW,
                   severity=Severity.FAIL, active=True, programs={})
    assert b'certfailover_cert_health{ca="ca1",cert_id="s/ca1/01",site="s"} 2.0' in m.render()
