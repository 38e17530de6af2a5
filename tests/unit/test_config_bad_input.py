"""Every bad input in the config is a ConfigError naming the file and the table.key, raised by
config.load before anything is created (the store directory must not exist afterwards); the
CLI turns it into exit code 2. One row per class of bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from certfailover import config
from certfailover.cli.main import main
from certfailover.errors import ConfigError
from certfailover.servers.registry import SpecError, check_spec

BASE = """\
[store]
directory = "store"

[[ca]]
name = "a"
directory = "https://a.test/dir"

[[ca]]
name = "b"
directory = "https://b.test/dir"

[[server]]
name = "web"
type = "nginx"
test = ["nginx", "-t"]

[[site]]
name = "www"
domains = ["www.example.test", "example.test"]
cas = ["a", "b"]
server = "web"
endpoints = ["127.0.0.1:8443"]
"""

SITE_DOMAINS = 'domains = ["www.example.test", "example.test"]'
LONG = "x" * 101


def _domain(extra: str) -> tuple[str, str]:
    """Add `extra` as domains[2] of site 'www'."""
    return SITE_DOMAINS, f'domains = ["www.example.test", "example.test", {extra}]'


def _append(text: str) -> tuple[str, str]:
    return BASE, BASE + "\n" + text + "\n"


# (id, (old, new) replaced once in BASE, table.key named, part of the message)
CASES: list[tuple[str, tuple[str, str], str, str]] = [
    # -- [[server]]: checked by servers.registry at load
    ("server-key-typo", ('test = ["nginx", "-t"]', 'tset = ["nginx", "-t"]'),
     "[[server]] 'web'.tset", "is not a key of a nginx server"),
    ("server-unknown-type", ('type = "nginx"', 'type = "lighttpd"'),
     "[[server]] 'web'.type", "must be one of"),
    ("server-argv-as-string", ('test = ["nginx", "-t"]', 'test = "nginx -t"'),
     "[[server]] 'web'.test", "must be a list of strings"),
    ("server-nginx-relative-pid-file",
     ('test = ["nginx", "-t"]', 'test = ["nginx", "-t"]\npid_file = "run/nginx.pid"'),
     "[[server]] 'web'.pid_file", "must be the absolute path"),
    ("server-haproxy-no-socket", ('type = "nginx"\ntest = ["nginx", "-t"]', 'type = "haproxy"'),
     "[[server]] 'web'.socket", "is required"),
    ("server-files-bad-role",
     ('type = "nginx"\ntest = ["nginx", "-t"]', 'type = "files"\npaths = {certificate = "/x"}'),
     "[[server]] 'web'.paths.certificate", "is not one of"),
    # -- tables parsed by other modules, validated at load
    ("schedule-bad-duration", _append('[schedule]\ncrl = "soon"'), "[schedule].crl",
     "not a duration"),
    ("schedule-unknown-key", _append('[schedule]\ncrll = "5m"'), "[schedule].crll",
     "unknown key"),
    ("schedule-zero-period", _append('[schedule]\nocsp = 0'), "[schedule].ocsp", "> 0"),
    ("schedule-not-a-table", ("[store]", 'schedule = "5m"\n[store]'), "[schedule]",
     "must be a table"),
    ("metrics-bad-listen", _append('[metrics]\nlisten = "9786"'), "[metrics].listen", ""),
    ("metrics-unknown-key", _append('[metrics]\nlisen = "127.0.0.1:9786"'), "[metrics].lisen",
     "unknown key"),
    ("trust-zero-refresh", _append('[trust]\nrefresh = "0s"'), "[trust].refresh",
     "must be positive"),
    ("trust-unknown-key", _append('[trust]\nsource = ["x=y"]'), "[trust].source", "unknown key"),
    ("notify-bad-url", _append('[notify.webhook]\nurl = "ftp://hooks.test/x"'),
     "[notify.webhook].url", "http"),
    ("notify-zero-timeout", _append('[notify.command]\nargv = ["true"]\ntimeout = 0'),
     "[notify.command].timeout", "must be > 0"),
    ("notify-unknown-key", _append('[notify]\nmin_severty = "info"'), "[notify].min_severty",
     "unknown key"),
    # -- unknown or unused top-level tables and keys
    ("unused-revocation-table", _append('[revocation]\nhard_fail_after = "24h"'),
     "[revocation]", "unknown table"),
    ("unknown-table-array", _append('[[sites]]\nname = "x"'), "[[sites]]", "unknown table"),
    ("unknown-top-level-key", ("[store]", 'interval = 5\n[store]'), "(top level).interval",
     "unknown key"),
    # -- [[site]] domains
    ("domain-wildcard", _domain('"*.example.test"'), "[[site]] 'www'.domains[2]",
     "no challenge that can prove a wildcard is configured; DNS-01 is needed"),
    ("domain-space", _domain('"shop example.test"'), "[[site]] 'www'.domains[2]",
     "whitespace"),
    ("domain-url", _domain('"https://shop.example.test/"'), "[[site]] 'www'.domains[2]",
     "not a DNS name (give only the name, e.g. 'shop.example.test')"),
    ("domain-ipv4", _domain('"192.0.2.1"'), "[[site]] 'www'.domains[2]", "IP address"),
    ("domain-ipv6", _domain('"2001:db8::1"'), "[[site]] 'www'.domains[2]", "IP address"),
    ("domain-port", _domain('"shop.example.test:443"'), "[[site]] 'www'.domains[2]", "port"),
    ("domain-duplicate", _domain('"example.test"'), "[[site]] 'www'.domains[2]",
     "'example.test' is a duplicate of domains[1]"),
    ("domain-duplicate-after-normalising", _domain('"WWW.Example.Test."'),
     "[[site]] 'www'.domains[2]", "is a duplicate of domains[0]"),
    ("domain-label-over-63", _domain(f'"{"l" * 64}.example.test"'),
     "[[site]] 'www'.domains[2]", "64 characters long; at most 63"),
    ("domain-name-over-253", _domain('"' + ".".join(["n" * 60] * 4) + '.example.test"'),
     "[[site]] 'www'.domains[2]", "at most 253"),
    ("domain-empty-label", _domain('"shop..example.test"'), "[[site]] 'www'.domains[2]",
     "empty label"),
    ("domain-bad-character", _domain('"shop_1.example.test"'), "[[site]] 'www'.domains[2]",
     "not a valid DNS name"),
    # -- numbers, durations, URLs and name lengths
    ("forecast-days-negative", ('server = "web"', 'server = "web"\nforecast_days = -1'),
     "[[site]] 'www'.forecast_days", ">= 0"),
    ("renew-fraction-zero", ('server = "web"', 'server = "web"\nrenew_fraction = 0'),
     "[[site]] 'www'.renew_fraction", "between 0 and 1"),
    ("renew-fraction-one", ('server = "web"', 'server = "web"\nrenew_fraction = 1.5'),
     "[[site]] 'www'.renew_fraction", "between 0 and 1"),
    ("daemon-timeout-zero", _append("[daemon]\nissue_timeout = 0"), "[daemon].issue_timeout",
     "> 0"),
    ("daemon-duration-negative", _append('[daemon]\nverify_timeout = -1'),
     "[daemon].verify_timeout", "> 0"),
    ("ca-directory-not-http", ('directory = "https://a.test/dir"', 'directory = "ftp://a.test/"'),
     "[[ca]] 'a'.directory", "http(s) URL"),
    ("ca-directory-no-host", ('directory = "https://a.test/dir"', 'directory = "https:///dir"'),
     "[[ca]] 'a'.directory", "http(s) URL"),
    ("ca-crl-url-not-http",
     ('directory = "https://a.test/dir"',
      'directory = "https://a.test/dir"\ncrl_urls = ["https://a.test/1.crl", "file:///x.crl"]'),
     "[[ca]] 'a'.crl_urls[1]", "http(s) URL"),
    ("ca-ari-url-no-scheme",
     ('directory = "https://a.test/dir"',
      'directory = "https://a.test/dir"\nari_url = "a.test/renewalInfo"'),
     "[[ca]] 'a'.ari_url", "http(s) URL"),
    ("ca-rate-zero", ('directory = "https://b.test/dir"',
                    'directory = "https://b.test/dir"\nmax_orders_per_hour = 0'),
     "[[ca]] 'b'.max_orders_per_hour", "positive integer"),
    ("ca-rate-negative", ('directory = "https://b.test/dir"',
                    'directory = "https://b.test/dir"\nmax_orders_per_hour = -5'),
     "[[ca]] 'b'.max_orders_per_hour", "positive integer"),
    ("ca-rate-float", ('directory = "https://b.test/dir"',
                    'directory = "https://b.test/dir"\nmax_orders_per_hour = 1.5'),
     "[[ca]] 'b'.max_orders_per_hour", "must be an integer"),
    ("ca-rate-bool", ('directory = "https://b.test/dir"',
                    'directory = "https://b.test/dir"\nmax_orders_per_hour = true'),
     "[[ca]] 'b'.max_orders_per_hour", "not a boolean"),
    ("ca-rate-string", ('directory = "https://b.test/dir"',
                    'directory = "https://b.test/dir"\nmax_orders_per_hour = \"300\"'),
     "[[ca]] 'b'.max_orders_per_hour", "must be an integer"),
    ("site-name-too-long", ('name = "www"', f'name = "{LONG}"'), "[[site]] #1.name",
     "at most 100"),
    ("ca-name-too-long", ('name = "a"\n', f'name = "{LONG}"\n'), "[[ca]] #1.name",
     "at most 100"),
    # -- one more row per table, so that every table has one (test_every_table_has_a_case)
    ("store-empty-directory", ('directory = "store"', 'directory = " "'), "[store].directory",
     "must not be empty"),
    ("ca-eab-half", ('directory = "https://b.test/dir"',
                     'directory = "https://b.test/dir"\neab_kid = "kid"'),
     "[[ca]] 'b'.eab_hmac_key", "go together"),
    ("site-trust-unknown-program", ('server = "web"', 'server = "web"\ntrust = ["mozila"]'),
     "[[site]] 'www'.trust[0]", "is not 'system', a PEM bundle path or a root program"),
    ("site-trust-missing-bundle",
     ('server = "web"', 'server = "web"\ntrust = ["system", "roots/missing.pem"]'),
     "[[site]] 'www'.trust[1]", "does not exist"),
    ("site-trust-twice", ('server = "web"', 'server = "web"\ntrust = ["mozilla", "mozilla"]'),
     "[[site]] 'www'.trust", "twice"),
    ("site-challenge-bad-type", ('server = "web"', 'server = "web"\nchallenge = {type = "dns-01"}'),
     "[[site]] 'www'.challenge.type", "is not one of"),
    ("schedule-bad-jitter", _append("[schedule]\njitter = 2"), "[schedule]",
     "jitter is a fraction"),
    ("metrics-port-out-of-range", _append('[metrics]\nlisten = "127.0.0.1:99999"'),
     "[metrics].listen", "port out of range"),
    ("trust-bad-source", _append('[trust]\nsources = ["mozilla"]'), "[trust].sources[0]", ""),
    ("notify-no-notifier", _append('[notify]\nmin_severity = "warning"'), "[notify]",
     "configures no notifier"),
    ("notify-filter-lets-nothing-through",
     _append('[notify.command]\nargv = ["true"]\nkinds = ["issued"]\nmin_severity = "critical"'),
     "[notify.command].min_severity", "lets no event through"),
    ("notify-secret-env-unset",
     _append('[notify.webhook]\nurl = "https://hooks.test/x"\nsecret = "env:NOT_SET_HERE"'),
     "[notify.webhook].secret", "NOT_SET_HERE"),
    ("daemon-max-orders-zero", _append("[daemon]\nmax_orders = 0"), "[daemon].max_orders",
     "at least 1"),
    ("daemon-switch-backoff-zero", _append('[daemon]\nswitch_backoff = "0s"'),
     "[daemon].switch_backoff", "> 0"),
    ("daemon-switch-backoff-cap-below", _append('[daemon]\nswitch_backoff = "10m"\n'
                                                'switch_backoff_cap = "1m"'),
     "[daemon].switch_backoff_cap", ">= switch_backoff"),
    ("ct-log-list-missing", _append('[ct]\nlog_list = "nowhere/logs.json"'), "[ct].log_list",
     "does not exist"),
    ("ct-subdomains-unknown-site", _append('[ct]\nlog_list = "https://logs.test/list.json"\n'
                                           'subdomains = ["nope"]'),
     "[ct].subdomains", "is not a configured [[site]]"),
    ("ct-distrust-unknown-site", _append('[ct]\nlog_list = "https://logs.test/list.json"\n'
                                         'distrust_on_unexpected = ["nope"]'),
     "[ct].distrust_on_unexpected", "is not a configured [[site]]"),
    ("ct-unknown-key", _append('[ct]\nlog_list = "https://logs.test/list.json"\nbatchsize = 5'),
     "[ct].batchsize", "unknown key"),
    ("caa-identities-unknown-ca", _append('[caa]\nidentities = { nope = ["ca.test"] }'),
     "[caa].identities.nope", "is not a configured [[ca]]"),
    ("caa-zero-timeout", _append('[caa]\ntimeout = 0'), "[caa].timeout", "must be > 0"),
    ("web-exposed-without-auth", _append('[web]\nlisten = "0.0.0.0:8786"'), "[web].listen",
     "not a loopback address, without authentication"),
    ("web-inline-token", _append('[web]\ntoken = "0123456789abcdef0123"'), "[web].token",
     "secrets are never inline"),
    ("fleet-inline-kek", _append('[fleet]\nrole = "agent"\nkek = "00112233"'), "[fleet].kek",
     "secrets are never inline"),
]


def test_every_table_has_a_case() -> None:
    """config.load rejects a bad value in every table: each top-level table has a row above."""
    named = {where.removeprefix("[").split("]")[0].strip("[") for _, _, where, _ in CASES}
    assert set(config.TABLES) <= named, set(config.TABLES) - named


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "certfailover.toml"
    p.write_text(text)
    return p


def test_the_base_config_loads_and_creates_nothing(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, BASE), env={})
    assert cfg.site("www").domains == ("www.example.test", "example.test")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("edit", "where", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_a_config_error_before_anything_is_created(
        tmp_path: Path, edit: tuple[str, str], where: str, message: str) -> None:
    text = BASE.replace(edit[0], edit[1], 1)
    assert text != BASE
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert info.value.file == str(path) and str(path) in str(info.value)
    assert info.value.where == where
    assert message in info.value.message
    assert f"{where}: " in str(info.value)
    assert not (tmp_path / "store").exists()


CLI_CASES = ["server-key-typo", "server-argv-as-string", "schedule-bad-duration",
             "unused-revocation-table", "domain-wildcard", "notify-bad-url"]


# `check` is a monitoring plugin: any error is UNKNOWN (3), said on stdout; others exit 2
@pytest.mark.parametrize(("command", "code"), [("check", 3), ("status", 2)])
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_names_file_and_key_without_creating_the_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, command: str,
        code: int) -> None:
    _, edit, where, message = next(c for c in CASES if c[0] == case)
    path = write(tmp_path, BASE.replace(edit[0], edit[1], 1))
    assert main(["--config", str(path), command]) == code
    out, err = capsys.readouterr()
    said = out if command == "check" else err
    prefix = "CERTFAILOVER UNKNOWN - " if command == "check" else "certfailover: error: "
    assert f"{prefix}{path}: {where}: " in said and message in said
    assert "Traceback" not in out + err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("given", "normalised"), [
    ("bücher.example", "xn--bcher-kva.example"),
    ("Bücher.Example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("WWW.Example.TEST", "www.example.test"),
    ("www.example.test.", "www.example.test"),  # the trailing (root) dot is removed
    ("faß.example", "xn--fa-hia.example"),  # IDNA 2008: ß is kept, not mapped to "ss"
])
def test_domains_are_normalised_to_lowercase_a_labels(tmp_path: Path, given: str,
                                                      normalised: str) -> None:
    text = BASE.replace(SITE_DOMAINS, f'domains = ["{given}", "other.example.test"]')
    cfg = config.load(write(tmp_path, text), env={})
    assert cfg.site("www").domains == (normalised, "other.example.test")
    assert cfg.site("www").sni == normalised


def test_label_and_name_length_limits_are_inclusive() -> None:
    label63 = "l" * 63
    assert config.normalize_domain(f"{label63}.example") == f"{label63}.example"
    name253 = ".".join(["n" * 63] * 3 + ["n" * 61])
    assert len(name253) == 253 and config.normalize_domain(name253) == name253
    with pytest.raises(ValueError, match="at most 253"):
        config.normalize_domain(name253 + "n")


def test_names_up_to_the_column_size_load(tmp_path: Path) -> None:
    ok = "x" * 100
    text = BASE.replace('name = "www"', f'name = "{ok}"').replace(
        'name = "a"\n', f'name = "{ok}"\n').replace('cas = ["a", "b"]', f'cas = ["{ok}", "b"]')
    cfg = config.load(write(tmp_path, text), env={})
    assert cfg.sites[0].name == ok and ok in cfg.cas


def test_validating_notify_at_load_starts_no_threads(tmp_path: Path) -> None:
    text = BASE + """
[notify.webhook]
url = "https://hooks.example.test/x"
[notify.email]
host = "smtp.example.test"
sender = "cf@example.test"
recipients = ["ops@example.test"]
[notify.command]
argv = ["true"]
"""
    before = threading.active_count()
    config.load(write(tmp_path, text), env={})
    assert threading.active_count() == before
    assert not (tmp_path / "store").exists()


def test_a_notifier_check_without_a_key_still_names_the_table(tmp_path: Path) -> None:
    text = BASE + """
[notify.email]
host = "smtp.example.test"
sender = "cf@example.test\\nBcc: someone@example.test"
recipients = ["ops@example.test"]
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert info.value.file == str(path) and info.value.where == "[notify.email]"
    assert "must be one non-empty line" in info.value.message


@pytest.mark.parametrize(("spec", "key"), [
    ({"name": "w", "type": "nginx", "tset": ["x"]}, "tset"),
    ({"name": "w", "type": "nginx", "reload": "nginx -s reload"}, "reload"),
    ({"name": "w", "type": "lighttpd"}, "type"),
    ({"name": "f", "type": "files", "paths": {"cert": "/c/{host}"}}, "paths.cert"),
    ({"name": "f", "type": "files", "paths": "/c"}, "paths"),
    ({"name": "c", "type": "command", "paths": {"cert": "/c"}}, "command"),
])
def test_server_spec_errors_carry_the_key(spec: dict[str, object], key: str) -> None:
    with pytest.raises(SpecError) as info:
        check_spec(spec)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key!r} ")
