"""/metrics scraped over HTTP while the daemon (in a thread, short interval) fails a real site over."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from certfailover.wiring import build_daemon
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.ports import free_port
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def by_ca(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["ca"]: v for (n, labels), v in samples.items() if n == name}


def wait_for(url: str, cond: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    deadline = time.monotonic() + timeout
    samples = scrape(url)
    while not cond(samples):
        assert time.monotonic() < deadline, f"metrics never reached the state: {samples}"
        time.sleep(0.1)
        samples = scrape(url)
    return samples


@pytest.fixture
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(tmp_path, [LabCAEntry(c.name, c.directory_url, c.ca_bundle)
                                   for c in (pebble_a, pebble_b)],
                        [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


def test_metrics_show_a_failover_while_the_daemon_runs(lab: Lab) -> None:
    rt = lab.rt
    daemon = build_daemon(rt.engine, rt.config, interval=0.2, metrics_listen=("127.0.0.1", 0))
    assert daemon.metrics_server is not None
    url = daemon.metrics_server.url
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        before = wait_for(url, lambda s: by_ca(s, "certfailover_cert_active") ==
                          {"pebble-a": 1.0, "pebble-b": 0.0}
                          and s.get(("certfailover_standbys_healthy",
                                     frozenset({("site", "www")}))) == 1.0)
        assert before[("certfailover_failovers_total", frozenset({("site", "www")}))] == 0.0
        assert all(v > 86400 for v in by_ca(before, "certfailover_cert_expiry_seconds").values())
        health = by_ca(before, "certfailover_cert_health")
        assert set(health) == {"pebble-a", "pebble-b"} and set(health.values()) <= {0.0, 1.0}
        assert before[("certfailover_last_check_timestamp_seconds", frozenset())] > 0

        rt.db.distrust("pebble-a", rt.engine.clock(), "CA in the news")  # the operator's switch
        after = wait_for(url, lambda s: by_ca(s, "certfailover_cert_active") ==
                         {"pebble-a": 0.0, "pebble-b": 1.0})
        after = wait_for(url, lambda s: s.get(("certfailover_failovers_total",
                                               frozenset({("site", "www")}))) == 1.0)
        assert by_ca(after, "certfailover_cert_health")["pebble-a"] == 2.0, "distrusted: fail"
        assert lab.served_sha() == lab.active().sha256 and lab.active().ca == "pebble-b"
        # pebble-a is distrusted and there is no third CA: no standby, and no issuance error
        assert after[("certfailover_standbys_healthy", frozenset({("site", "www")}))] == 0.0
    finally:
        daemon.stop_event.set()
        thread.join(30)
        daemon.close()
    assert not thread.is_alive()


def test_run_command_serves_metrics_and_stops_on_sigterm(lab: Lab) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "certfailover.cli.main", "--config", str(lab.config_path), "run",
         "--interval", "0.3", "--metrics-listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                samples = scrape(url)
                if by_ca(samples, "certfailover_cert_active").get("pebble-a") == 1.0:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the daemon never exported the active cert"
            time.sleep(0.2)
        assert lab.served_sha() == lab.active().sha256
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
