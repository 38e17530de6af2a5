"""The nginx `pid_file` option: after a passing `test`, SIGHUP to the master the file names,
instead of `nginx -s reload`; every way the file can be wrong is a ServerError naming it, and
then nothing is signalled."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfailover.errors import ServerConfigError, ServerError
from certfailover.servers.base import LiveChange
from certfailover.servers.nginx import NginxAdapter
from certfailover.servers.reloading import signal_master

CHANGE = [LiveChange("www", Path("/v/live/www"), Path("/v/archive/www/a/1"))]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def _adapter(tmp_path: Path, pid: object, *, test: tuple[str, ...] = ("true",)) -> NginxAdapter:
    pid_file = tmp_path / "nginx.pid"
    if pid is not None:
        pid_file.write_text(f"{pid}\n")
    marker = tmp_path / "reload-ran"
    return NginxAdapter(name="w", test=test, reload=("touch", str(marker)), pid_file=pid_file)


def test_sighup_to_the_master_instead_of_the_reload_argv(
        tmp_path: Path, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NginxAdapter, "MASTER_NAMES", ("sleep",))
    _adapter(tmp_path, sleeper.pid).apply(CHANGE)
    assert sleeper.wait(5) == -signal.SIGHUP
    assert not (tmp_path / "reload-ran").exists()


def test_a_failing_test_signals_nothing(
        tmp_path: Path, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NginxAdapter, "MASTER_NAMES", ("sleep",))
    with pytest.raises(ServerConfigError):
        _adapter(tmp_path, sleeper.pid, test=("false",)).apply(CHANGE)
    assert sleeper.poll() is None


@pytest.mark.parametrize(("pid", "why"), [
    (None, "cannot read it"),
    ("", "does not hold a process id"),
    ("12ab", "does not hold a process id"),
    ("0", "does not hold a process id"),  # kill(0) would signal our own process group
    ("-1", "does not hold a process id"),
    ("1", "does not hold a process id"),
])
def test_a_bad_pid_file_is_a_server_error_naming_it(tmp_path: Path, pid: object,
                                                    why: str) -> None:
    a = _adapter(tmp_path, pid)
    with pytest.raises(ServerError, match=why) as info:
        a.apply(CHANGE)
    assert not isinstance(info.value, ServerConfigError)
    assert f"pid_file {tmp_path / 'nginx.pid'}" in str(info.value)
    assert not (tmp_path / "reload-ran").exists()


def test_no_such_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait(5)  # reaped: its pid names no process (unless reused within this test)
    with pytest.raises(ServerError, match=f"no process {proc.pid} is running"):
        signal_master(_write(tmp_path, proc.pid), signal.SIGHUP, server="w", names=("nginx",))


def test_a_reused_pid_of_another_program_is_not_signalled(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=f"process {os.getpid()} is .*, not nginx"):
        signal_master(_write(tmp_path, os.getpid()), signal.SIGHUP, server="w",
                      names=("nginx",))


def _write(tmp_path: Path, pid: int) -> Path:
    path = tmp_path / "nginx.pid"
    path.write_text(f"{pid}\n")
    return path
