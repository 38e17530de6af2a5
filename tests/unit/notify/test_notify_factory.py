from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from certfailover.errors import ConfigError
from certfailover.model import Event
from certfailover.notify import (
    CommandNotifier,
    Dispatcher,
    EmailNotifier,
    Limits,
    WebhookNotifier,
)
from certfailover.notify.factory import Routes
from certfailover.notify.factory import build as build_routes
from certfailover.notify.settings import parse

ENV = {"HOOK_SECRET": "whsec-1", "SMTP_PW": "pw-2"}
F = "/etc/certfailover.toml"


def build(raw: dict[str, Any]) -> Routes:
    routes = build_routes(parse(raw, file=F, env=ENV))
    assert routes is not None
    return routes


def test_no_notify_table_is_no_routes() -> None:
    assert build_routes(None) is None


@pytest.mark.parametrize("raw", [{}, {"min_severity": "warning"}, {"webhook": []}])
def test_a_notify_table_without_a_notifier_is_an_error(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^/etc/certfailover\.toml: \[notify\]: configures no "
                                          "notifier"):
        parse(raw, file=F, env=ENV)


def test_a_notifier_that_no_event_reaches_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\[notify.command\]\.min_severity: .*lets no event"):
        parse({"command": {"argv": ["x"], "kinds": ["issued"], "min_severity": "critical"}},
              file=F, env=ENV)
    # the same kinds with a severity they have is fine
    assert parse({"command": {"argv": ["x"], "kinds": ["issued"]}}, file=F, env=ENV).routes


def test_a_notifiers_own_check_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[notify.email\]: "):
        parse({"email": {"host": "h", "sender": "not an address\n", "recipients": ["b@x"]}},
              file=F, env=ENV)


def test_all_three_kinds_with_own_filters() -> None:
    routes = build({
        "min_severity": "warning",
        "webhook": [{"url": "https://h.example/hook", "secret": "env:HOOK_SECRET"},
                    {"url": "http://127.0.0.1:9/x", "kinds": ["issued"],
                     "min_severity": "info"}],
        "email": {"host": "smtp.example", "port": 587, "sender": "cf@example",
                  "recipients": ["ops@example"], "username": "cf", "password": "env:SMTP_PW",
                  "min_severity": "critical"},
        "command": {"argv": ["/bin/true"], "timeout": 5},
    })
    assert len(routes) == 4
    kinds = [type(d._notifiers[0]) for d in routes.dispatchers]
    assert kinds == [WebhookNotifier, WebhookNotifier, EmailNotifier, CommandNotifier]
    assert routes.dispatchers[0]._notifiers[0]._secret == "whsec-1"  # type: ignore[attr-defined]
    assert routes.dispatchers[2]._notifiers[0]._password == "pw-2"  # type: ignore[attr-defined]
    t = datetime(2026, 1, 1, tzinfo=UTC)
    issued = Event(t, "s", "issued", "m")
    failover = Event(t, "s", "failover", "m")
    none = Event(t, "s", "none_healthy", "m")
    assert [d.wants(issued) for d in routes.dispatchers] == [False, True, False, False]
    assert [d.wants(failover) for d in routes.dispatchers] == [True, False, False, True]
    assert [d.wants(none) for d in routes.dispatchers] == [True, False, True, True]


def test_secrets_are_references_never_inline() -> None:
    with pytest.raises(ConfigError, match=r"\[notify.webhook\]\.secret: must be a reference"):
        build({"webhook": {"url": "https://h/x", "secret": "plain-text-secret"}})
    with pytest.raises(ConfigError, match="environment variable NOPE"):
        build({"webhook": {"url": "https://h/x", "secret": "env:NOPE"}})


def test_secret_from_file(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    routes = build({"webhook": {"url": "https://h/x", "secret": f"file:{f}"}})
    assert routes.dispatchers[0]._notifiers[0]._secret == "from-file"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("raw", "where", "msg"), [
    ({"webhook": {"url": "ftp://x"}}, r"\[notify.webhook\]\.url", "http"),
    ({"webhook": {}}, r"\[notify.webhook\]\.url", "is required"),
    ({"webhook": [{"url": "https://a"}, {"url": "https://b", "retires": 2}]},
     r"\[\[notify.webhook\]\] #2\.retires", "unknown key"),
    ({"webhook": {"url": "https://a", "timeout": 0}}, r"\[notify.webhook\]\.timeout", "> 0"),
    ({"email": {"host": "h", "sender": "a@x", "recipients": []}}, r"\[notify.email\]\.recipients", "empty"),
    ({"email": {"host": "h", "sender": "a@x", "recipients": ["b@x"], "username": "u",
                "password": "env:SMTP_PW", "starttls": False}}, r"\[notify.email\]\.starttls", "in clear"),
    ({"email": {"host": "h", "sender": "a@x", "recipients": ["b@x"],
                "ca_bundle": "/no/such.pem"}}, r"\[notify.email\]\.ca_bundle", "does not exist"),
    ({"command": {"argv": []}}, r"\[notify.command\]\.argv", "empty"),
    ({"kinds": ["faliover"], "command": {"argv": ["x"]}}, r"\[notify\]\.kinds", "faliover"),
    ({"min_severity": "loud", "command": {"argv": ["x"]}}, r"\[notify\]\.min_severity", "loud"),
    ({"pager": {}}, r"\[notify\]\.pager", "unknown key"),
])
def test_errors_name_file_table_key(raw: dict[str, Any], where: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=rf"^/etc/certfailover\.toml: {where}: .*{msg}"):
        build(raw)


def test_routes_is_the_engine_notify_port() -> None:
    seen: list[str] = []

    class Rec:
        name = "rec"

        def send(self, event: Event) -> None:
            seen.append(event.kind)

    routes = Routes([Dispatcher([Rec()], kinds={"failover"})])
    routes(Event(datetime(2026, 1, 1, tzinfo=UTC), "s", "failover", "m"))
    routes(Event(datetime(2026, 1, 1, tzinfo=UTC), "s", "issued", "m"))  # filtered out
    report = routes.flush(5)
    assert seen == ["failover"]
    assert [(d.notifier, d.status, d.kind) for d in report] == [("rec", "delivered", "failover")]
    assert routes.close(5)


def test_retry_settings_for_every_notifier() -> None:
    routes = build({
        "queue_size": 7,
        "webhook": {"url": "https://h/x", "timeout": 2, "retries": 1, "backoff": 0.5,
                    "deadline": 4},
        "email": {"host": "h", "sender": "a@x", "recipients": ["b@x"], "retries": 0},
        "command": {"argv": ["/bin/true"], "timeout": 3},
    })
    assert [lane.limits for lane in routes.lanes] == [
        Limits(timeout=2, retries=1, backoff=0.5, deadline=4),
        Limits(timeout=30, retries=0, backoff=5.0),
        Limits(timeout=3, retries=0, backoff=1.0)]
    assert {lane.maxsize for lane in routes.lanes} == {7}
    assert Limits(timeout=10, retries=3, backoff=1).total == 4 * 10 + 1 + 2 + 4
    with pytest.raises(ConfigError, match=r"\[notify\]\.queue_size"):
        build({"queue_size": 0, "command": {"argv": ["x"]}})
    with pytest.raises(ConfigError, match=r"\[notify.command\]\.deadline"):
        build({"command": {"argv": ["x"], "deadline": 0}})


EXAMPLE = Path(__file__).resolve().parents[3] / "contrib" / "certfailover.example.toml"


def test_example_config_notify_table_builds() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    routes = build_routes(parse(raw["notify"], file=str(EXAMPLE), env={
        "CERTFAILOVER_WEBHOOK_SECRET": "s", "CERTFAILOVER_SMTP_PASSWORD": "p"}))
    assert routes is not None
    assert [type(d._notifiers[0]) for d in routes.dispatchers] == [
        WebhookNotifier, EmailNotifier, CommandNotifier]
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert [d.wants(Event(t, "s", "failover", "m")) for d in routes.dispatchers] == [
        True, False, True]
