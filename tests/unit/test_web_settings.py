"""The [web] table and --web: loopback by default, a non-loopback address only with authentication."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfailover.errors import ConfigError
from certfailover.tables import Table
from certfailover.web.settings import WebSettings, web_settings, with_listen

TOKEN = "0123456789abcdef-token"


def load(raw: dict[str, object], env: dict[str, str] | None = None) -> WebSettings:
    return web_settings(Table("cf.toml", "[web]", raw), env or {})


def test_absent_table_means_no_page() -> None:
    s = load({})
    assert s.listen is None and not s.authenticated and s.refresh == 2.0


@pytest.mark.parametrize("listen", ["127.0.0.1:8786", "[::1]:8786", "localhost:8786",
                                    "127.0.0.2:1"])
def test_loopback_needs_no_auth(listen: str) -> None:
    assert load({"listen": listen}).listen is not None


@pytest.mark.parametrize("listen", ["0.0.0.0:8786", "[::]:8786", "192.0.2.7:80",
                                    "status.example.net:8786"])
def test_non_loopback_without_auth_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load({"listen": listen})
    msg = str(exc.value)
    assert msg.startswith("cf.toml: [web].listen: ")
    assert "not a loopback address, without authentication" in msg
    assert "token" in msg and "proxy_header" in msg


def test_non_loopback_with_token_or_proxy_header() -> None:
    s = load({"listen": "0.0.0.0:8786", "token": "env:WEB_TOKEN"}, {"WEB_TOKEN": TOKEN})
    assert s.token is not None and s.token.value == TOKEN and TOKEN not in repr(s)
    assert load({"listen": "0.0.0.0:8786", "proxy_header": "X-Forwarded-User"}).authenticated


def test_token_from_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    s = load({"listen": "0.0.0.0:1", "token": f"file:{f}"})
    assert s.token is not None and s.token.value == TOKEN


@pytest.mark.parametrize(("raw", "env", "where", "text"), [
    ({"token": TOKEN}, {}, "[web].token", "must be a reference 'env:NAME'"),
    ({"token": "env:MISSING"}, {}, "[web].token", "MISSING"),
    ({"token": "env:SHORT"}, {"SHORT": "abc"}, "[web].token", "shorter than 16"),
    ({"listen": "nowhere"}, {}, "[web].listen", "must be host:port"),
    ({"listen": 8786}, {}, "[web].listen", "must be a string"),
    ({"proxy_header": "X Bad: yes"}, {}, "[web].proxy_header", "not an HTTP header name"),
    ({"refresh": 0}, {}, "[web].refresh", "between 0.1 and 3600"),
    ({"lisen": "127.0.0.1:1"}, {}, "[web].lisen", "unknown key"),
])
def test_bad_values_name_the_key(raw: dict[str, object], env: dict[str, str], where: str,
                                 text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(raw, env)
    assert exc.value.where == where and text in exc.value.message


def test_command_line_address_follows_the_same_rule() -> None:
    base = load({})
    assert with_listen(base, "127.0.0.1:9000", file="cf.toml").listen == ("127.0.0.1", 9000)
    with pytest.raises(ConfigError) as exc:
        with_listen(base, "0.0.0.0:9000", file="cf.toml")
    assert exc.value.where == "--web" and "without authentication" in exc.value.message
    authed = load({"token": "env:T"}, {"T": TOKEN})
    assert with_listen(authed, "0.0.0.0:9000", file="cf.toml").listen == ("0.0.0.0", 9000)
    with pytest.raises(ConfigError, match="must be host:port"):
        with_listen(base, "9000", file="cf.toml")
