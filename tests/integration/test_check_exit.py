"""`certfailover check` as a monitoring plugin: real process, real exit codes, per state.

Two Pebble CAs with status services (OCSP, CRL, ARI answer "good", so a healthy site is OK,
not WARNING for unknown revocation), a real nginx.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfailover_lab.pebble import ChallTestSrv
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.stack import RevocableCA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv,
        http01_port: int) -> Iterator[tuple[RevocableCA, RevocableCA]]:
    work = tmp_path_factory.mktemp("check")
    a = RevocableCA(work / "a", name="chk-a", http_port=http01_port,
                    dns_server=challtestsrv.dns_address, nonce_reject_percent=0)
    try:
        b = RevocableCA(work / "b", name="chk-b", http_port=http01_port,
                        dns_server=challtestsrv.dns_address, nonce_reject_percent=0)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def lab(tmp_path: Path, cas: tuple[RevocableCA, RevocableCA], http01_port: int) -> Iterator[Lab]:
    a, b = cas
    yield from make_lab(tmp_path, [a.entry(), b.entry()],
                        [a.pebble.root_pem(), b.pebble.root_pem()], http01_port)


def check(config: Path, *extra: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "certfailover.cli.main", "--config", str(config),
                           *extra, "check"], check=False, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout


def test_check_exit_codes_follow_the_state(lab: Lab, tmp_path: Path) -> None:
    lab.rt.engine.tick()
    code, out = check(lab.config_path)
    assert (code, out.splitlines()[0]) == (0, "CERTFAILOVER OK - 1 site(s) healthy with standbys"), out

    lab.rt.db.distrust("chk-b", lab.active().created, "standby CA in the news")
    code, out = check(lab.config_path)
    assert code == 1 and out.startswith("CERTFAILOVER WARNING - www: 0 healthy standby(s)"), out
    assert len(out.splitlines()) == 1, "one summary line"

    lab.rt.db.distrust("chk-a", lab.active().created, "active CA in the news")
    code, out = check(lab.config_path, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["state"] == "CRITICAL" and doc["exit"] == 2
    assert doc["sites"][0]["active"] == lab.active().id
    assert "distrusted by the operator" in doc["summary"]

    bad = tmp_path / "broken.toml"
    bad.write_text("[[site]]\nname = \n")
    code, out = check(bad)
    assert code == 3 and out.startswith("CERTFAILOVER UNKNOWN - ") and str(bad) in out, out
    code, out = check(tmp_path / "missing.toml")
    assert code == 3 and "missing.toml" in out
