"""`certfailover drill` on two Pebble CAs and a real nginx: dry run, and a real switch and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfailover.cli.main import main
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(tmp_path, [LabCAEntry(c.name, c.directory_url, c.ca_bundle)
                                   for c in (pebble_a, pebble_b)],
                        [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


def cli(lab: Lab, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(["--config", str(lab.config_path), "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_dry_run_says_what_would_be_served_and_changes_nothing(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.rt.engine.tick()
    active = lab.active()
    assert active.ca == "pebble-a"
    code, r = cli(lab, capsys, "drill", "www", "--fail", "pebble-a")
    assert code == 0 and r["ok"] and not r["applied"] and r["switches"] == []
    assert r["active"]["id"] == active.id
    assert r["would_serve"]["ca"] == "pebble-b" and r["would_serve"]["health"] != "fail"
    assert [s["ca"] for s in r["standbys"]] == ["pebble-b"]
    assert lab.active().id == active.id and lab.served_sha() == active.sha256

    code, r = cli(lab, capsys, "drill", "www", "--fail", "pebble-b")
    assert code == 0 and r["would_serve"]["id"] == active.id and "would not change" in r["message"]

    lab.rt.db.distrust("pebble-b", active.created, "test")  # no usable standby left
    code, r = cli(lab, capsys, "drill", "www", "--fail", "pebble-a")
    assert code == 1 and not r["ok"] and r["would_serve"] is None
    assert "no healthy standby" in r["message"]

    assert main(["--config", str(lab.config_path), "drill", "www", "--fail", "nope"]) == 2
    assert "not a CA of site www" in capsys.readouterr().err


def test_apply_switches_to_the_standby_and_back_both_verified(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.rt.engine.tick()
    original = lab.active()
    standby = next(c for c in lab.rt.db.certs("www") if c.ca == "pebble-b")
    code, r = cli(lab, capsys, "drill", "www", "--fail", "pebble-a", "--apply")
    assert code == 0 and r["ok"] and r["applied"], r
    there, back = r["switches"]
    assert there["target"] == standby.id and there["served_sha256"] == standby.sha256
    assert back["target"] == original.id and back["served_sha256"] == original.sha256
    assert there["ok"] and back["ok"] and 0 < there["seconds"] < 10 and 0 < back["seconds"] < 10
    assert lab.active().id == original.id and lab.served_sha() == original.sha256
    drills = [e for e in lab.rt.db.events(site="www") if e.kind == "failover"]
    assert [e.data["cert"] for e in drills] == [standby.id, original.id]
    assert all("drill" in e.message for e in drills)
