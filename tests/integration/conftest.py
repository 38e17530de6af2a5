"""Session-wide lab for integration tests: one DNS server, two independent Pebble CAs, one EAB CA.

Every process listens on 127.0.0.1 on a free port and is stopped by the fixture finalizer.
Both CAs (and the EAB CA) validate HTTP-01 against the same `http01_port`, where a test runs
its solver (standalone or a tiny webroot server) while it issues.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certfailover import keys
from certfailover_lab import BLOCKED_DOMAIN, EabCredentials, KeyAndCsr
from certfailover_lab.bind import BindServer
from certfailover_lab.pebble import ChallTestSrv, PebbleCA
from certfailover_lab.ports import free_port


@pytest.fixture(scope="session")
def lab_dir() -> Iterator[Path]:
    # not under pytest's basetemp: concurrent pytest sessions prune each other's old basetemps
    path = Path(tempfile.mkdtemp(prefix="certfailover-lab-"))
    yield path
    if not os.environ.get("CERTFAILOVER_KEEP_LAB"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def challtestsrv(lab_dir: Path) -> Iterator[ChallTestSrv]:
    with ChallTestSrv(lab_dir / "challtestsrv") as srv:
        yield srv


@pytest.fixture(scope="session")
def http01_port() -> int:
    return free_port()


def _pebble(
    lab_dir: Path, name: str, http01_port: int, challtestsrv: ChallTestSrv, **kw: object
) -> PebbleCA:
    return PebbleCA(
        lab_dir / name,
        name=name,
        http_port=http01_port,
        dns_server=challtestsrv.dns_address,
        domain_blocklist=(BLOCKED_DOMAIN,),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def pebble_a(lab_dir: Path, http01_port: int, challtestsrv: ChallTestSrv) -> Iterator[PebbleCA]:
    # default 5% badNonce left on
    with _pebble(lab_dir, "pebble-a", http01_port, challtestsrv) as ca:
        yield ca


@pytest.fixture(scope="session")
def pebble_b(lab_dir: Path, http01_port: int, challtestsrv: ChallTestSrv) -> Iterator[PebbleCA]:
    with _pebble(lab_dir, "pebble-b", http01_port, challtestsrv) as ca:
        yield ca


@pytest.fixture(scope="session")
def pebble_eab_credentials() -> EabCredentials:
    # 48 random bytes, base64url without padding (the form CAs like ZeroSSL hand out)
    return EabCredentials(
        kid="kid-certfailover",
        hmac_key="zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    )


@pytest.fixture(scope="session")
def pebble_eab(
    lab_dir: Path,
    http01_port: int,
    challtestsrv: ChallTestSrv,
    pebble_eab_credentials: EabCredentials,
) -> Iterator[PebbleCA]:
    with _pebble(
        lab_dir,
        "pebble-eab",
        http01_port,
        challtestsrv,
        eab_required=True,
        eab_keys={pebble_eab_credentials.kid: pebble_eab_credentials.hmac_key},
    ) as ca:
        yield ca


@pytest.fixture()
def make_csr() -> Callable[..., KeyAndCsr]:
    """make_csr("www.example.test", "example.test", key_type="ec-p256") -> fresh key + CSR."""

    def make(*domains: str, key_type: str = "ec-p256") -> KeyAndCsr:
        if not domains:
            raise ValueError("make_csr needs at least one domain")
        key = keys.generate(key_type)
        return KeyAndCsr(key, keys.key_pem(key), keys.csr_pem(key, list(domains)), domains)

    return make


# --- DNS-01: a real BIND authoritative for example.test, and two CAs that resolve through it


@pytest.fixture(scope="session")
def bind_dns(lab_dir: Path) -> Iterator[BindServer]:
    with BindServer(lab_dir / "bind") as srv:
        yield srv


def _pebble_dns(lab_dir: Path, name: str, http01_port: int, bind_dns: BindServer) -> PebbleCA:
    return PebbleCA(lab_dir / name, name=name, http_port=http01_port,
                    dns_server=bind_dns.address, nonce_reject_percent=0)


@pytest.fixture(scope="session")
def pebble_dns_a(lab_dir: Path, http01_port: int, bind_dns: BindServer) -> Iterator[PebbleCA]:
    with _pebble_dns(lab_dir, "pebble-dns-a", http01_port, bind_dns) as ca:
        yield ca


@pytest.fixture(scope="session")
def pebble_dns_b(lab_dir: Path, http01_port: int, bind_dns: BindServer) -> Iterator[PebbleCA]:
    with _pebble_dns(lab_dir, "pebble-dns-b", http01_port, bind_dns) as ca:
        yield ca


# -- test artifacts (screenshots): kept after the run, their paths printed in the summary ----
_ARTIFACTS: list[Path] = []


@pytest.fixture
def artifact() -> Callable[[str], Path]:
    """`artifact(name)`: a path under $CERTFAILOVER_ARTIFACTS (default
    /tmp/certfailover-artifacts) for a file the test keeps; listed at the end of the run,
    whatever the output capture."""
    root = Path(os.environ.get("CERTFAILOVER_ARTIFACTS") or "/tmp/certfailover-artifacts")

    def path(name: str) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        p = root / name
        _ARTIFACTS.append(p)
        return p
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    kept = [p for p in _ARTIFACTS if p.exists()]
    if kept:
        terminalreporter.section("test artifacts")
        for p in kept:
            terminalreporter.write_line(f"artifact: {p}")
