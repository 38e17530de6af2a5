"""Per-notifier queues and workers: a stuck notifier delays only itself; deadlines, retries,
queue bound, flush/close reports; e-mail headers stay one line; the command hook's environment."""

from __future__ import annotations

import email
import email.policy
import importlib.util
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from certfailover.model import Event
from certfailover.notify import (
    Background,
    CommandNotifier,
    Dispatcher,
    EmailNotifier,
    Limits,
    NotifyError,
    Routes,
    WebhookNotifier,
)
from certfailover.notify.email import format_email

T = datetime(2026, 3, 19, 12, 0, tzinfo=UTC)


def ev(i: int, kind: str = "failover") -> Event:
    return Event(T, f"s{i}", kind, f"event {i}")


class Recorder:
    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.seen: list[str] = []
        self.got = threading.Event()

    def send(self, event: Event) -> None:
        self.seen.append(event.site)
        self.got.set()


class Stuck:
    """Blocks every attempt until released (or for ever)."""

    def __init__(self, *, timeout: float = 60, retries: int = 0, backoff: float = 0.0,
                 deadline: float | None = None) -> None:
        self.name = "stuck"
        self.limits = Limits(timeout=timeout, retries=retries, backoff=backoff, deadline=deadline)
        self.release = threading.Event()
        self.attempts: list[tuple[str, float]] = []  # (site, timeout given)

    def attempt(self, event: Event, timeout: float) -> None:
        self.attempts.append((event.site, timeout))
        self.release.wait()


def routes(*notifiers: object, queue_size: int = 100, grace: float = 0.1) -> Routes:
    return Routes([Dispatcher([n]) for n in notifiers],  # type: ignore[list-item]
                  queue_size=queue_size, grace=grace)


def test_a_notifier_that_blocks_for_ever_does_not_stop_another() -> None:
    stuck, rec = Stuck(), Recorder()
    r = routes(stuck, rec)
    started = time.monotonic()
    for i in range(5):
        r(ev(i))
    assert time.monotonic() - started < 0.1, "enqueueing never waits"
    deadline = time.monotonic() + 1.0
    while len(rec.seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.seen == ["s0", "s1", "s2", "s3", "s4"], "all delivered within 1 s beside a stuck one"
    report = r.flush(0)
    assert [d.site for d in report if d.notifier == "rec" and d.status == "delivered"] == [
        "s0", "s1", "s2", "s3", "s4"]
    stuck_report = [(d.site, d.status) for d in report if d.notifier == "stuck"]
    assert stuck_report == [(f"s{i}", "pending") for i in range(5)]
    stuck.release.set()


def test_a_stuck_delivery_ends_at_its_deadline_and_is_retried_a_bounded_number_of_times() -> None:
    stuck = Stuck(timeout=0.3, retries=2, backoff=0.05)
    r = routes(stuck)
    started = time.monotonic()
    r(ev(0))
    report = r.flush(5)
    took = time.monotonic() - started
    assert [d.status for d in report] == ["failed"]
    d = report[0]
    assert d.attempts == 3 and len(stuck.attempts) == 3
    assert all(t == pytest.approx(0.3) for _, t in stuck.attempts)
    assert "no answer within 0.3s (abandoned)" in (d.error or "")
    # 3 x (0.3 + grace 0.1) + 0.05 + 0.1 of backoff
    assert 0.9 < took < 1.2 + 0.15 + 0.5, took
    assert r.lanes[0].abandoned == 3
    stuck.release.set()


def test_the_whole_delivery_has_a_deadline() -> None:
    stuck = Stuck(timeout=0.4, retries=10, backoff=0.0, deadline=1.2)
    r = routes(stuck)  # grace 0.1: each abandoned attempt takes 0.5 s
    started = time.monotonic()
    r(ev(0))
    report = r.flush(5)
    assert time.monotonic() - started < 1.2 + 0.1 + 0.3
    assert report[0].status == "failed" and report[0].attempts == 3  # 0.4 + 0.4 + 0.2
    assert [t for _, t in stuck.attempts][-1] == pytest.approx(0.2, abs=0.1)
    stuck.release.set()


def test_not_retryable_errors_are_not_retried() -> None:
    calls: list[int] = []

    class Refusing:
        name = "refusing"
        limits = Limits(timeout=1, retries=3, backoff=0)

        def attempt(self, event: Event, timeout: float) -> None:
            calls.append(1)
            raise NotifyError("HTTP 403 (not retried)", retryable=False)

    r = routes(Refusing())
    r(ev(0))
    [d] = r.flush(5)
    assert (d.status, d.attempts, d.error) == ("failed", 1, "HTTP 403 (not retried)")
    assert calls == [1]


def test_full_queue_drops_the_oldest_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    stuck = Stuck()
    r = routes(stuck, queue_size=2)
    r(ev(0))
    deadline = time.monotonic() + 5
    while not stuck.attempts and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker is on event 0
    for i in range(1, 5):
        r(ev(i))
    assert r.dropped == 2
    assert "queue full (2): dropped the oldest event (failover event for s2; 2 dropped so far)" \
        in caplog.text
    report = [(d.site, d.status) for d in r.flush(0)]
    assert report == [("s1", "dropped"), ("s2", "dropped"), ("s0", "pending"),
                      ("s3", "pending"), ("s4", "pending")]
    stuck.release.set()
    assert [(d.site, d.status) for d in r.flush(5)] == [
        ("s0", "delivered"), ("s3", "delivered"), ("s4", "delivered")]


def test_flush_reports_pending_then_delivered() -> None:
    gate = threading.Event()

    class Slow:
        name = "slow"

        def send(self, event: Event) -> None:
            gate.wait(5)

    r = routes(Slow())
    r(ev(0))
    r(ev(1))
    started = time.monotonic()
    first = r.flush(0.2)
    assert 0.15 < time.monotonic() - started < 1
    assert [(d.site, d.status) for d in first] == [("s0", "pending"), ("s1", "pending")]
    assert r.pending() == 2
    gate.set()
    second = r.flush(5)
    assert [(d.site, d.status, d.ok) for d in second] == [("s0", "delivered", True),
                                                          ("s1", "delivered", True)]
    assert r.flush(0) == [] and r.pending() == 0
    assert r.close(1)


def test_close_delivers_what_it_can_and_stops_in_time() -> None:
    stuck, rec = Stuck(timeout=30), Recorder()
    r = routes(stuck, rec)
    for i in range(3):
        r(ev(i))
    started = time.monotonic()
    assert r.close(0.5) is False, "the stuck notifier could not deliver"
    assert time.monotonic() - started < 0.5 + 0.5 + 0.3
    assert rec.seen == ["s0", "s1", "s2"]
    r(ev(9))  # after close: dropped, never raises, never blocks
    stuck.release.set()
    report = r.flush(2)
    assert ("s9", "dropped") in [(d.site, d.status) for d in report if d.notifier == "rec"]
    assert {d.status for d in report if d.notifier == "stuck"} <= {"delivered", "dropped"}


def test_background_of_routes_passes_through() -> None:
    rec = Recorder()
    r = routes(rec)
    bg = Background(r)
    assert bg.routes is r
    bg(ev(0))
    assert rec.got.wait(1)
    assert [d.status for d in bg.flush(1)] == ["delivered"]
    assert bg.close(1) and bg.dropped == 0
    with pytest.raises(RuntimeError, match="closed"):
        bg(ev(1))


# ------------------------------------------------------------------ webhook with a drip

@pytest.fixture
def drip() -> Iterator[str]:
    """Accepts, then sends one byte of a status line every 0.2 s for ever."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/hook"
    stop.set()
    srv.close()


def test_a_dripping_webhook_does_not_hold_its_worker_past_the_deadline(drip: str) -> None:
    hook = WebhookNotifier(drip, timeout=1.0, retries=1, backoff=0.1)
    rec = Recorder()
    r = routes(hook, rec, grace=0.5)
    started = time.monotonic()
    r(ev(0))
    assert rec.got.wait(1)
    report = [d for d in r.flush(10) if d.notifier == hook.name]
    took = time.monotonic() - started
    assert [(d.status, d.attempts) for d in report] == [("failed", 2)]
    assert took < 2 * (1.0 + 0.5) + 0.1 + 0.5, took
    if importlib.util.find_spec("certfailover.net") is not None:
        # net.deadline ends each attempt itself: nothing left running in the background
        assert r.lanes[0].abandoned == 0
        assert took < 2 * 1.0 + 0.1 + 0.5, took


# ------------------------------------------------------------------ e-mail

ROLLBACK = ("www: activation of www/b/01 could not be verified; rolled back\n"
            "nginx -t:\nnginx: [emerg] cannot load certificate \"/x/fullchain.pem\"\r\n"
            "nginx: configuration file /etc/nginx/nginx.conf test failed\n")


def test_multi_line_messages_give_one_line_headers_and_the_full_body() -> None:
    msg = format_email(Event(T, "www", "rollback", ROLLBACK), sender="cf@x",
                       recipients=["ops@x"])
    for name, value in msg.items():
        assert "\r" not in str(value) and "\n" not in str(value), name
    subject = str(msg["Subject"])
    assert subject.startswith("[certfailover] CRITICAL rollback www: www: activation")
    assert "nginx -t: nginx: [emerg]" in subject and len(subject) <= 200
    body = msg.get_content()
    assert "nginx -t:\nnginx: [emerg] cannot load certificate" in body
    assert "test failed" in body
    long = format_email(Event(T, "www", "rollback", "x" * 1000), sender="a@x", recipients=["b@x"])
    assert len(str(long["Subject"])) == 200 and str(long["Subject"]).endswith("...")
    with pytest.raises(ValueError, match="one non-empty line"):
        EmailNotifier("h", 25, sender="a@x\nBcc: evil@x", recipients=["b@x"], starttls=False)


@pytest.fixture
def smtp_box() -> Iterator[tuple[int, list[EmailMessage]]]:
    box: list[EmailMessage] = []

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            msg = email.message_from_bytes(envelope.original_content or b"",
                                           policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            box.append(msg)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


def test_a_rollback_with_nginx_output_is_mailed(smtp_box: tuple[int, list[EmailMessage]]) -> None:
    port, box = smtp_box
    mail = EmailNotifier("127.0.0.1", port, sender="cf@example.test",
                         recipients=["ops@example.test"], starttls=False, timeout=5)
    r = routes(mail)
    r(Event(T, "www", "rollback", ROLLBACK))
    assert [d.status for d in r.flush(10)] == ["delivered"]
    [msg] = box
    assert str(msg["Subject"]).startswith("[certfailover] CRITICAL rollback www:")
    assert "\n" not in str(msg["Subject"])
    body = msg.get_content().replace("\r\n", "\n")
    assert "nginx -t:\nnginx: [emerg] cannot load certificate" in body
    assert "configuration file /etc/nginx/nginx.conf test failed" in body


# ------------------------------------------------------------------ command environment

def test_the_command_hook_gets_a_clean_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_TEST_EAB_HMAC", "very-secret-eab-key")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    out = tmp_path / "env.json"
    script = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    hook = CommandNotifier([sys.executable, "-c", script, str(out)], timeout=30)
    r = routes(hook)
    r(ev(0))
    assert [d.status for d in r.flush(30)] == ["delivered"]
    env = json.loads(out.read_text())
    assert "CF_TEST_EAB_HMAC" not in env
    assert "very-secret-eab-key" not in out.read_text()
    assert env["PATH"] == os.environ["PATH"] and env["LC_TIME"] == "C.UTF-8"
    assert env["CERTFAILOVER_EVENT_SITE"] == "s0"
    allowed = {"PATH", "LANG", "LANGUAGE"}
    # the interpreter itself may add a few (e.g. macOS's __CF_USER_TEXT_ENCODING); Linux none
    extra = {k for k in env if k not in allowed and not k.startswith(("LC_", "CERTFAILOVER_"))}
    assert extra <= {"__CF_USER_TEXT_ENCODING"}, extra
