"""The deployment examples of docs/fleet.md, loaded as written and the agent's run for real:
staged, nginx started on what it staged, one pass against PostgreSQL, status reported.

Only what is host-specific is replaced: the database URL, the store and KEK paths, the nginx
commands and endpoint of the lab's nginx, and a trust bundle for the test CAs (the example
trusts the system store; the lab's CAs are not in it)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import config as config_mod
from certfailover import keys
from certfailover.cli.main import main
from certfailover.fleet import controller
from certfailover.fleet.coord import Leader
from certfailover.fleet.sealed import Plain
from certfailover.fleet.setup import agent_from_config
from certfailover.probe import leaf_sha256, served_chain
from certfailover.store import db as dbmod
from certfailover_lab.pki import make_leaf, write_bundle
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import LabCA, VHost, start_nginx

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"
DOC_URL = "postgresql+psycopg://certfailover@db.internal/certfailover"


def examples() -> dict[str, str]:
    text = DOC.read_text()
    blocks = re.findall(r"^(The controller|An agent)[^\n]*:\n\n```toml\n(.*?)```", text,
                        re.DOTALL | re.MULTILINE)
    return {"controller" if who == "The controller" else "agent": body for who, body in blocks}


def localize(body: str, tmp: Path, url: str) -> str:
    assert DOC_URL in body and "/etc/certfailover/kek" in body
    return (body.replace(DOC_URL, url).replace("/etc/certfailover/kek", str(tmp / "kek"))
            .replace("/var/lib/certfailover", str(tmp / "store")))


def test_the_documented_configs_load_and_the_agent_runs(postgres: PostgresServer,
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    ex = examples()
    assert set(ex) == {"controller", "agent"}
    url = postgres.create_database("fleet_docs")
    dbmod.Database(url).migrate()
    (tmp_path / "kek").write_text(os.urandom(32).hex() + "\n")
    env = {"GOOGLE_EAB_HMAC": "aGVsbG8"}
    ctl = config_mod.parse(config_mod.tomllib.loads(localize(ex["controller"], tmp_path, url)),
                           file="controller.toml", base=tmp_path, env=env)
    assert ctl.fleet is not None and ctl.fleet.role == "controller"
    assert ctl.fleet.converge_timeout == 60.0

    # the controller publishes the certificate of "www" (as its deploy port does)
    cas = {n: LabCA.create(n) for n in ("letsencrypt", "google")}
    leaf, key = make_leaf(cas["google"].intermediate, ["www.example.com"])
    serial = format(leaf.serial_number, "x")
    want = leaf_sha256(leaf)
    leader = Leader(url, holder="controller")
    assert leader.try_lead()
    with leader.fenced() as conn:
        controller.publish(conn, ctl.fleet.keyring, [controller.Desired(
            "www", f"www/google/{serial}", want,
            Plain(leaf.public_bytes(Encoding.PEM),
                  cas["google"].intermediate.cert.public_bytes(Encoding.PEM),
                  keys.key_pem(key)))], epoch=leader.epoch or 0)
    leader.release()

    bundle = write_bundle(tmp_path / "roots.pem", *(c.root for c in cas.values()))
    agent_text = localize(ex["agent"], tmp_path, url).replace(
        'domains = ["www.example.com"]',
        f'domains = ["www.example.com"]\ntrust = ["{bundle}"]')
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(agent_text)
    agent_cfg = config_mod.load(cfg_path, env={})
    assert agent_cfg.fleet is not None and agent_cfg.fleet.role == "agent"
    assert agent_cfg.fleet.host == "web1" and agent_cfg.fleet.poll == 30.0
    assert agent_from_config(agent_cfg).sites.keys() == {"www"}

    assert main(["--config", str(cfg_path), "agent", "--stage"]) == 0
    assert "web1: 1 site(s) written and linked" in capsys.readouterr().out
    live = tmp_path / "store" / "live" / "www"
    assert (live / "privkey.pem").stat().st_mode & 0o777 == 0o600
    srv = start_nginx(tmp_path / "nginx", [VHost("www.example.com", (live,))])
    try:
        cfg_path.write_text(
            agent_text.replace('test = ["nginx", "-t", "-q"]', f"test = {json.dumps(srv.spec['test'])}")
            .replace('reload = ["nginx", "-s", "reload"]',
                     f"reload = {json.dumps(srv.spec['reload'])}")
            .replace('"127.0.0.1:443"', f'"{srv.endpoint}"'))
        assert main(["--config", str(cfg_path), "agent", "--once"]) == 0
        assert "1 switched and verified, 0 failed" in capsys.readouterr().out
        assert leaf_sha256(served_chain(srv.endpoint, "www.example.com")[0]) == want
        assert main(["--config", str(cfg_path), "--json", "fleet", "status"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["site"], r["host"], r["state"], r["served"]) for r in rows] == \
            [("www", "web1", "ok", want)]
    finally:
        srv.stop()
