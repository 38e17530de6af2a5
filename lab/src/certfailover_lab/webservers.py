"""Real nginx, Apache httpd and HAProxy on loopback, each with a config of its own under a prefix.

The one place that knows how to launch each server for tests, the demo and the benchmark.
Every server listens on 127.0.0.1 on a port obtained by binding port 0, serves `ok` over
HTTPS, and reads its certificates through vault live links (`<live>/fullchain.pem` +
`privkey.pem`, or `<live>/combined.pem` for HAProxy). `WebServer.spec` is the `[[server]]`
table that `servers.make_adapter` turns into the matching adapter.

    with start("nginx", tmp / "nginx", [VHost("www.test", (vault.live_path("www"),))]) as srv:
        adapter = make_adapter(srv.spec); endpoint = srv.endpoint
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certfailover import keys
from certfailover.model import Clock, utcnow
from certfailover.probe import leaf_sha256
from certfailover.servers.base import Endpoint
from certfailover.store.vault import Vault

from .pki import Authority, make_intermediate, make_leaf, make_root
from .ports import free_port

__all__ = [
    "APACHE_MODULES",
    "KINDS",
    "LabCA",
    "VHost",
    "WebServer",
    "chain_validator",
    "start",
    "start_apache",
    "start_haproxy",
    "start_nginx",
]

APACHE_MODULES = Path("/usr/lib/apache2/modules")


@dataclass(frozen=True)
class VHost:
    """One name served on the server's port, with one certificate per live dir (ECDSA, RSA)."""

    sni: str
    lives: tuple[Path, ...]


@dataclass
class WebServer:
    kind: str
    prefix: Path
    endpoint: Endpoint
    spec: dict[str, Any]
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:  # workers left behind by a master that died first (own session, own group)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, what: str,
                    timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


def _launch(kind: str, prefix: Path, argv: list[str], port: int, spec: dict[str, Any],
            sites: int = 1) -> WebServer:
    """Start and wait until it listens: 15 s, and 5 ms more per site (a server loads every
    certificate before it listens: ~15 s more at 10,000 sites on a busy machine)."""
    log = prefix / "stdout.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=prefix, start_new_session=True)
    srv = WebServer(kind, prefix, Endpoint("127.0.0.1", port), spec, proc, log)
    try:
        _wait_listening(proc, port, log, f"{kind} ({' '.join(argv)})",
                        timeout=15.0 + 0.005 * sites)
    except BaseException:
        srv.stop()
        raise
    return srv


def _retry_port(build: Callable[[int], WebServer], attempts: int = 3) -> WebServer:
    """A port that was free may be taken by a concurrent lab before we bind it: try again."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return build(free_port())
        except RuntimeError as exc:
            last = exc
            if "in use" not in str(exc).lower():
                raise
    raise RuntimeError(f"no free port after {attempts} attempts: {last}")


# -- nginx --------------------------------------------------------------------------------------

def start_nginx(prefix: Path, vhosts: Sequence[VHost], *, workers: int = 1,
                pid_file: bool = False) -> WebServer:
    """`pid_file=True`: the spec also names nginx's pid file (`pid_file`), so that the adapter
    reloads by SIGHUP to the master after `nginx -t` instead of running `nginx -s reload` (the
    `reload` argv stays in the spec, for tests that run it themselves; the adapter skips it)."""
    prefix.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(exist_ok=True)

    def build(port: int) -> WebServer:
        conf = prefix / "nginx.conf"
        servers = []
        for i, vh in enumerate(vhosts):
            certs = "".join(f"    ssl_certificate {live}/fullchain.pem;\n"
                            f"    ssl_certificate_key {live}/privkey.pem;\n" for live in vh.lives)
            servers.append(
                f"  server {{\n    listen 127.0.0.1:{port} ssl{' default_server' if i == 0 else ''};\n"
                f"    server_name {vh.sni};\n{certs}"
                "    location / { return 200 \"ok\\n\"; }\n  }\n")
        conf.write_text(
            "daemon off;\nmaster_process on;\n"
            f"worker_processes {workers};\npid {prefix}/server.pid;\n"
            f"error_log {prefix}/logs/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n  access_log off;\n  keepalive_timeout 5;\n  ssl_session_tickets off;\n"
            + "".join(f"  {t}_temp_path {prefix}/tmp/{t};\n"
                      for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + "".join(servers) + "}\n")
        base = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", f"{prefix}/logs/error.log"]
        spec: dict[str, Any] = {"name": f"nginx-{port}", "type": "nginx",
                                "test": [*base, "-t", "-q"], "reload": [*base, "-s", "reload"]}
        if pid_file:
            spec["pid_file"] = f"{prefix}/server.pid"
        return _launch("nginx", prefix, base, port, spec, len(vhosts))

    return _retry_port(build)


# -- Apache httpd -------------------------------------------------------------------------------

def start_apache(prefix: Path, vhosts: Sequence[VHost]) -> WebServer:
    prefix.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "run"):
        (prefix / sub).mkdir(exist_ok=True)

    def build(port: int) -> WebServer:
        conf = prefix / "httpd.conf"
        mods = "".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"
                       for m in ("mpm_event", "authz_core", "socache_shmcb", "ssl", "status"))
        vh_text = []
        for vh in vhosts:
            certs = "".join(f"  SSLCertificateFile {live}/fullchain.pem\n"
                            f"  SSLCertificateKeyFile {live}/privkey.pem\n" for live in vh.lives)
            vh_text.append(f"<VirtualHost 127.0.0.1:{port}>\n  ServerName {vh.sni}\n"
                           f"  SSLEngine on\n{certs}</VirtualHost>\n")
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"ServerRoot {prefix}\nPidFile {prefix}/server.pid\nDefaultRuntimeDir {prefix}/run\n"
            f"ErrorLog {prefix}/logs/error.log\nLogLevel warn\n{mods}{user}"
            f"Listen 127.0.0.1:{port}\nServerName 127.0.0.1\n"
            "KeepAliveTimeout 5\nMaxRequestWorkers 150\nGracefulShutdownTimeout 10\n"
            f"SSLSessionCache shmcb:{prefix}/run/ssl_scache(512000)\nSSLSessionTickets off\n"
            # answer 200 from memory: the unprivileged children need no file under the prefix
            "<Directory />\n  AllowOverride None\n</Directory>\n"
            "<Location />\n  SetHandler server-status\n  Require all granted\n</Location>\n"
            + "".join(vh_text))
        base = ["apache2", "-d", str(prefix), "-f", str(conf)]
        spec = {"name": f"apache-{port}", "type": "apache", "test": [*base, "-t"],
                "reload": [*base, "-k", "graceful"]}
        return _launch("apache", prefix, [*base, "-DFOREGROUND"], port, spec, len(vhosts))

    return _retry_port(build)


# -- HAProxy ------------------------------------------------------------------------------------

def start_haproxy(prefix: Path, vhosts: Sequence[VHost], *, crt_file: str = "combined.pem"
                  ) -> WebServer:
    prefix.mkdir(parents=True, exist_ok=True)

    def build(port: int) -> WebServer:
        conf = prefix / "haproxy.cfg"
        sock = prefix / "admin.sock"
        paths = [f"{live}/{crt_file}" for vh in vhosts for live in vh.lives]
        crts = " ".join(f"crt {p}" for p in paths)
        if len(paths) > 20:  # a config line holds 64 words: many sites go in a crt-list
            listing = prefix / "crt-list.txt"
            listing.write_text("".join(p + "\n" for p in paths))
            crts = f"crt-list {listing}"
        conf.write_text(
            f"global\n  stats socket {sock} level admin\n"
            "defaults\n  mode http\n  timeout client 10s\n  timeout connect 5s\n"
            "  timeout server 10s\n  timeout http-keep-alive 5s\n"
            f"frontend fe\n  bind 127.0.0.1:{port} ssl {crts}\n"
            "  http-request return status 200 content-type text/plain string ok\n")
        # master-worker (-W) so that the fallback reload is a SIGUSR2 to the master
        argv = ["haproxy", "-W", "-db", "-f", str(conf), "-p", str(prefix / "server.pid")]
        spec: dict[str, Any] = {"name": f"haproxy-{port}", "type": "haproxy",
                                "socket": str(sock), "test": ["haproxy", "-c", "-q", "-f", str(conf)]}
        srv = _launch("haproxy", prefix, argv, port, spec, len(vhosts))
        srv.spec["reload"] = ["kill", "-USR2", str(srv.proc.pid)]
        return srv

    return _retry_port(build)


KINDS: dict[str, Callable[[Path, Sequence[VHost]], WebServer]] = {
    "nginx": start_nginx, "apache": start_apache, "haproxy": start_haproxy,
}


def start(kind: str, prefix: Path, vhosts: Sequence[VHost]) -> WebServer:
    if kind not in KINDS:
        raise ValueError(f"unknown lab web server {kind!r} (one of {', '.join(KINDS)})")
    if shutil.which({"apache": "apache2"}.get(kind, kind)) is None:
        raise RuntimeError(f"{kind} is not installed (Debian package "
                           f"{ {'apache': 'apache2'}.get(kind, kind)})")
    return KINDS[kind](prefix, vhosts)


# -- certificates for the lab -------------------------------------------------------------------

@dataclass(frozen=True)
class LabCA:
    """An independent test CA (root -> intermediate) made with lab.pki."""

    name: str
    root: Authority
    intermediate: Authority

    @classmethod
    def create(cls, name: str) -> LabCA:
        root = make_root(f"{name} Test Root")
        return cls(name, root, make_intermediate(root, f"{name} Test Intermediate"))

    def issue_into(self, vault: Vault, site: str, domains: Sequence[str], *,
                   key_type: str = "ec-p256") -> tuple[Path, str]:
        """Issue a leaf, save it with the vault; return (archive dir, leaf SHA-256 hex)."""
        leaf, key = make_leaf(self.intermediate, list(domains), key_type=key_type)
        d = vault.save(site, self.name, format(leaf.serial_number, "x"),
                       leaf_pem=leaf.public_bytes(Encoding.PEM),
                       chain_pem=self.intermediate.cert.public_bytes(Encoding.PEM),
                       key_pem=keys.key_pem(key))
        return d, leaf_sha256(leaf)


def chain_validator(roots: Sequence[x509.Certificate],
                    clock: Clock = utcnow) -> Callable[[list[x509.Certificate], str], str | None]:
    """validate(served chain, sni) -> error or None, with cryptography's web-PKI verifier."""
    store = Store(list(roots))

    def validate(chain: list[x509.Certificate], sni: str) -> str | None:
        verifier = PolicyBuilder().store(store).time(clock()).build_server_verifier(DNSName(sni))
        try:
            verifier.verify(chain[0], chain[1:])
        except VerificationError as exc:
            return f"chain for {sni} does not verify: {exc}"
        return None

    return validate
