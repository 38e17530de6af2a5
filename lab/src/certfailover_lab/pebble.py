"""A local ACME lab: real `pebble` CAs and a `pebble-challtestsrv` DNS server.

Used by the integration tests and by `make demo`. Every process listens on 127.0.0.1 on a
free port, logs to a file in its work directory and is stopped by `stop()` (or by leaving
the `with` block). Each `PebbleCA` is an independent CA: fresh root and intermediate keys
at every start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
import trustme
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from certfailover.errors import CertFailoverError
from certfailover.store.files import atomic_write

from .ports import free_port, free_udp_tcp_port

__all__ = ["ChallTestSrv", "LabError", "PebbleCA", "revoke"]

_START_ATTEMPTS = 3  # a free port can be taken by a concurrent lab between probe and bind


class LabError(CertFailoverError):
    """A lab process could not be started or answered wrongly; names the process and its log."""


class LabProcess:
    """One child process with its output in a log file; stopped with terminate, then kill."""

    def __init__(self, argv: list[str], *, log_path: Path, env: Mapping[str, str]) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,
        )

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class LabService:
    """A lab process owned by this object: stop() ends it; usable as a context manager."""

    _proc: LabProcess | None = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ChallTestSrv(LabService):
    """`pebble-challtestsrv` as a DNS server answering every A query with 127.0.0.1.

    AAAA answers are disabled (`-defaultIPv6 ""`), so Pebble dials IPv4; its own HTTP-01,
    HTTPS-01 and TLS-ALPN-01 listeners are disabled so they clash with nobody.
    """

    def __init__(self, workdir: Path, *, startup_timeout: float = 10.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: LabProcess | None = None
        last = ""
        for _ in range(_START_ATTEMPTS):
            self.dns_port = free_udp_tcp_port()
            self.management_port = free_port()
            argv = [
                "pebble-challtestsrv",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-dns01", f"127.0.0.1:{self.dns_port}",
                "-management", f"127.0.0.1:{self.management_port}",
            ]  # fmt: skip
            proc = LabProcess(argv, log_path=self.workdir / "challtestsrv.log", env={})
            if self._wait_ready(proc, startup_timeout):
                self._proc = proc
                return
            last = proc.log_tail()
            proc.stop()
        raise LabError(
            f"pebble-challtestsrv did not start (log {self.workdir / 'challtestsrv.log'}): {last}"
        )

    def _wait_ready(self, proc: LabProcess, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.exited():
                return False
            if _tcp_open("127.0.0.1", self.management_port) and _tcp_open(
                "127.0.0.1", self.dns_port
            ):
                return True
            time.sleep(0.02)
        return False

    @property
    def dns_address(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"



class PebbleCA(LabService):
    """One real Pebble ACME CA on free loopback ports.

    `http_port` is where Pebble validates HTTP-01 challenges (the port your solver serves on).
    `nonce_reject_percent=None` leaves Pebble's default (5% of good nonces rejected).
    `domain_blocklist`: Pebble 2.4.0 panics (and drops the connection) on a newOrder whose
    name has fewer labels than a blocklist entry, so entries must have at most as many labels
    as any name ordered from this CA; two-label entries ("blocked.test") are safe.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        http_port: int,
        dns_server: str | None,
        ocsp_url: str | None = None,
        eab_keys: dict[str, str] | None = None,
        eab_required: bool = False,
        validity_seconds: int | None = None,
        nonce_reject_percent: int | None = None,
        alternate_roots: int = 0,
        domain_blocklist: tuple[str, ...] = (),
        startup_timeout: float = 15.0,
    ) -> None:
        for entry in domain_blocklist:
            if entry.count(".") > 1:
                raise LabError(
                    f"pebble {name!r}: domain_blocklist entry {entry!r} has more than two labels;"
                    " Pebble 2.4.0 crashes on shorter ordered names"
                )
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: LabProcess | None = None

        tls_ca = trustme.CA(organization_name=f"certfailover lab listener CA ({name})")
        listener = tls_ca.issue_cert("127.0.0.1", "localhost")
        self.ca_bundle = self.workdir / "listener-ca.pem"
        tls_ca.cert_pem.write_to_path(str(self.ca_bundle))
        cert_path = self.workdir / "listener-cert.pem"
        key_path = self.workdir / "listener-key.pem"
        listener.cert_chain_pems[0].write_to_path(str(cert_path))
        atomic_write(key_path, listener.private_key_pem.bytes(), mode=0o600)

        env = {"PEBBLE_VA_NOSLEEP": "1"}
        if nonce_reject_percent is not None:
            env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject_percent)
        if alternate_roots:
            env["PEBBLE_ALTERNATE_ROOTS"] = str(alternate_roots)

        log_path = self.workdir / "pebble.log"
        last = ""
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            self.management_port = free_port()
            conf: dict[str, Any] = {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(cert_path),
                "privateKey": str(key_path),
                "httpPort": http_port,
                "tlsPort": free_port(),  # TLS-ALPN-01 is not used; keep it off any fixed port
                "ocspResponderURL": ocsp_url or "",
                "externalAccountBindingRequired": eab_required,
            }
            if eab_keys:
                conf["externalAccountMACKeys"] = dict(eab_keys)
            if validity_seconds is not None:
                conf["certificateValidityPeriod"] = validity_seconds
            if domain_blocklist:
                conf["domainBlocklist"] = list(domain_blocklist)
            config_path = self.workdir / "pebble-config.json"
            # the config holds EAB MAC keys: owner-only
            atomic_write(config_path, json.dumps({"pebble": conf}, indent=2).encode(), mode=0o600)
            argv = ["pebble", "-config", str(config_path)]
            if dns_server:
                argv += ["-dnsserver", dns_server]
            proc = LabProcess(argv, log_path=log_path, env=env)
            if self._wait_ready(proc, startup_timeout):
                self._proc = proc
                return
            last = proc.log_tail()
            proc.stop()
        raise LabError(f"pebble {name!r} did not start (log {log_path}): {last}")

    def _wait_ready(self, proc: LabProcess, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.exited():
                return False
            try:
                dir_ok = requests.get(self.directory_url, verify=str(self.ca_bundle), timeout=1).ok
                mgmt_ok = requests.get(
                    f"{self.management_url}/roots/0", verify=str(self.ca_bundle), timeout=1
                ).ok
                if dir_ok and mgmt_ok:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.02)
        return False

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    def _management_get(self, path: str) -> requests.Response:
        url = f"{self.management_url}{path}"
        try:
            resp = requests.get(url, verify=str(self.ca_bundle), timeout=5)
        except requests.RequestException as e:
            raise LabError(f"pebble {self.name!r}: {url}: {e}") from e
        if not resp.ok:
            raise LabError(f"pebble {self.name!r}: {url}: HTTP {resp.status_code}: {resp.text}")
        return resp

    def root_pem(self) -> bytes:
        return self._management_get("/roots/0").content

    def intermediate_pem(self) -> bytes:
        return self._management_get("/intermediates/0").content

    def intermediate_key_pem(self) -> bytes:
        return self._management_get("/intermediate-keys/0").content

    def cert_status(self, serial: int) -> dict[str, Any]:
        """Pebble's view of a certificate: {"Status": "Valid"|"Revoked", "Reason", "RevokedAt", ...}."""
        data = self._management_get(f"/cert-status-by-serial/{serial:x}").json()
        if not isinstance(data, dict):
            raise LabError(f"pebble {self.name!r}: cert-status for {serial:x} is not an object")
        return data



def _jwk_and_alg(key_pem: bytes) -> tuple[JWK, JWASignature]:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}.get(key.curve.name)
        if alg is None:
            raise LabError(f"revoke: unsupported EC curve {key.curve.name}")
        return JWKEC(key=key), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    raise LabError(f"revoke: unsupported key type {type(key).__name__}")


def revoke(
    directory_url: str,
    ca_bundle: Path | None,
    cert_pem: bytes,
    key_pem: bytes,
    reason: int = 0,
    *,
    attempts: int = 5,
) -> None:
    """Revoke `cert_pem` at the CA with ACME revokeCert, signed by the certificate's own key."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    jwk, alg = _jwk_and_alg(key_pem)
    verify: Any = str(ca_bundle) if ca_bundle is not None else True
    for attempt in range(attempts):
        net = acme_client.ClientNetwork(
            jwk, alg=alg, verify_ssl=verify, user_agent="certfailover-lab"
        )
        try:
            directory = acme_client.ClientV2.get_directory(directory_url, net)
            acme_client.ClientV2(directory, net).revoke(cert, reason)
            return
        except messages.Error as e:
            # Pebble rejects a share of good nonces on purpose; the library retries once only.
            if e.code == "badNonce" and attempt + 1 < attempts:
                continue
            raise LabError(f"revoke at {directory_url}: {e.typ}: {e.detail}") from e
        except (acme_errors.Error, requests.RequestException) as e:
            raise LabError(f"revoke at {directory_url}: {e}") from e
        finally:
            net.session.close()
