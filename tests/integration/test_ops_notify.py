"""A real failover (two Pebble CAs, nginx) run by the daemon reaches a webhook and a mailbox.

The receivers are real: an http.server that checks the HMAC signature, aiosmtpd with STARTTLS.
The notifiers come from the `[notify]` table of the config, as `certfailover run` builds them,
and a webhook that never answers does not hold up the tick.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from certfailover import config as config_mod
from certfailover.notify import SIGNATURE_HEADER
from certfailover.wiring import build, build_daemon
from certfailover_lab.httpd import quiet, serving
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.ports import free_port
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration

SECRET = "hook-secret-5150"


@dataclass
class Hook:
    url: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0


@pytest.fixture
def hook() -> Iterator[Hook]:
    rec = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(want, self.headers.get(SIGNATURE_HEADER, "")):
                rec.events.append(json.loads(body))
                self.send_response(204)
            else:
                rec.bad_signatures += 1
                self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        log_message = quiet

    with serving(Handler) as server:
        rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/certfailover"
        yield rec


@dataclass
class Mailbox:
    port: int
    ca: trustme.CA
    messages: list[EmailMessage] = field(default_factory=list)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port(), ca=trustme.CA())

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            msg = email.message_from_bytes(envelope.original_content or b"",
                                           policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            box.messages.append(msg)
            return "250 OK"

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    box.ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port,
                            tls_context=server_ctx, require_starttls=True)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


class BlackHole:
    """Accepts connections and never answers, until released."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def release(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def entries(*cas: PebbleCA) -> list[LabCAEntry]:
    return [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in cas]


@pytest.fixture
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(tmp_path, entries(pebble_a, pebble_b),
                        [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


def test_failover_notifies_webhook_and_email(lab: Lab, hook: Hook, mailbox: Mailbox,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = tmp_path / "smtp-ca.pem"
    mailbox.ca.cert_pem.write_to_path(str(ca_file))
    hole = BlackHole()
    monkeypatch.setenv("CF_TEST_HOOK_SECRET", SECRET)
    with lab.config_path.open("a") as f:
        f.write(f"""
[notify]
min_severity = "info"

[[notify.webhook]]
url = "{hook.url}"
secret = "env:CF_TEST_HOOK_SECRET"
retries = 1
backoff = 0.1

[[notify.webhook]]
url = "http://127.0.0.1:{hole.port}/never-answers"
kinds = ["failover"]
timeout = 60
retries = 0

[[notify.email]]
host = "127.0.0.1"
port = {mailbox.port}
sender = "certfailover@example.test"
recipients = ["ops@example.test"]
ca_bundle = "{ca_file}"
min_severity = "warning"
timeout = 10
""")
    rt = build(config_mod.load(lab.config_path))
    daemon = build_daemon(rt.engine, rt.config, interval=0.2)
    try:
        daemon.tick()
        assert lab.active().ca == "pebble-a"
        assert rt.engine.orders is not None and rt.engine.orders.wait_idle(30), \
            "the standby from pebble-b is ordered in the background"
        rt.db.distrust("pebble-a", rt.engine.clock(), "CA in the news")
        started = time.monotonic()
        report = daemon.tick()
        took = time.monotonic() - started
        assert "failover" in [e.kind for e in report.events]
        assert lab.active().ca == "pebble-b" and lab.served_sha() == lab.active().sha256
        assert took < 20, f"the tick waited for a webhook that never answers ({took:.1f}s)"
    finally:
        hole.release()
        assert daemon.background is not None
        assert daemon.background.close(30), "queued notifications were delivered"
        daemon.close()

    assert hook.bad_signatures == 0
    kinds = [e["kind"] for e in hook.events]
    assert "activated" in kinds and "issued" in kinds and "failover" in kinds
    fo = next(e for e in hook.events if e["kind"] == "failover")
    assert fo["site"] == "www" and fo["severity"] == "warning"
    assert fo["data"]["cert"] == lab.active().id and "distrusted" in fo["message"]

    subjects = [str(m["Subject"]) for m in mailbox.messages]
    assert any(s.startswith("[certfailover] WARNING failover www:") for s in subjects), subjects
    assert not any(" activated " in s for s in subjects), "info events filtered by min_severity"
    mail = next(m for m in mailbox.messages if m["X-Certfailover-Event"] == "failover")
    assert lab.active().id in mail.get_content()
