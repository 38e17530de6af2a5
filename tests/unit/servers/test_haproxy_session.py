"""The HAProxy Runtime API session: one connection in interactive mode, a total deadline per
command whatever the socket does (hangs, drips, closes), against a small fake stats socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from certfailover.servers.haproxy import RuntimeAPI

Behaviour = Callable[[socket.socket, bytes], None]  # (connection, one command line) -> answers


def _answer(conn: socket.socket, line: bytes) -> None:
    conn.sendall(b"ok: " + line + b"\n\n> ")


@contextmanager
def stats_socket(tmp_path: Path, on_command: Behaviour) -> Iterator[tuple[Path, list[bytes]]]:
    """A UNIX socket that answers `prompt` like HAProxy, then each command with on_command."""
    path = tmp_path / "admin.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                buf = b""
                while not stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    buf += data
                    while b"\n" in buf:
                        line, _, buf = buf.partition(b"\n")
                        if b" <<" in line:  # a payload command: up to its empty line
                            while b"\n\n" not in buf:
                                more = conn.recv(65536)
                                if not more:
                                    return
                                buf += more
                            _, _, buf = buf.partition(b"\n\n")
                        seen.append(line)
                        try:
                            if line == b"prompt":
                                conn.sendall(b"\n> ")
                            else:
                                on_command(conn, line)
                        except OSError:  # the client gave up: the next connection
                            break

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield path, seen
    finally:
        stop.set()
        srv.close()
        t.join(5)


def test_many_commands_share_one_connection(tmp_path: Path) -> None:
    accepted: list[int] = []

    def answer(conn: socket.socket, line: bytes) -> None:
        accepted.append(conn.fileno())
        _answer(conn, line)
    with stats_socket(tmp_path, answer) as (path, seen), \
            RuntimeAPI(path, timeout=2).session() as cli:
        assert cli.command("set ssl cert /x <<\nPEM\nLINES\n") == "ok: set ssl cert /x <<\n"
        assert cli.command("commit ssl cert /x") == "ok: commit ssl cert /x\n"
    assert seen == [b"prompt", b"set ssl cert /x <<", b"commit ssl cert /x"]
    assert len(set(accepted)) == 1


@pytest.mark.parametrize("fault", ["hang", "drip", "close"])
def test_a_command_has_a_total_deadline(tmp_path: Path, fault: str) -> None:
    def misbehave(conn: socket.socket, line: bytes) -> None:
        if fault == "hang":
            time.sleep(3)
        elif fault == "drip":  # a byte every 0.1 s, never the prompt within the deadline
            for b in b"Transaction created for certificate /x!\n" * 5:
                conn.sendall(bytes([b]))
                time.sleep(0.1)
        else:
            conn.shutdown(socket.SHUT_RDWR)
    with stats_socket(tmp_path, misbehave) as (path, _):
        t0 = time.monotonic()
        with pytest.raises(OSError) as err, RuntimeAPI(path, timeout=1.0).session() as cli:
            cli.command("set ssl cert /x <<\nPEM\n")
        took = time.monotonic() - t0
    assert took < 2.0, took  # one deadline of 1 s, however the bytes arrive
    assert "set ssl cert /x" in str(err.value)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ConnectionError if fault == "close" else TimeoutError)
