"""ECDSA and RSA certificates side by side on one nginx name, each failing over on its own.

The pattern: two sites with the same domains on the same server, one per key type; nginx lists
both certificate pairs in one server block and picks by what the client supports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certfailover import config as config_mod
from certfailover.model import CertState
from certfailover.probe import leaf_sha256, served_chain
from certfailover.wiring import build
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.webservers import VHost, start_nginx

pytestmark = pytest.mark.integration
DOMAIN = "dual.example.test"


def _write(path: Path, store: Path, cas: list[PebbleCA], bundle: Path, http01: int,
           server: dict[str, object] | None, endpoint: str) -> None:
    parts = [f'[store]\ndirectory = "{store}"\n[daemon]\nverify_timeout = 5\n']
    for c in cas:
        parts.append(f'[[ca]]\nname = "{c.name}"\ndirectory = "{c.directory_url}"\n'
                     f'ca_bundle = "{c.ca_bundle}"\n')
    if server:
        test = ", ".join(f'"{x}"' for x in server["test"])  # type: ignore[attr-defined]
        reload = ", ".join(f'"{x}"' for x in server["reload"])  # type: ignore[attr-defined]
        parts.append(f'[[server]]\nname = "web"\ntype = "nginx"\ntest = [{test}]\nreload = [{reload}]\n')
    for name, kt in (("www-ec", "ec-p256"), ("www-rsa", "rsa-2048")):
        parts.append(
            f'[[site]]\nname = "{name}"\ndomains = ["{DOMAIN}"]\ncas = ["{cas[0].name}", "{cas[1].name}"]\n'
            f'key_type = "{kt}"\ntrust = ["{bundle}"]\n'
            + (f'server = "web"\nendpoints = ["{endpoint}"]\n' if server else "")
            + f'[site.challenge]\ntype = "http-01-standalone"\nlisten = "127.0.0.1:{http01}"\n')
    path.write_text("\n".join(parts))


def test_ecdsa_and_rsa_fail_over_independently(tmp_path: Path, pebble_a: PebbleCA,
                                               pebble_b: PebbleCA, http01_port: int) -> None:
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(pebble_a.root_pem() + pebble_b.root_pem())
    store, cfg = tmp_path / "store", tmp_path / "certfailover.toml"
    _write(cfg, store, [pebble_a, pebble_b], bundle, http01_port, None, "")
    rt = build(config_mod.load(cfg))
    for site in rt.config.sites:  # bootstrap: nginx needs both files to start
        first = rt.engine.issue(site, pebble_a.name)
        rt.vault.point_live(site.name, Path(first.path))
    lives = (rt.vault.live_path("www-ec"), rt.vault.live_path("www-rsa"))
    with start_nginx(tmp_path / "nginx", [VHost(DOMAIN, lives)]) as nginx:
        _write(cfg, store, [pebble_a, pebble_b], bundle, http01_port, nginx.spec, str(nginx.endpoint))
        rt = build(config_mod.load(cfg))
        report = rt.engine.tick()
        assert [e.kind for e in report.events].count("activated") == 2

        def active(site: str):  # type: ignore[no-untyped-def]
            return next(c for c in rt.db.certs(site) if c.state is CertState.ACTIVE)

        def served(family: str) -> str:
            return leaf_sha256(served_chain(nginx.endpoint, DOMAIN, key_type=family)[0])

        ec_before, rsa_before = active("www-ec"), active("www-rsa")
        assert ec_before.key_type == "ec-p256" and rsa_before.key_type == "rsa-2048"
        assert served("ec") == ec_before.sha256 and served("rsa") == rsa_before.sha256

        rt.engine.failover("www-ec")  # only the ECDSA certificate moves to CA B
        ec_after = active("www-ec")
        assert ec_after.ca == pebble_b.name and active("www-rsa").id == rsa_before.id
        assert served("ec") == ec_after.sha256
        assert served("rsa") == rsa_before.sha256, "the RSA certificate is untouched"
