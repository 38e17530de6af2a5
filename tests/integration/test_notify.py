"""Notifications against real local receivers: aiosmtpd (STARTTLS + AUTH), http.server, a process."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from certfailover.model import Event
from certfailover.notify import (
    SIGNATURE_HEADER,
    CommandNotifier,
    Dispatcher,
    EmailNotifier,
    NotifyError,
    WebhookNotifier,
)
from certfailover_lab.httpd import quiet, serving

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 19, 12, 0, tzinfo=UTC)
SECRET = "whsec-9f8e7d"
PASSWORD = "smtp-pass-4242"


def failover_event() -> Event:
    return Event(time=T, site="shop.example", kind="failover",
                 message="ca1 revoked the active certificate; now serving ca2",
                 data={"from": "shop.example/ca1/0a", "to": "shop.example/ca2/0b"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- HTTP receiver

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int]  # answers in order; the last one repeats
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(url="", statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            rec.requests.append(Received(self.path, dict(self.headers.items()), body))
            status = rec.statuses[min(len(rec.requests), len(rec.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        log_message = quiet

    with serving(Handler) as server:
        rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook/TOKEN-abc"
        yield rec


def test_webhook_delivers_signed_json(receiver: Receiver) -> None:
    WebhookNotifier(receiver.url, secret=SECRET, timeout=5, retries=0, backoff=0).send(
        failover_event())
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req.path == "/hook/TOKEN-abc"
    assert req.headers["Content-Type"] == "application/json"
    want = hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
    assert req.headers[SIGNATURE_HEADER] == f"sha256={want}"
    doc = json.loads(req.body)
    assert doc["kind"] == "failover" and doc["severity"] == "warning"
    assert doc["site"] == "shop.example" and doc["time"] == "2026-03-19T12:00:00+00:00"
    assert doc["data"]["to"] == "shop.example/ca2/0b"


def test_webhook_without_secret_sends_no_signature(receiver: Receiver) -> None:
    WebhookNotifier(receiver.url, retries=0).send(failover_event())
    assert SIGNATURE_HEADER not in receiver.requests[0].headers


def test_webhook_retries_on_5xx_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 200]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        time.sleep(s)

    WebhookNotifier(receiver.url, secret=SECRET, retries=3, backoff=0.05, sleep=sleep).send(
        failover_event())
    assert len(receiver.requests) == 3
    assert slept == [0.05, 0.1]
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1  # the same signed body each time
    assert len({r.headers[SIGNATURE_HEADER] for r in receiver.requests}) == 1


def test_webhook_retries_are_bounded(receiver: Receiver) -> None:
    receiver.statuses = [503]
    n = WebhookNotifier(receiver.url, retries=2, backoff=0.01)
    with pytest.raises(NotifyError, match="gave up after 3 attempts: HTTP 503"):
        n.send(failover_event())
    assert len(receiver.requests) == 3


def test_webhook_does_not_retry_4xx(receiver: Receiver) -> None:
    receiver.statuses = [403]
    with pytest.raises(NotifyError, match="HTTP 403"):
        WebhookNotifier(receiver.url, retries=3, backoff=0.01).send(failover_event())
    assert len(receiver.requests) == 1


def test_unreachable_receiver_does_not_stop_dispatcher_nor_leak_secrets(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook/DEADTOKEN"
    broken = WebhookNotifier(dead, secret=SECRET, timeout=2, retries=2, backoff=0.01)
    working = WebhookNotifier(receiver.url, secret=SECRET, retries=0)
    with caplog.at_level(logging.DEBUG, logger="certfailover"):
        res = Dispatcher([broken, working]).send(failover_event())
    assert [d.ok for d in res] == [False, True]
    assert res[0].error is not None and "gave up after 3 attempts" in res[0].error
    assert len(receiver.requests) == 1
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("certfailover"))
    assert "gave up" in ours
    assert SECRET not in ours and "DEADTOKEN" not in ours and "TOKEN-abc" not in ours


# --------------------------------------------------------------------------- SMTP receiver

@dataclass
class Mailbox:
    port: int
    ca: trustme.CA
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def _start_smtp(box: Mailbox, *, tls: bool) -> Controller:
    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session,
                              envelope: Envelope) -> str:
            raw = envelope.original_content or b""
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            box.messages.append(msg)
            box.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            return "250 OK"

    def authenticator(server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"certfailover"
              and auth_data.password == PASSWORD.encode())
        if ok:
            box.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
    if tls:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        box.ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        kwargs.update(tls_context=server_ctx, require_starttls=True, auth_require_tls=True)
    else:
        kwargs.update(auth_require_tls=False)
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port(), ca=trustme.CA())
    controller = _start_smtp(box, tls=True)
    try:
        yield box
    finally:
        controller.stop()


def test_email_over_starttls_with_auth_arrives(mailbox: Mailbox) -> None:
    n = EmailNotifier("127.0.0.1", mailbox.port, sender="certfailover@shop.example",
                      recipients=["ops@shop.example", "oncall@shop.example"],
                      username="certfailover", password=PASSWORD,
                      ssl_context=mailbox.client_context(), timeout=10)
    n.send(failover_event())
    assert mailbox.logins == ["certfailover"]
    assert mailbox.envelopes == [("certfailover@shop.example",
                                  ["ops@shop.example", "oncall@shop.example"])]
    msg = mailbox.messages[0]
    assert msg["Subject"].startswith("[certfailover] WARNING failover shop.example")
    assert msg["X-Certfailover-Event"] == "failover"
    body = msg.get_content()
    assert "now serving ca2" in body and "shop.example/ca2/0b" in body
    assert PASSWORD not in body


def test_email_rejects_an_untrusted_server_certificate(mailbox: Mailbox) -> None:
    ctx = ssl.create_default_context()
    trustme.CA().configure_trust(ctx)  # a different CA
    n = EmailNotifier("127.0.0.1", mailbox.port, sender="a@x", recipients=["b@x"],
                      username="certfailover", password=PASSWORD, ssl_context=ctx, timeout=10)
    with pytest.raises(NotifyError, match="SSLCertVerificationError"):
        n.send(failover_event())
    assert mailbox.messages == [] and mailbox.logins == []


def test_email_wrong_password_is_a_clear_error(mailbox: Mailbox) -> None:
    n = EmailNotifier("127.0.0.1", mailbox.port, sender="a@x", recipients=["b@x"],
                      username="certfailover", password="wrong-pw-77",
                      ssl_context=mailbox.client_context(), timeout=10)
    with pytest.raises(NotifyError, match="authentication failed") as info:
        n.send(failover_event())
    assert "wrong-pw-77" not in str(info.value)
    assert mailbox.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_refuses_a_server_without_starttls() -> None:
    box = Mailbox(port=free_port(), ca=trustme.CA())
    controller = _start_smtp(box, tls=False)
    try:
        n = EmailNotifier("127.0.0.1", box.port, sender="a@x", recipients=["b@x"],
                          username="certfailover", password=PASSWORD, timeout=10)
        with pytest.raises(NotifyError, match="does not offer STARTTLS"):
            n.send(failover_event())
        assert box.logins == [] and box.messages == []
    finally:
        controller.stop()


def test_failover_reaches_webhook_and_email_through_one_dispatcher(
        receiver: Receiver, mailbox: Mailbox) -> None:
    d = Dispatcher(
        [WebhookNotifier(receiver.url, secret=SECRET, retries=0),
         EmailNotifier("127.0.0.1", mailbox.port, sender="cf@x", recipients=["ops@x"],
                       username="certfailover", password=PASSWORD,
                       ssl_context=mailbox.client_context(), timeout=10)],
        kinds={"failover", "none_healthy"}, min_severity="warning")
    assert [x.ok for x in d.send(failover_event())] == [True, True]
    assert d.send(Event(time=T, site="shop.example", kind="issued", message="new standby")) == ()
    assert len(receiver.requests) == 1 and len(mailbox.messages) == 1


# --------------------------------------------------------------------------- command hook

def test_command_hook_gets_event_in_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    script = ("import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
              "if k.startswith('CERTFAILOVER_')}, open(sys.argv[1], 'w'))")
    CommandNotifier([sys.executable, "-c", script, str(out)], timeout=30).send(failover_event())
    env = json.loads(out.read_text())
    assert env["CERTFAILOVER_EVENT_KIND"] == "failover"
    assert env["CERTFAILOVER_EVENT_SITE"] == "shop.example"
    assert env["CERTFAILOVER_EVENT_MESSAGE"].endswith("now serving ca2")
    assert env["CERTFAILOVER_EVENT_TIME"] == "2026-03-19T12:00:00+00:00"
    assert json.loads(env["CERTFAILOVER_EVENT_JSON"])["data"]["from"] == "shop.example/ca1/0a"


def test_command_hook_failure_and_missing_binary(tmp_path: Path) -> None:
    bad = CommandNotifier([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    with pytest.raises(NotifyError, match="exit status 3: boom"):
        bad.send(failover_event())
    with pytest.raises(NotifyError, match="cannot run"):
        CommandNotifier([str(tmp_path / "no-such-hook")]).send(failover_event())
    slow = CommandNotifier([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    with pytest.raises(NotifyError, match="timed out"):
        slow.send(failover_event())
