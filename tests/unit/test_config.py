from __future__ import annotations

from pathlib import Path

import pytest

from certfailover import config
from certfailover.errors import ConfigError

GOOD = """
[store]
directory = "store"
[[ca]]
name = "a"
directory = "https://a.test/dir"
[[ca]]
name = "b"
directory = "https://b.test/dir"
eab_kid = "kid-1"
eab_hmac_key = "env:B_HMAC"
[[server]]
name = "web"
type = "nginx"
test = ["nginx", "-t"]
reload = ["nginx", "-s", "reload"]
[[site]]
name = "www"
domains = ["www.example.test", "example.test"]
cas = ["a", "b"]
server = "web"
endpoints = ["127.0.0.1:8443", "[::1]:8443"]
[site.challenge]
type = "http-01-standalone"
listen = "127.0.0.1:5002"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "certfailover.toml"
    p.write_text(text)
    return p


def test_good_config_parses(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, GOOD), env={"B_HMAC": "c2VjcmV0"})
    assert cfg.store == tmp_path / "store"
    assert cfg.database == f"sqlite:///{tmp_path / 'store' / 'state.db'}"
    site = cfg.site("www")
    assert site.cas == ("a", "b") and site.key_type == "ec-p256" and site.min_standbys == 1
    assert site.endpoints[1] == config.Endpoint("::1", 8443)
    assert site.challenge.listen_port == 5002
    b = cfg.cas["b"]
    assert b.eab_hmac_key is not None and b.eab_hmac_key.value == "c2VjcmV0"
    assert "c2VjcmV0" not in repr(b), "secrets must never show in a repr (logs)"


def test_ca_rate_cap_is_optional(tmp_path: Path) -> None:
    text = GOOD.replace('eab_kid = "kid-1"', 'eab_kid = "kid-1"\nmax_orders_per_hour = 100')
    cfg = config.load(write(tmp_path, text), env={"B_HMAC": "c2VjcmV0"})
    assert cfg.cas["b"].max_orders_per_hour == 100
    assert cfg.cas["a"].max_orders_per_hour is None, "default: no cap"


def test_switch_backoff_defaults_and_durations(tmp_path: Path) -> None:
    d = config.load(write(tmp_path, GOOD), env={"B_HMAC": "c2VjcmV0"}).daemon
    assert (d.switch_backoff, d.switch_backoff_cap) == (30.0, 300.0)
    text = GOOD + '[daemon]\nswitch_backoff = "2m"\nswitch_backoff_cap = "1h"\n'
    d = config.load(write(tmp_path, text), env={"B_HMAC": "c2VjcmV0"}).daemon
    assert (d.switch_backoff, d.switch_backoff_cap) == (120.0, 3600.0)


@pytest.mark.parametrize(("edit", "where", "message"), [
    (("cas = [\"a\", \"b\"]", "cas = [\"a\", \"zz\"]"), "[[site]] 'www'.cas", "'zz' is not a configured"),
    (("server = \"web\"", "server = \"web\"\nkee_type = \"rsa-2048\""), "[[site]] 'www'.kee_type",
     "unknown key"),
    (("directory = \"https://a.test/dir\"", "directory = \"ftp://x\""), "[[ca]] 'a'.directory", "http(s)"),
    (("eab_hmac_key = \"env:B_HMAC\"", "eab_hmac_key = \"inline-secret\""), "[[ca]] 'b'.eab_hmac_key",
     "never inline"),
    (("endpoints = [\"127.0.0.1:8443\", \"[::1]:8443\"]", "endpoints = [\"127.0.0.1\"]"),
     "[[site]] 'www'.endpoints", "must be host:port"),
    (("type = \"http-01-standalone\"", "type = \"dns-99\""), "[[site]] 'www'.challenge.type", "not one of"),
    (("name = \"www\"", "name = \"../etc\""), "[[site]] #1.name", "letters, digits"),
    (("server = \"web\"", "server = \"web\"\ntrust = [\"mozila\"]"), "[[site]] 'www'.trust[0]",
     "not 'system', a PEM bundle path or a root program"),
    (("server = \"web\"", "server = \"nope\""), "[[site]] 'www'.server", "not a configured [[server]]"),
])
def test_bad_config_names_file_table_and_key(tmp_path: Path, edit: tuple[str, str], where: str,
                                             message: str) -> None:
    text = GOOD.replace(edit[0], edit[1], 1)
    assert text != GOOD
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={"B_HMAC": "x"})
    assert str(path) in str(info.value)
    assert info.value.where == where
    assert message in info.value.message


def test_missing_secret_env_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable B_HMAC"):
        config.load(write(tmp_path, GOOD), env={})


def test_min_standbys_needs_enough_cas(tmp_path: Path) -> None:
    text = GOOD.replace("cas = [\"a\", \"b\"]", "cas = [\"a\", \"b\"]\nmin_standbys = 2")
    with pytest.raises(ConfigError, match="needs at least 3 CAs"):
        config.load(write(tmp_path, text), env={"B_HMAC": "x"})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[[site]\nname="))
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")


def test_default_path_from_env() -> None:
    assert config.default_path({"CERTFAILOVER_CONFIG": "/etc/cf.toml"}) == Path("/etc/cf.toml")
    assert config.default_path({}) == Path("certfailover.toml")


def test_the_shipped_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "contrib" / "certfailover.example.toml"
    cfg = config.load(example, env={"ZEROSSL_EAB_HMAC": "x", "CERTFAILOVER_WEBHOOK_SECRET": "y",
                                    "CERTFAILOVER_SMTP_PASSWORD": "z"})
    assert [s.name for s in cfg.sites] == ["example"]
    assert [str(t) for t in cfg.site("example").trust] == [
        "mozilla", "chrome", "apple", "microsoft", "android"]
    assert cfg.trust.sources


def test_a_table_where_an_array_of_tables_belongs_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[\[site\]\]: must be an array of tables"):
        config.load(write(tmp_path, '[site]\nname = "www"\n'))
