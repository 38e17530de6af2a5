"""A real BIND 9 (`named`) on loopback: authoritative for one lab zone, TSIG-signed updates.

The zone (default `example.test`) has one name server, `ns1.<zone>` at 127.0.0.1, an A
record 127.0.0.1 for the apex and for `*.<zone>` (so Pebble can also validate HTTP-01 when it
uses this server as its resolver), and accepts RFC 2136 updates of TXT records signed with the
lab's TSIG key (`key_name`, hmac-sha256, a fresh secret at every start). `named` runs in the
foreground (`-g`) as the current user, on a free port (UDP and TCP), with everything in its
work directory; recursion is off, so every answer is the authoritative one.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from certfailover.store.files import atomic_write

from .pebble import LabError, LabProcess, LabService
from .ports import free_udp_tcp_port

__all__ = ["BindServer"]

_START_ATTEMPTS = 3


def _named() -> str:
    for cand in (shutil.which("named"), "/usr/sbin/named"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise LabError("BIND's `named` is not installed (Debian: apt-get install bind9 bind9-utils)")


class BindServer(LabService):
    """`named` authoritative for `zone` on 127.0.0.1:<port>, accepting TSIG-signed updates."""

    def __init__(self, workdir: Path, *, zone: str = "example.test",
                 key_name: str = "certfailover-lab.", startup_timeout: float = 15.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.zone = zone.rstrip(".")
        self.key_name = key_name
        self.key_algorithm = "hmac-sha256"
        self.key_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.secret_file = self.workdir / "tsig.secret"
        atomic_write(self.secret_file, self.key_secret.encode() + b"\n", mode=0o600)
        self._proc: LabProcess | None = None
        zone_file = self.workdir / f"{self.zone}.zone"
        log_path = self.workdir / "named.log"
        named = _named()
        last = ""
        for _ in range(_START_ATTEMPTS):
            self.port = free_udp_tcp_port()
            # a fresh zone file each start: named's journal (.jnl) must match it
            for stale in self.workdir.glob(f"{self.zone}.zone.jnl"):
                stale.unlink()
            zone_file.write_text(self._zone_text())
            conf = self.workdir / "named.conf"
            atomic_write(conf, self._conf_text(zone_file).encode(), mode=0o600)
            argv = [named, "-g", "-c", str(conf), "-p", str(self.port), "-4", "-n", "1"]
            proc = LabProcess(argv, log_path=log_path, env={})
            if self._wait_ready(proc, startup_timeout):
                self._proc = proc
                return
            last = proc.log_tail()
            proc.stop()
        raise LabError(f"named did not start (log {log_path}): {last}")

    def _zone_text(self) -> str:
        z = self.zone
        return (
            f"$ORIGIN {z}.\n$TTL 60\n"
            f"@ IN SOA ns1.{z}. hostmaster.{z}. 1 60 60 600 1\n"
            f"@ IN NS ns1.{z}.\n"
            f"ns1 IN A 127.0.0.1\n"
            f"@ IN A 127.0.0.1\n"
            f"* IN A 127.0.0.1\n"
        )

    def _conf_text(self, zone_file: Path) -> str:
        d = self.workdir
        return f"""
key "{self.key_name}" {{ algorithm {self.key_algorithm}; secret "{self.key_secret}"; }};
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
controls {{ }};
logging {{ category default {{ default_stderr; }}; category update {{ default_stderr; }}; }};
zone "{self.zone}" {{
    type primary;
    file "{zone_file}";
    update-policy {{ grant {self.key_name} zonesub TXT; }};
}};
"""

    def _wait_ready(self, proc: LabProcess, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.exited():
                return False
            if "running" in proc.log_tail(4000) and self._answers():
                return True
            time.sleep(0.05)
        return False

    def _answers(self) -> bool:
        try:
            q = dns.message.make_query(f"{self.zone}.", "SOA")
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return False
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def txt(self, name: str) -> list[str]:
        """The TXT strings BIND serves now at `name` (absolute, no trailing dot needed)."""
        q = dns.message.make_query(name.rstrip(".") + ".", "TXT")
        r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=2)
        return [b"".join(rd.strings).decode() for rrset in r.answer for rd in rrset]

    def closed_port(self) -> int:
        """A loopback port where nothing listens (for unreachable-server tests)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
