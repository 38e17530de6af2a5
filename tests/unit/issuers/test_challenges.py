"""HTTP-01 solvers: webroot files and the standalone server, over real sockets."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

import pytest

from certfailover.errors import IssuanceError
from certfailover.issuers.challenges import (
    CHALLENGE_PATH,
    Http01Solver,
    StandaloneSolver,
    WebrootSolver,
)
from certfailover_lab.ports import free_port

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "www.example.test"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_webroot_writes_and_removes_the_challenge_file(tmp_path: Path) -> None:
    solver = WebrootSolver(tmp_path)
    assert isinstance(solver, Http01Solver)
    solver.present(TOKEN, KEYAUTH)
    path = tmp_path / ".well-known" / "acme-challenge" / TOKEN
    assert path.read_bytes() == KEYAUTH.encode()
    assert path.stat().st_mode & 0o777 == 0o644  # the web server must be able to read it
    assert [p.name for p in path.parent.iterdir()] == [TOKEN]  # no temp files left behind
    solver.cleanup(TOKEN)
    assert not path.exists()
    solver.cleanup(TOKEN)  # idempotent


@pytest.mark.parametrize("token", ["../../etc/passwd", "a/b", "", "tok en", "x" * 300])
def test_tokens_that_are_not_base64url_are_refused(tmp_path: Path, token: str) -> None:
    with pytest.raises(IssuanceError, match="not base64url"):
        WebrootSolver(tmp_path / "root").present(token, KEYAUTH)
    with pytest.raises(IssuanceError, match="not base64url"):
        StandaloneSolver("127.0.0.1", free_port()).present(token, KEYAUTH)
    assert not (tmp_path / "root").exists()


def test_webroot_unwritable_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(IssuanceError, match=str(blocker)):
        WebrootSolver(blocker).present(TOKEN, KEYAUTH)


def test_standalone_serves_only_while_tokens_are_pending() -> None:
    port = free_port()
    solver = StandaloneSolver("127.0.0.1", port)
    assert isinstance(solver, Http01Solver)
    assert not solver.running
    other = "b" * 43
    solver.present(TOKEN, KEYAUTH)
    solver.present(other, other + ".thumb")
    try:
        assert _get(port, CHALLENGE_PATH + TOKEN) == (200, KEYAUTH.encode())
        assert _get(port, CHALLENGE_PATH + other) == (200, (other + ".thumb").encode())
        assert _get(port, CHALLENGE_PATH + "unknown")[0] == 404
        assert _get(port, "/")[0] == 404
        solver.cleanup(other)
        assert solver.running  # one token still pending
        assert _get(port, CHALLENGE_PATH + other)[0] == 404
        solver.cleanup(TOKEN)
        assert not solver.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        solver.close()


def test_standalone_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        solver = StandaloneSolver("127.0.0.1", port)
        with pytest.raises(IssuanceError, match=f"127.0.0.1:{port}"):
            solver.present(TOKEN, KEYAUTH)
        assert not solver.running
