"""config.load parses every table into typed values: [schedule], [metrics], [trust], [notify]
and a site's `trust` list (bad values: test_config_bad_input.py)."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certfailover import config
from certfailover.config import SYSTEM, Config, MetricsConfig, TrustSettings
from certfailover.errors import ConfigError
from certfailover.notify.settings import CommandSpec, EmailSpec, WebhookSpec
from certfailover.schedule import Intervals
from certfailover.sitetrust import PemBundle, Program, bundles, programs
from certfailover.testing import pki

H = timedelta(hours=1)
EXAMPLE = Path(__file__).resolve().parents[2] / "contrib" / "certfailover.example.toml"
EXAMPLE_ENV = {"ZEROSSL_EAB_HMAC": "x", "CERTFAILOVER_WEBHOOK_SECRET": "whsec-42",
               "CERTFAILOVER_SMTP_PASSWORD": "z"}


def parse(raw: dict[str, Any], base: Path = Path("/etc")) -> Config:
    return config.parse(raw, file="c.toml", base=base, env={})


def test_no_tables_gives_the_defaults() -> None:
    cfg = parse({})
    assert cfg.schedule == Intervals()
    assert cfg.metrics == MetricsConfig(None)
    assert cfg.trust == TrustSettings()
    assert cfg.notify is None
    assert not hasattr(cfg, "raw"), "nothing reads the TOML after load"


def test_schedule_table() -> None:
    iv = parse({"schedule": {"trust": "12h", "jitter": 0.2, "minimum": 60,
                             "ca_unreachable_after": "2h", "signal_unknown_after": "3d"}}).schedule
    assert iv.trust == 12 * H and iv.jitter == 0.2 and iv.minimum == timedelta(minutes=1)
    assert iv.ca_unreachable_after == 2 * H and iv.signal_unknown_after == timedelta(days=3)
    assert iv.crl == Intervals().crl
    old = parse({"schedule": {"crl": "6h", "ocsp": "12h", "minimum": "5m"}}).schedule
    assert (old.crl, old.ocsp, old.minimum) == (6 * H, 12 * H, timedelta(minutes=5))


@pytest.mark.parametrize(("table", "where", "message"), [
    ({"trsut": "1d"}, "[schedule].trsut", "unknown key"),
    ({"crl": "soon"}, "[schedule].crl", "not a duration"),
    ({"jitter": "lots"}, "[schedule].jitter", "must be a number"),
    ({"minimum": "2d"}, "[schedule]", "minimum <= maximum"),
    ({"expiry": 0}, "[schedule]", "expiry"),
    ({"trust": 0}, "[schedule].trust", "must be > 0"),
])
def test_schedule_errors(table: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"schedule": table})
    assert info.value.where == where and message in info.value.message


def test_metrics_table() -> None:
    assert parse({"metrics": {"listen": "[::1]:9786"}}).metrics.listen == ("::1", 9786)
    with pytest.raises(ConfigError, match=r"^c\.toml: \[metrics\]\.listen: .*host:port"):
        parse({"metrics": {"listen": "9786"}})
    with pytest.raises(ConfigError, match=r"\[metrics\]\.port: unknown key"):
        parse({"metrics": {"port": 9786}})


def test_trust_table(tmp_path: Path) -> None:
    t = parse({"store": {"directory": "store"},
               "trust": {"sources": ["mozilla=https://example.test/certdata.txt"],
                         "refresh": "12h", "pools": ["p.pem"], "allow_shrink": True}},
              tmp_path).trust
    assert [s.name for s in t.sources] == ["mozilla"]
    assert t.refresh == 12 * H and t.pools == ("p.pem",) and t.allow_shrink
    assert t.snapshot == tmp_path / "store" / "trust-snapshot.json.gz"  # sources, no snapshot
    rel = parse({"trust": {"snapshot": "snap.json.gz"}}, tmp_path).trust
    assert rel.snapshot == tmp_path / "snap.json.gz", "relative to the config file's directory"


def test_site_trust_list_is_typed(tmp_path: Path) -> None:
    bundle = pki.write_bundle(tmp_path / "roots.pem", pki.make_root("R"))
    raw = {"ca": [{"name": "a", "directory": "https://a.test/d"},
                  {"name": "b", "directory": "https://b.test/d"}],
           "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                     "trust": ["system", "roots.pem", "mozilla", "chrome"]},
                    {"name": "api", "domains": ["api.example.test"], "cas": ["a", "b"]}]}
    cfg = parse(raw, tmp_path)
    trust = cfg.site("www").trust
    assert trust == (SYSTEM, PemBundle(bundle), Program("mozilla"), Program("chrome"))
    assert [str(t) for t in trust] == ["system", str(bundle), "mozilla", "chrome"]
    assert bundles(trust) == (SYSTEM, PemBundle(bundle)) and programs(trust) == ("mozilla", "chrome")
    assert cfg.site("api").trust == (SYSTEM,)


def test_notify_table_is_typed() -> None:
    cfg = config.load(EXAMPLE, env=EXAMPLE_ENV)
    assert cfg.notify is not None
    specs = [r.notifier for r in cfg.notify.routes]
    assert [type(s) for s in specs] == [WebhookSpec, EmailSpec, CommandSpec]
    assert isinstance(specs[0], WebhookSpec) and specs[0].secret is not None
    assert specs[0].secret.value == "whsec-42"
    assert "whsec-42" not in repr(cfg.notify), "a resolved secret is never shown"
    assert [r.min_severity for r in cfg.notify.routes] == ["warning", "critical", "warning"]


def test_the_example_config_fills_every_table() -> None:
    cfg = config.load(EXAMPLE, env=EXAMPLE_ENV)
    raw = tomllib.loads(EXAMPLE.read_text())
    assert cfg.schedule == Intervals(), "the example's [schedule] shows the defaults"
    assert cfg.metrics.listen == ("127.0.0.1", 9786)
    assert cfg.trust.sources and len(cfg.trust.sources) == len(raw["trust"]["sources"])
    assert programs(cfg.site("example").trust) == ("mozilla", "chrome", "apple", "microsoft",
                                                   "android")
