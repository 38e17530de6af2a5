"""A real Pebble behind a FaultProxy: every fault ends an issuance by its deadline, then it heals.

The proxy is a TCP forwarder, so in "drip" the TLS handshake itself drips (one byte every 2 s,
far below any per-read timeout). For "http500" and "html" the proxy answers instead of Pebble;
it terminates TLS with Pebble's own listener certificate, which the issuer already trusts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from certfailover.errors import IssuanceError, TransientIssuanceError
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.model import utcnow
from certfailover_lab import KeyAndCsr
from certfailover_lab.faults import FaultProxy, Mode
from certfailover_lab.pebble import PebbleCA

pytestmark = pytest.mark.integration

MakeCsr = Callable[..., KeyAndCsr]
DEADLINE = 3.0  # seconds given to each failing issuance
SLACK = 1.0


@pytest.fixture()
def proxy(pebble_a: PebbleCA) -> Iterator[FaultProxy]:
    # Pebble's HTTPS listener certificate (for 127.0.0.1, from the CA in pebble_a.ca_bundle)
    tls = (
        (pebble_a.workdir / "listener-cert.pem").read_bytes(),
        (pebble_a.workdir / "listener-key.pem").read_bytes(),
    )
    with FaultProxy(pebble_a.port, tls=tls) as p:
        yield p


def _issuer(ca: PebbleCA, proxy: FaultProxy, tmp_path: Path, http01_port: int) -> AcmeIssuer:
    return AcmeIssuer(
        ca.name,
        f"https://127.0.0.1:{proxy.port}/dir",
        email="ops@example.test",
        account_key_path=tmp_path / f"{ca.name}-account.pem",
        solver=StandaloneSolver("127.0.0.1", http01_port),
        ca_bundle=ca.ca_bundle,
    )


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("drip", TransientIssuanceError),
        ("hang", TransientIssuanceError),
        ("refuse", TransientIssuanceError),
        ("reset", TransientIssuanceError),
        ("http500", TransientIssuanceError),
        # a 200 HTML page where the directory should be: a misconfiguration, not retried
        ("html", IssuanceError),
    ],
)
def test_fault_ends_issuance_by_its_deadline_then_heals(
    mode: Mode,
    error: type[IssuanceError],
    proxy: FaultProxy,
    pebble_a: PebbleCA,
    http01_port: int,
    make_csr: MakeCsr,
    tmp_path: Path,
) -> None:
    issuer = _issuer(pebble_a, proxy, tmp_path, http01_port)
    req = make_csr(f"www-{uuid.uuid4().hex[:10]}.example.test")
    proxy.mode = mode

    started = time.monotonic()
    with pytest.raises(IssuanceError) as info:
        issuer.issue(req.csr_pem, deadline=utcnow() + timedelta(seconds=DEADLINE))
    took = time.monotonic() - started

    assert type(info.value) is error, info.value
    assert took < DEADLINE + SLACK, f"{mode}: took {took:.2f}s: {info.value}"
    if error is TransientIssuanceError:  # retried (or waited) until the deadline, not beyond
        assert took >= DEADLINE - 0.2, f"{mode}: gave up early after {took:.2f}s"
    message = str(info.value)
    assert pebble_a.name in message and f"127.0.0.1:{proxy.port}" in message, message
    if mode in ("drip", "hang"):
        assert "deadline" in message, message
    if mode != "refuse":
        assert proxy.accepted >= 1

    proxy.mode = "pass"
    issued = issuer.issue(req.csr_pem, deadline=utcnow() + timedelta(seconds=20))
    assert issued.ca == pebble_a.name and issued.leaf_pem.startswith(b"-----BEGIN CERTIFICATE")


def test_drip_mid_issuance_on_a_kept_alive_issuer(
    proxy: FaultProxy, pebble_a: PebbleCA, http01_port: int, make_csr: MakeCsr, tmp_path: Path
) -> None:
    """The directory and account are known (one issuance done); then the CA drips."""
    issuer = _issuer(pebble_a, proxy, tmp_path, http01_port)
    issuer.issue(
        make_csr(f"a-{uuid.uuid4().hex[:10]}.example.test").csr_pem,
        deadline=utcnow() + timedelta(seconds=20),
    )
    proxy.mode = "drip"  # severs the kept-alive connection: the next request reconnects
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError, match="deadline") as info:
        issuer.issue(
            make_csr(f"b-{uuid.uuid4().hex[:10]}.example.test").csr_pem,
            deadline=utcnow() + timedelta(seconds=DEADLINE),
        )
    took = time.monotonic() - started
    assert DEADLINE - 0.2 <= took < DEADLINE + SLACK, f"took {took:.2f}s: {info.value}"
    assert pebble_a.name in str(info.value)
