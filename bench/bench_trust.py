"""Benchmark: evaluate N leaf certificates against every root program.

Reports certificates per second for

  ours       certfailover TrustEngine.evaluate(): all programs in the packaged snapshot plus
             the bench roots (added to every program), shared path building
  baseline   one cryptography chain verification per certificate (PolicyBuilder/ServerVerifier,
             one store, one program): the goal is ours >= 0.5 x baseline
  openssl    `openssl verify` on the same certificates in one call against one store
  sigs       raw signature verifications per second (verify_directly_issued_by), the physical
             limit; a root -> intermediate -> leaf chain needs two

Leaves: half ECDSA P-256 issuers, half RSA-2048 issuers, 4 intermediates under 2 roots.
Run:  .venv/bin/python bench/bench_trust.py [--count 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from certfailover.trust.evaluate import TrustEngine
from certfailover.trust.programs import RootEntry
from certfailover.trust.snapshot import Snapshot, load_snapshot

NOW = datetime(2026, 6, 1, tzinfo=UTC)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, key: Key, issuer: tuple[x509.Certificate, Key] | None) -> tuple[x509.Certificate, Key]:
    icert, ikey = issuer if issuer else (None, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(icert.subject if icert else _name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=365)).not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key()), critical=False)
    )
    return b.sign(ikey, hashes.SHA256()), key


def _leaf(i: int, issuer: tuple[x509.Certificate, Key], key: Key) -> x509.Certificate:
    icert, ikey = issuer
    name = f"site{i}.bench.test"
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(icert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=10)).not_valid_after(NOW + timedelta(days=80))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key()), critical=False)
        .sign(ikey, hashes.SHA256())
    )


def build(count: int) -> tuple[list[x509.Certificate], list[tuple[x509.Certificate, x509.Certificate]], list[x509.Certificate]]:
    ec_root = _ca("Bench EC Root", ec.generate_private_key(ec.SECP256R1()), None)
    rsa_root = _ca("Bench RSA Root", rsa.generate_private_key(65537, 2048), None)
    ints = [
        _ca("Bench EC CA 1", ec.generate_private_key(ec.SECP256R1()), ec_root),
        _ca("Bench EC CA 2", ec.generate_private_key(ec.SECP256R1()), ec_root),
        _ca("Bench RSA CA 1", rsa.generate_private_key(65537, 2048), rsa_root),
        _ca("Bench RSA CA 2", rsa.generate_private_key(65537, 2048), rsa_root),
    ]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    pairs = []
    for i in range(count):
        issuer = ints[i % 4]
        pairs.append((_leaf(i, issuer, leaf_key), issuer[0]))
    return [ec_root[0], rsa_root[0]], pairs, [c for c, _ in ints]


def with_bench_roots(snap: Snapshot, roots: list[x509.Certificate]) -> Snapshot:
    certs = dict(snap.certs)
    programs = dict(snap.programs)
    for r in roots:
        sha = r.fingerprint(hashes.SHA256()).hex()
        certs[sha] = r.public_bytes(serialization.Encoding.DER)
        for name, p in programs.items():
            programs[name] = replace(p, roots={**p.roots, sha: RootEntry(sha, r.subject.rfc4514_string())})
    return Snapshot(built=snap.built, programs=programs, certs=certs)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    args = ap.parse_args()
    t = time.perf_counter()
    roots, pairs, ints = build(args.count)
    print(f"built {len(pairs)} leaves in {time.perf_counter() - t:.1f}s", file=sys.stderr)

    snap = with_bench_roots(load_snapshot(), roots)
    t = time.perf_counter()
    engine = TrustEngine(snap)
    setup = time.perf_counter() - t
    programs = sorted(snap.programs)
    verifier = PolicyBuilder().store(Store(roots)).time(NOW)
    ders = [(c.public_bytes(serialization.Encoding.DER), i.public_bytes(serialization.Encoding.DER))
            for c, i in pairs]

    def fresh(lo: int, hi: int) -> list[tuple[x509.Certificate, x509.Certificate]]:
        # new objects per method: cryptography caches parsed extensions on a certificate
        return [(x509.load_der_x509_certificate(a), x509.load_der_x509_certificate(b))
                for a, b in ders[lo:hi]]

    def run_ours(chunk: list[tuple[x509.Certificate, x509.Certificate]]) -> int:
        n = 0
        for leaf, ica in chunk:
            ev = engine.evaluate(leaf, [ica], at=NOW, programs=programs)
            n += all(v.trusted for v in ev.verdicts)
        return n

    def run_base(chunk: list[tuple[x509.Certificate, x509.Certificate]]) -> int:
        for leaf, ica in chunk:
            name = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value[0]
            verifier.build_server_verifier(name).verify(leaf, [ica])
        return len(chunk)

    def run_sigs(chunk: list[tuple[x509.Certificate, x509.Certificate]]) -> int:
        for leaf, ica in chunk:
            leaf.verify_directly_issued_by(ica)
        return len(chunk)

    # Interleave the three in chunks so load from other processes hits them alike.
    spent = {"ours": 0.0, "base": 0.0, "sigs": 0.0}
    step = 500
    trusted = 0
    for lo in range(0, len(pairs), step):
        for key, fn in (("ours", run_ours), ("base", run_base), ("sigs", run_sigs)):
            chunk = fresh(lo, lo + step)
            t = time.perf_counter()
            n = fn(chunk)
            spent[key] += time.perf_counter() - t
            if key == "ours":
                trusted += n
    assert trusted == len(pairs), f"only {trusted} of {len(pairs)} trusted by all programs"
    ours, base, sigs = (rate(len(pairs), spent[k]) for k in ("ours", "base", "sigs"))

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "roots.pem").write_bytes(b"".join(r.public_bytes(serialization.Encoding.PEM) for r in roots))
        (d / "ints.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ints))
        files = []
        for i, (leaf, _) in enumerate(pairs):
            f = d / f"l{i}.pem"
            f.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
            files.append(str(f))
        t = time.perf_counter()
        res = subprocess.run(
            ["openssl", "verify", "-CAfile", str(d / "roots.pem"), "-untrusted", str(d / "ints.pem"),
             "-attime", str(int(NOW.timestamp())), "-purpose", "sslserver", *files],
            capture_output=True, text=True, check=False,
        )
        ossl = rate(len(pairs), time.perf_counter() - t)
        ok = res.stdout.count(": OK")
        assert ok == len(pairs), f"openssl verified {ok} of {len(pairs)}: {res.stderr[:300]}"

    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: nproc={os.cpu_count()}")
    print(f"certificates: {len(pairs)} (ECDSA P-256 and RSA-2048 issuers, 4 intermediates, 2 roots)")
    print(f"programs evaluated per certificate: {len(programs)} ({', '.join(programs)})")
    print(f"engine setup (index {len(snap.certs)} roots): {setup * 1000:.1f} ms")
    print(f"ours, all programs:            {ours:10.0f} certs/s")
    print(f"cryptography, one chain:       {base:10.0f} certs/s")
    print(f"openssl verify, one call:      {ossl:10.0f} certs/s")
    print(f"signature verifications:       {sigs:10.0f} /s (leaf signatures only)")
    print(f"ratio ours / cryptography:     {ours / base:10.2f}  (goal >= 0.5)")
    print(f"ratio ours / openssl:          {ours / ossl:10.2f}")
    print(f"ratio ours / signature limit:  {ours / sigs:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
