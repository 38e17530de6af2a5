"""Issuance latency against a local Pebble: AcmeIssuer (fine polling) vs the acme library's
stock flow (new_order + answer_challenge + poll_and_finalize, 1-second polling), same run.

    .venv/bin/python bench/bench_acme.py [--n 15]

Both use the same CA, DNS server, standalone HTTP-01 responder, EC P-256 account key and a
fresh EC P-256 key + CSR per certificate. Nonce rejection is off (deterministic work).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from acme import challenges, client, messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from certfailover import keys
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.model import utcnow
from certfailover_lab.pebble import ChallTestSrv, PebbleCA
from certfailover_lab.ports import free_port


def _csr() -> bytes:
    return keys.csr_pem(keys.generate("ec-p256"), [f"b-{uuid.uuid4().hex[:12]}.example.test"])


def baseline(ca: PebbleCA, port: int, n: int) -> list[float]:
    """The acme library as its docs show it."""
    jwk = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(jwk, alg=ES256, verify_ssl=str(ca.ca_bundle))
    acme = client.ClientV2(client.ClientV2.get_directory(ca.directory_url, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    solver = StandaloneSolver("127.0.0.1", port)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        order = acme.new_order(_csr())
        tokens = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            challb = next(
                c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)
            )
            response, validation = challb.response_and_validation(jwk)
            token = challb.chall.encode("token")
            solver.present(token, validation)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        try:
            acme.poll_and_finalize(order, datetime.now() + timedelta(seconds=30))
        finally:
            for token in tokens:
                solver.cleanup(token)
        out.append(time.perf_counter() - started)
    return out


def ours(ca: PebbleCA, port: int, n: int, workdir: Path) -> list[float]:
    issuer = AcmeIssuer(
        ca.name,
        ca.directory_url,
        email=None,
        account_key_path=workdir / "account.pem",
        solver=StandaloneSolver("127.0.0.1", port),
        ca_bundle=ca.ca_bundle,
    )
    issuer.issue(_csr(), deadline=utcnow() + timedelta(seconds=30))  # account registration
    out = []
    for _ in range(n):
        started = time.perf_counter()
        issuer.issue(_csr(), deadline=utcnow() + timedelta(seconds=30))
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-acme-") as tmp:
        work = Path(tmp)
        port = free_port()
        with (
            ChallTestSrv(work / "dns") as dns,
            PebbleCA(
                work / "ca",
                name="bench",
                http_port=port,
                dns_server=dns.dns_address,
                nonce_reject_percent=0,
            ) as ca,
        ):
            base = baseline(ca, port, max(3, args.n // 3))  # ~2 s each: fewer rounds
            mine = ours(ca, port, args.n, work)
    b, m = statistics.median(base), statistics.median(mine)
    print(f"baseline acme poll_and_finalize: n={len(base)} median={b * 1000:.0f} ms")
    print(
        f"certfailover AcmeIssuer:         n={len(mine)} median={m * 1000:.0f} ms"
        f" p90={sorted(mine)[int(len(mine) * 0.9) - 1] * 1000:.0f} ms max={max(mine) * 1000:.0f} ms"
    )
    print(f"ratio (baseline / ours): {b / m:.1f}x")


if __name__ == "__main__":
    main()
