"""The [fleet] table: role, host, KEK references, the PostgreSQL database, durations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from certfailover.errors import ConfigError
from certfailover.fleet.settings import fleet_settings
from certfailover.tables import Table

PG = "postgresql+psycopg://cf@db.example/cf"
KEY = os.urandom(32)


def parse(data: dict[str, Any], env: dict[str, str] | None = None,
          store: str = PG) -> Any:
    return fleet_settings(Table("c.toml", "[fleet]", data), store_database=store,
                          env=env if env is not None else {"K": KEY.hex()})


def test_an_agent_table(tmp_path: Path) -> None:
    old = os.urandom(32)
    (tmp_path / "old").write_text(old.hex() + "\n")
    s = parse({"role": "agent", "host": "web1", "kek": "env:K",
               "previous_keks": [f"file:{tmp_path / 'old'}"], "poll": "5s",
               "converge_timeout": 90, "stale_after": "3m", "prefetch": 500})
    assert (s.role, s.host, s.poll, s.converge_timeout, s.stale_after, s.prefetch) == \
        ("agent", "web1", 5.0, 90.0, 180.0, 500)
    assert s.keyring.current.key == KEY and [k.key for k in s.keyring.previous] == [old]
    assert s.database == PG
    assert KEY.hex() not in repr(s) and PG not in repr(s)


def test_defaults_and_database_override() -> None:
    s = parse({"role": "controller", "kek": "env:K", "database": PG + "2"}, store="sqlite:///x")
    assert s.host and s.poll == 30.0 and s.database == PG + "2" and s.keyring.previous == ()
    assert s.prefetch == 2000 and s.lease_ttl == 30.0
    assert (s.converge_timeout, s.lag_grace) == (60.0, 10.0)
    assert parse({"role": "controller", "kek": "env:K", "lag_grace": "2s"}).lag_grace == 2.0
    assert parse({"role": "controller", "kek": "env:K", "lease_ttl": "6s"}).lease_ttl == 6.0
    assert parse({"role": "agent", "kek": "env:K", "prefetch": 0}).prefetch == 0  # off


@pytest.mark.parametrize(("data", "env", "where", "msg"), [
    ({"kek": "env:K"}, None, "[fleet].role", "is required"),
    ({"role": "boss", "kek": "env:K"}, None, "[fleet].role", "controller, agent"),
    ({"role": "agent"}, None, "[fleet].kek", "is required"),
    ({"role": "agent", "kek": "0123"}, None, "[fleet].kek", "never inline"),
    ({"role": "agent", "kek": "env:NOPE"}, None, "[fleet].kek", "NOPE"),
    ({"role": "agent", "kek": "env:K"}, {"K": "short-secret"}, "[fleet].kek", "32 random bytes"),
    ({"role": "agent", "kek": "env:K", "previous_keks": ["env:B"]}, {"K": KEY.hex(), "B": "x"},
     "[fleet].previous_keks[0]", "32 random bytes"),
    ({"role": "agent", "kek": "env:K", "host": "a b"}, None, "[fleet].host", "letters"),
    ({"role": "agent", "kek": "env:K", "poll": "soon"}, None, "[fleet].poll", ""),
    ({"role": "agent", "kek": "env:K", "poll": 0}, None, "[fleet].poll", "positive"),
    ({"role": "agent", "kek": "env:K", "prefetch": -1}, None, "[fleet].prefetch", "positive"),
    ({"role": "agent", "kek": "env:K", "prefetch": "lots"}, None, "[fleet].prefetch",
     "an integer"),
    ({"role": "agent", "kek": "env:K", "prefetch": True}, None, "[fleet].prefetch", "boolean"),
    ({"role": "controller", "kek": "env:K", "lease_ttl": 0}, None, "[fleet].lease_ttl",
     "positive"),
    ({"role": "controller", "kek": "env:K", "lag_grace": 0}, None, "[fleet].lag_grace",
     "positive"),
    ({"role": "controller", "kek": "env:K", "lag_grace": "later"}, None, "[fleet].lag_grace",
     ""),
    ({"role": "agent", "kek": "env:K", "colour": 1}, None, "[fleet].colour", "unknown key"),
    ({"role": "agent", "kek": "env:K", "database": "sqlite:///x"}, None, "[fleet].database",
     "PostgreSQL"),
])
def test_bad_values_name_the_key_never_the_secret(data: dict[str, Any],
                                                  env: dict[str, str] | None, where: str,
                                                  msg: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data, env)
    assert info.value.where == where and msg in info.value.message
    assert "short-secret" not in str(info.value) and KEY.hex() not in str(info.value)


def test_the_engine_is_refused_on_an_agent_host(tmp_path: Path) -> None:
    from certfailover import config as config_mod
    from certfailover.fleet.port import controller_port
    from certfailover.store.vault import Vault

    raw = {"store": {"directory": str(tmp_path), "database": PG},
           "fleet": {"role": "agent", "host": "web1", "kek": "env:K"},
           "ca": [{"name": "a", "directory": "https://ca.test/dir"}],
           "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a"],
                     "min_standbys": 0}]}
    cfg = config_mod.parse(raw, file="c.toml", base=tmp_path, env={"K": KEY.hex()})
    with pytest.raises(ConfigError, match="certfailover agent") as info:
        controller_port(cfg, Vault(tmp_path), None)  # type: ignore[arg-type]
    assert info.value.where == "[fleet].role"
    single = config_mod.parse({k: v for k, v in raw.items() if k != "fleet"}, file="c.toml",
                              base=tmp_path, env={})
    assert controller_port(single, Vault(tmp_path), None) is None  # type: ignore[arg-type]
