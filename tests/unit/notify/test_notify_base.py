from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime

import pytest

from certfailover import notify
from certfailover.events import EventKind
from certfailover.model import Event
from certfailover.notify import (
    EVENT_KINDS,
    Delivery,
    Dispatcher,
    NotifyError,
    event_payload,
    event_severity,
    sign,
)
from certfailover.notify.base import redact_url
from certfailover.notify.command import event_environment
from certfailover.notify.email import format_email

T = datetime(2026, 3, 19, 12, 0, tzinfo=UTC)


def ev(kind: str, site: str = "example.org") -> Event:
    return Event(time=T, site=site, kind=kind, message=f"{kind} happened",
                 data={"from": "a/ca1/01", "to": "a/ca2/02"})


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Event] = []

    def send(self, event: Event) -> None:
        self.seen.append(event)


class Broken:
    name = "broken"

    def send(self, event: Event) -> None:
        raise NotifyError("broken: receiver down")


class Crashing:
    def send(self, event: Event) -> None:
        raise RuntimeError("unexpected bug")


def test_public_api_is_exported() -> None:
    for name in notify.__all__:
        assert hasattr(notify, name), name


def test_severity_of_every_documented_kind() -> None:
    assert event_severity("none_healthy") == "critical"
    assert event_severity("rollback") == "critical"
    assert event_severity("failover") == "warning"
    assert event_severity("issued") == "info"
    assert event_severity("activated") == "info"
    for kind in ("standby_missing", "distrust_forecast", "issuance_failed",
                 "ca_unreachable", "signal_unknown"):
        assert event_severity(kind) == "warning", kind
    assert set(EVENT_KINDS) == {k.value for k in EventKind}  # one home: events.py
    assert event_severity("deploy_failed") == "critical"
    assert event_severity("standby_unusable") == "critical"
    assert event_severity("retired") == "info"


def test_unknown_kind_is_never_silently_info() -> None:
    assert event_severity("replenish_failed") == "warning"


def test_payload_is_the_model_json_plus_severity() -> None:
    p = event_payload(ev("none_healthy"))
    assert p == {"time": "2026-03-19T12:00:00+00:00", "site": "example.org",
                 "kind": "none_healthy", "message": "none_healthy happened",
                 "data": {"from": "a/ca1/01", "to": "a/ca2/02"}, "severity": "critical"}


def test_signature_is_hmac_sha256_hex() -> None:
    body = json.dumps({"a": 1}).encode()
    want = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={want}"
    assert sign(body, "other") != sign(body, "s3cret")


def test_redact_url_drops_path_query_and_userinfo() -> None:
    url = "https://user:pw@hooks.example.com:8443/services/T0/B0/XXXSECRET?token=abc"
    r = redact_url(url)
    assert r == "https://hooks.example.com:8443/..."
    assert "SECRET" not in r and "pw" not in r and "abc" not in r


def test_webhook_repr_and_name_hide_the_url_token() -> None:
    n = notify.WebhookNotifier("https://h.example/hook/TOKEN123", secret="s3cret")
    assert "TOKEN123" not in repr(n) and "s3cret" not in repr(n)
    assert "TOKEN123" not in n.name


@pytest.mark.parametrize("url", ["ftp://x/y", "hooks.example.com/x", ""])
def test_webhook_rejects_non_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="webhook url"):
        notify.WebhookNotifier(url)


def test_email_refuses_password_without_starttls() -> None:
    with pytest.raises(ValueError, match="STARTTLS"):
        notify.EmailNotifier("127.0.0.1", 25, sender="a@x", recipients=["b@x"],
                             starttls=False, username="u", password="p")
    with pytest.raises(ValueError, match="recipient"):
        notify.EmailNotifier("127.0.0.1", 25, sender="a@x", recipients=[])


def test_email_format_has_kind_site_severity() -> None:
    msg = format_email(ev("failover"), sender="cf@x", recipients=["ops@x", "sec@x"])
    assert msg["Subject"].startswith("[certfailover] WARNING failover example.org")
    assert msg["To"] == "ops@x, sec@x"
    assert msg["X-Certfailover-Severity"] == "warning"
    body = msg.get_content()
    assert '"to": "a/ca2/02"' in body


def test_command_environment() -> None:
    env = event_environment(ev("rollback"))
    assert env["CERTFAILOVER_EVENT_KIND"] == "rollback"
    assert env["CERTFAILOVER_EVENT_SITE"] == "example.org"
    assert env["CERTFAILOVER_EVENT_MESSAGE"] == "rollback happened"
    assert env["CERTFAILOVER_EVENT_TIME"] == "2026-03-19T12:00:00+00:00"
    assert env["CERTFAILOVER_EVENT_SEVERITY"] == "critical"
    assert json.loads(env["CERTFAILOVER_EVENT_JSON"])["data"]["from"] == "a/ca1/01"


def test_dispatcher_delivers_to_all_and_survives_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = Recorder("a"), Recorder("b")
    d = Dispatcher([a, Broken(), Crashing(), b])
    with caplog.at_level(logging.WARNING):
        res = d.send(ev("failover"))
    assert len(a.seen) == 1 and len(b.seen) == 1
    assert res == (
        Delivery("a", True),
        Delivery("broken", False, "NotifyError: broken: receiver down"),
        Delivery("Crashing", False, "RuntimeError: unexpected bug"),
        Delivery("b", True),
    )
    assert "broken" in caplog.text and "Crashing" in caplog.text


def test_dispatcher_filters_by_kind_and_severity() -> None:
    r = Recorder("r")
    d = Dispatcher([r], kinds={"failover", "none_healthy", "issued"}, min_severity="warning")
    assert d.send(ev("issued")) == ()  # kind allowed, severity too low
    assert d.send(ev("standby_missing")) == ()  # severity ok, kind filtered
    d.send(ev("failover"))
    d.send(ev("none_healthy"))
    assert [e.kind for e in r.seen] == ["failover", "none_healthy"]


def test_dispatcher_default_sends_everything() -> None:
    r = Recorder("r")
    d = Dispatcher([r])
    for kind in EVENT_KINDS:
        d.send(ev(kind))
    assert [e.kind for e in r.seen] == list(EVENT_KINDS)


def test_dispatcher_rejects_typos() -> None:
    with pytest.raises(ValueError, match="faliover"):
        Dispatcher([], kinds={"faliover"})
    with pytest.raises(ValueError, match="severe"):
        Dispatcher([], min_severity="severe")


def test_odd_data_values_do_not_lose_the_event() -> None:
    from pathlib import Path

    from certfailover.notify.base import event_json

    e = Event(time=T, site="s", kind="issued", message="m", data={"path": Path("/x/y")})
    assert json.loads(event_json(e))["data"]["path"] == "/x/y"
