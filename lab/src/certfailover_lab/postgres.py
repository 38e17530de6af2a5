"""A throwaway PostgreSQL server on loopback, for tests of the fleet-sized store.

Uses Debian's `postgresql` package (initdb/postgres from /usr/lib/postgresql/<version>/bin).
PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from certfailover.errors import CertFailoverError

from .ports import free_port


class PostgresError(CertFailoverError):
    pass


def find_bin(name: str) -> Path:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return Path(candidates[0])
    found = shutil.which(name)
    if found is None:
        raise PostgresError(f"{name} not found: install Debian's postgresql package")
    return Path(found)


class PostgresServer:
    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        # its own directory under /tmp: a test's tmp_path is not traversable by `postgres`
        self.workdir = Path(tempfile.mkdtemp(prefix="certfailover-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse root
            self._user = "postgres"
            pw = pwd.getpwnam(self._user)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        self._run([str(find_bin("initdb")), "-D", str(self.data), "-U", "certfailover",
                   "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.startup_timeout = startup_timeout
        self._start()

    def _start(self) -> None:
        startup_timeout = self.startup_timeout
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self._proc = subprocess.Popen(
            self._argv([str(find_bin("postgres")), "-D", str(self.data), "-p", str(self.port),
                        "-h", "127.0.0.1", "-k", str(self.workdir), "-c", "fsync=off"]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + startup_timeout
        isready = str(find_bin("pg_isready"))
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresError(f"postgres exited: {self.log_tail()}")
            if subprocess.run([isready, "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                              check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise PostgresError(f"postgres did not start within {startup_timeout:g} s: {self.log_tail()}")

    def restart(self, *, down: float = 0.0) -> None:
        """Stop the server (fast shutdown: every session ends), stay down `down` seconds, start
        it again on the same port and data (the fleet tests' database restart)."""
        if self._proc is not None and self._proc.poll() is None:
            # pg_ctl signals the postmaster itself (under runuser, a SIGTERM to runuser would
            # reach it late) and waits until it is down
            self._run([str(find_bin("pg_ctl")), "-D", str(self.data), "-m", "fast", "-w",
                       "-t", "15", "stop"])
            self._proc.wait(15)
        time.sleep(down)
        self._start()

    def _argv(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self._user, "--", *argv] if self._user else argv

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run(self._argv(argv), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PostgresError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")

    def log_tail(self) -> str:
        try:
            return (self.workdir / "postgres.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def create_database(self, name: str) -> str:
        """Create a database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        self._run([str(find_bin("createdb")), "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", "certfailover", name])
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://certfailover@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
