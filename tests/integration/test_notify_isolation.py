"""`certfailover distrust` switches first, whatever its webhooks do.

A real CLI process, a lab site (two Pebble CAs, nginx) and three webhooks: one healthy, one
that accepts and never answers (or drips a byte every 2 s), with the default webhook settings
(timeout 10 s, 3 retries: up to ~49 s per event before notifications were isolated). The new
certificate must be served before the command exits, the command must end within
--notify-timeout (+ the switch), and the undelivered notification must be reported.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from certfailover.model import CertState
from certfailover_lab.httpd import quiet, serving
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration

WEBHOOK_TIMEOUT = 10.0  # the webhook default
NOTIFY_TIMEOUT = 3.0


class Bad:
    """A webhook receiver that accepts and never answers ("hang") or sends its status line one
    byte every 2 s ("drip")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "hang":
                self.stop.wait()
                return
            for b in b"HTTP/1.1 200 OK\r\n" + b"X-Drip: " + b"." * 1000:
                if self.stop.wait(2.0):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def good() -> Iterator[tuple[str, list[str]]]:
    kinds: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            kinds.append(json.loads(body)["kind"])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        log_message = quiet  # type: ignore[assignment]

    with serving(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/ok", kinds


@pytest.fixture
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    entries = [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (pebble_a, pebble_b)]
    yield from make_lab(tmp_path, entries, [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


@pytest.mark.parametrize(("mode", "as_json"), [("hang", False), ("drip", True)])
def test_distrust_switches_first_and_reports_the_undelivered_notification(
        lab: Lab, good: tuple[str, list[str]], mode: str, as_json: bool) -> None:
    lab.rt.engine.tick()  # a standby from pebble-b (no notifications configured yet)
    assert lab.active().ca == "pebble-a"
    standby = next(c for c in lab.rt.db.certs("www")
                   if c.ca == "pebble-b" and c.state is CertState.STANDBY)
    good_url, good_kinds = good
    bad = Bad(mode)
    with lab.config_path.open("a") as f:
        f.write(f"""
[notify]
min_severity = "warning"

[[notify.webhook]]
url = "{good_url}"

[[notify.webhook]]
url = "http://127.0.0.1:{bad.port}/{mode}"
""")
    argv = [sys.executable, "-m", "certfailover.cli.main", "--config", str(lab.config_path)]
    argv += ["--json"] if as_json else []
    argv += ["distrust", "pebble-a", "--reason", "in the news",
             "--notify-timeout", str(NOTIFY_TIMEOUT)]
    try:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        served_while_running = False
        while proc.poll() is None and time.monotonic() - started < 60:
            if lab.served_sha() == standby.sha256:
                served_while_running = proc.poll() is None
                break
            time.sleep(0.05)
        switched_at = time.monotonic() - started
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        bad.close()
    assert proc.returncode == 0, err
    assert served_while_running, f"the new certificate was served only after exit ({err})"
    assert lab.active().id == standby.id and lab.served_sha() == standby.sha256
    # the old code took ~49 s per event for such a webhook (4 x 10 s + backoff)
    assert took < WEBHOOK_TIMEOUT + NOTIFY_TIMEOUT + 5, (took, err)
    assert took >= NOTIFY_TIMEOUT - 0.5, "it waited for the notifications, up to the timeout"
    assert bad.connections >= 1
    print(f"{mode}: new certificate served after {switched_at:.1f}s, command took {took:.1f}s")
    print("\n".join(line for line in err.splitlines() if line.startswith("notify ")))

    bad_name = f"webhook http://127.0.0.1:{bad.port}/..."
    good_name = f"webhook {good_url.rsplit('/', 1)[0]}/..."
    if as_json:
        doc = json.loads(out)
        kinds = [e["kind"] for e in doc["switch"]]
        assert "failover" in kinds
        notes = doc["notifications"]
        bad_notes = [n for n in notes if n["notifier"] == bad_name]
        assert bad_notes and all(n["status"] != "delivered" for n in bad_notes), notes
        assert any(n["status"] == "pending" and n["kind"] == "distrust" for n in bad_notes)
        good_notes = [n for n in notes if n["notifier"] == good_name]
        assert {"distrust", "failover"} <= {n["kind"] for n in good_notes}
        assert all(n["status"] == "delivered" for n in good_notes), good_notes
    else:
        assert "www failover:" in out
        assert f"notify {bad_name}: " in err and " pending" in err, err
        assert f"notify {good_name}: " in err and f"notify {good_name}: www" not in err, err
        assert "delivered" in err.split(f"notify {good_name}: ")[1].splitlines()[0]
    assert {"distrust", "failover"} <= set(good_kinds)
