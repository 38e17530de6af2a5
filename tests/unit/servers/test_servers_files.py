"""files / command / reloading adapters with real files and real (tiny) commands."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from certfailover.errors import ServerConfigError, ServerError
from certfailover.servers import LiveChange, make_adapter
from certfailover.servers.base import run_argv
from certfailover.servers.reloading import ReloadingAdapter


def archive(tmp: Path, name: str) -> Path:
    d = tmp / "archive" / name
    d.mkdir(parents=True)
    for f in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem", "combined.pem"):
        (d / f).write_text(f"{name}:{f}\n")
    return d


def test_files_adapter_writes_each_role_with_modes(tmp_path: Path) -> None:
    src = archive(tmp_path, "one")
    out = tmp_path / "out"
    a = make_adapter({"name": "f", "type": "files", "paths": {
        "cert": f"{out}/{{site}}/c.pem", "key": f"{out}/{{site}}/k.pem",
        "fullchain": f"{out}/{{site}}/fc.pem"}})
    a.apply([LiveChange("www", tmp_path / "live" / "www", src)])
    assert (out / "www" / "c.pem").read_text() == "one:cert.pem\n"
    assert (out / "www" / "fc.pem").read_text() == "one:fullchain.pem\n"
    assert (out / "www" / "k.pem").read_text() == "one:privkey.pem\n"
    assert stat.S_IMODE((out / "www" / "k.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "www" / "c.pem").stat().st_mode) == 0o644


def test_files_adapter_needs_site_placeholder_for_several_sites(tmp_path: Path) -> None:
    a = make_adapter({"name": "f", "type": "files", "paths": {"cert": str(tmp_path / "c.pem")}})
    changes = [LiveChange(s, tmp_path / s, archive(tmp_path, s)) for s in ("x", "y")]
    with pytest.raises(ServerConfigError, match="{site}"):
        a.apply(changes)
    assert not (tmp_path / "c.pem").exists()


def test_files_adapter_missing_source_is_config_error(tmp_path: Path) -> None:
    a = make_adapter({"name": "f", "type": "files", "paths": {"cert": str(tmp_path / "c.pem")}})
    with pytest.raises(ServerConfigError, match="cannot read"):
        a.apply([LiveChange("x", tmp_path / "x", tmp_path / "missing")])


def test_command_adapter_runs_once_after_writing(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    a = make_adapter({"name": "c", "type": "command",
                      "paths": {"combined": f"{tmp_path}/{{site}}.pem"},
                      "command": ["sh", "-c", f"cat {tmp_path}/x.pem {tmp_path}/y.pem >> {marker}"]})
    a.apply([LiveChange(s, tmp_path / s, archive(tmp_path, s)) for s in ("x", "y")])
    assert marker.read_text() == "x:combined.pem\ny:combined.pem\n"  # ran once, after both


def test_command_failure_quotes_output(tmp_path: Path) -> None:
    a = make_adapter({"name": "c", "type": "command", "command": ["sh", "-c", "echo boom; exit 3"]})
    with pytest.raises(ServerError, match="exited 3: boom"):
        a.apply([LiveChange("x", tmp_path / "x", archive(tmp_path, "x"))])


def test_reloading_adapter_test_failure_is_config_error_and_skips_reload(tmp_path: Path) -> None:
    marker = tmp_path / "reloaded"
    a = ReloadingAdapter("n", ("sh", "-c", "echo 'bad key'; exit 1"), ("touch", str(marker)))
    with pytest.raises(ServerConfigError, match="bad key"):
        a.apply([LiveChange("x", tmp_path / "x", tmp_path)])
    assert not marker.exists()
    ok = ReloadingAdapter("n", ("true",), ("touch", str(marker)))
    ok.apply([])
    assert not marker.exists()  # an empty batch does nothing
    ok.apply([LiveChange("x", tmp_path / "x", tmp_path)])
    assert marker.exists()


def test_run_argv_missing_command_and_timeout() -> None:
    with pytest.raises(ServerError, match="command not found"):
        run_argv(["/nonexistent/cmd"], what="reload", server="s")
    with pytest.raises(ServerConfigError, match="timed out"):
        run_argv(["sleep", "5"], what="test", server="s", timeout=0.2, config_error=True)
