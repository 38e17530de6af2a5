"""The CT watch as the operator runs it: `certfailover ct poll` over a [ct] log list file, and
the daemon's background watch, which turns a third CA's certificate for the site into an
alert within one poll interval."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from certfailover import config as config_mod
from certfailover.cli.main import main
from certfailover.model import Event
from certfailover.wiring import build, build_daemon
from certfailover_lab import pki
from certfailover_lab.ctlog import CTLog, submit
from certfailover_lab.sites import offline_config

pytestmark = pytest.mark.integration


def _setup(tmp_path: Path, log: CTLog, interval: float = 60) -> tuple[Path, pki.Authority]:
    root = pki.make_root("Lab Root")
    (tmp_path / "roots.pem").write_bytes(root.pem)
    (tmp_path / "logs.json").write_text(json.dumps(log.log_list()))
    cfg = offline_config(tmp_path, tmp_path / "roots.pem", extra=(
        f'[ct]\nlog_list = "logs.json"\nstart = "beginning"\ninterval = {interval}\ntimeout = 5\n'))
    third = pki.make_intermediate(pki.make_root("Third Root"), "Third CA")
    return cfg, third


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_ct_poll_reports_an_unexpected_certificate(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with CTLog() as log:
        cfg, third = _setup(tmp_path, log)
        other, _ = pki.make_leaf(third, ["unrelated.example.org"])
        submit(log.url, [other, third.cert])
        code, data = _run(capsys, "--config", str(cfg), "--json", "ct", "poll")
        assert code == 0 and data["logs"][0]["to_size"] == 1 and not data["logs"][0]["unexpected"]

        rogue, _ = pki.make_leaf(third, ["www.example.test"])
        submit(log.url, [rogue, third.cert])
        code, data = _run(capsys, "--config", str(cfg), "--json", "ct", "poll")
        assert code == 2
        (u,) = data["logs"][0]["unexpected"]
        assert u["site"] == "www" and u["serial"] == format(rogue.serial_number, "x")
        assert u["names"] == ["www.example.test"] and "Third CA" in u["issuer"]

        code, data = _run(capsys, "--config", str(cfg), "--json", "events")
        kinds = [e["kind"] for e in data["events"]]
        assert kinds.count("unexpected_certificate") == 1

        code, data = _run(capsys, "--config", str(cfg), "--json", "ct", "status")
        assert code == 0 and data["logs"][0]["tree_size"] == 2 and data["logs"][0]["problem"] == ""


def test_ct_poll_without_a_ct_table_names_the_file(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = pki.make_root("Lab Root")
    (tmp_path / "roots.pem").write_bytes(root.pem)
    cfg = offline_config(tmp_path, tmp_path / "roots.pem")
    code = main(["--config", str(cfg), "ct", "poll"])
    captured = capsys.readouterr()
    assert code != 0 and "no [ct] table" in captured.err + captured.out


def test_the_daemon_alerts_within_one_poll_interval(tmp_path: Path) -> None:
    with CTLog() as log:
        cfg_path, third = _setup(tmp_path, log, interval=1)
        config = config_mod.load(cfg_path)
        alerts: list[Event] = []
        got = threading.Event()

        def notify(ev: Event) -> None:
            alerts.append(ev)
            if ev.kind == "unexpected_certificate":
                got.set()

        rt = build(config, notify=notify)
        d = build_daemon(rt.engine, config, interval=60)
        try:
            assert d.ct_watch is not None
            deadline = time.monotonic() + 10
            while d.ct_watch.polls == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            rogue, _ = pki.make_leaf(third, ["www.example.test"])
            submit(log.url, [rogue, third.cert])
            t0 = time.monotonic()
            assert got.wait(10), f"no alert; got {alerts}"
            assert time.monotonic() - t0 < 1 + 2.0  # one interval (1 s) plus the poll itself
        finally:
            d.close()
    (ev,) = [e for e in alerts if e.kind == "unexpected_certificate"]
    assert ev.site == "www" and ev.data["serial"] == format(rogue.serial_number, "x")
    assert any(e.kind == "unexpected_certificate" for e in rt.db.events(site="www"))
