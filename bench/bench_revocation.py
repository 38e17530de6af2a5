"""Revocation benchmarks, each next to a baseline measured in the same run.

1. Load + verify + index a 1,000,000-entry CRL (made by `openssl ca -gencrl`), time and peak
   RSS, next to `openssl crl -CAfile ... -noout` (parse + signature check) on the same file.
2. OCSP responses verified per second (verify_response: signer, signature, CertID, times),
   next to bare ECDSA signature verifications per second of the same response.
3. Revocation status of 10,000 certificates per second through RevocationCheck.run_many with
   10 shared CRL shards over loopback HTTP, next to a checker that downloads and verifies
   the CRL for every certificate (no sharing).

Usage: .venv/bin/python bench/bench_revocation.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from certfailover.checks import CertMaterial, CheckContext
from certfailover.model import Cert, CertState
from certfailover.revocation import RevocationCheck, RevocationConfig
from certfailover.revocation.ocsp import build_request, verify_response

NOW = datetime.now(UTC)


def _time_rss(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a child process, via /usr/bin/time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], capture_output=True,
                         text=True, check=True)
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss)


def make_big_crl(work: Path, n: int) -> tuple[Path, Path]:
    crl, ca = work / f"crl-{n}.der", work / "ca.pem"
    if crl.exists() and ca.exists():
        return crl, ca
    key = work / "ca.key"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(key)], check=True)
    subprocess.run(["openssl", "req", "-new", "-x509", "-key", str(key), "-subj", "/CN=Bench CA",
                    "-days", "30", "-out", str(ca), "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)
    with open(work / "index.txt", "w") as f:
        for i in range(n):
            serial = format((1 << 124) + i * 104729, "X")
            f.write(f"R\t301231000000Z\t260101000000Z,keyCompromise\t{serial}\tunknown\t/CN=l{i}\n")
    (work / "crlnumber").write_text("01\n")
    (work / "ca.cnf").write_text(
        f"[ca]\ndefault_ca=b\n[b]\ndatabase={work}/index.txt\ncrlnumber={work}/crlnumber\n"
        f"certificate={ca}\nprivate_key={key}\ndefault_md=sha256\ndefault_crl_days=7\n")
    pem = work / "crl.pem"
    subprocess.run(["openssl", "ca", "-config", str(work / "ca.cnf"), "-gencrl", "-out",
                    str(pem)], check=True, capture_output=True)
    subprocess.run(["openssl", "crl", "-in", str(pem), "-outform", "DER", "-out", str(crl)],
                   check=True)
    return crl, ca


LOADER = """
import sys, time
from datetime import UTC, datetime
from cryptography import x509
from certfailover.revocation.crl import load_crl, verify_crl
issuer = x509.load_pem_x509_certificate(open(sys.argv[2], 'rb').read())
if sys.argv[3] == 'load':
    t = time.perf_counter()
    crl = verify_crl(load_crl(open(sys.argv[1], 'rb').read(), source='f'), issuer, url='f',
                     now=datetime.now(UTC))
    print(len(crl), time.perf_counter() - t)
"""


def bench_big_crl(work: Path, n: int) -> dict[str, float]:
    crl, ca = make_big_crl(work, n)
    py = sys.executable
    base_wall, base_rss = _time_rss([py, "-c", LOADER, str(crl), str(ca), "none"])
    wall, rss = _time_rss([py, "-c", LOADER, str(crl), str(ca), "load"])
    inner = subprocess.run([py, "-c", LOADER, str(crl), str(ca), "load"], capture_output=True,
                           text=True, check=True).stdout.split()
    o_wall, o_rss = _time_rss(["openssl", "crl", "-inform", "DER", "-in", str(crl), "-CAfile",
                               str(ca), "-noout"])
    return {"entries": int(inner[0]), "bytes": crl.stat().st_size,
            "ours_load_s": float(inner[1]), "ours_process_s": wall - base_wall,
            "ours_rss_mib": (rss - base_rss) / 1024, "openssl_s": o_wall,
            "openssl_rss_mib": o_rss / 1024}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("Bench Issuer"))
            .issuer_name(_name("Bench Issuer")).public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(issuer: x509.Certificate, ikey: ec.EllipticCurvePrivateKey,
          pub: ec.EllipticCurvePublicKey, serial: int, cdp: str | None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name("leaf")).issuer_name(issuer.subject)
         .public_key(pub).serial_number(serial).not_valid_before(NOW - timedelta(days=1))
         .not_valid_after(NOW + timedelta(days=30)))
    if cdp:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(cdp)], None, None, None)]), False)
    return b.sign(ikey, hashes.SHA256())


def bench_ocsp(seconds: float) -> dict[str, float]:
    issuer, ikey = _ca()
    leaf = _leaf(issuer, ikey, ikey.public_key(), 12345, None)
    req = build_request(leaf, issuer)
    resp = (ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=issuer, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=NOW - timedelta(minutes=5), next_update=NOW + timedelta(hours=12),
        revocation_time=None, revocation_reason=None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer).sign(ikey, hashes.SHA256()))
    der = resp.public_bytes(serialization.Encoding.DER)

    def rate(fn: object) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(200):
                fn()  # type: ignore[operator]
            n += 200
        return n / (time.perf_counter() - t0)

    pub = issuer.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    ours = rate(lambda: verify_response(der, leaf=leaf, issuer=issuer, request=req, now=NOW,
                                        source="bench"))
    bare = rate(lambda: pub.verify(resp.signature, resp.tbs_response_bytes,
                                   ec.ECDSA(hashes.SHA256())))
    return {"ours_per_s": ours, "bare_ecdsa_verify_per_s": bare}


def bench_many(n_certs: int, shards: int, revoked_per_shard: int,
               naive_sample: int) -> dict[str, float]:
    issuer, ikey = _ca()
    bodies: dict[str, bytes] = {}
    for s in range(shards):
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
             .last_update(NOW - timedelta(minutes=5)).next_update(NOW + timedelta(days=1)))
        for i in range(revoked_per_shard):
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(
                (1 << 100) + s * 1_000_000 + i).revocation_date(NOW - timedelta(hours=1)).build())
        bodies[f"/shard{s}.crl"] = b.sign(ikey, hashes.SHA256()).public_bytes(
            serialization.Encoding.DER)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = bodies.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    port = httpd.server_address[1]
    try:
        pub = ec.generate_private_key(ec.SECP256R1()).public_key()
        materials = []
        for i in range(n_certs):
            s = i % shards
            serial = (1 << 100) + s * 1_000_000 + (i // shards) * 3  # every third is revoked
            leaf = _leaf(issuer, ikey, pub, serial, f"http://127.0.0.1:{port}/shard{s}.crl")
            cert = Cert(id=f"c{i}", site=f"s{i}", ca="bench", serial=format(serial, "x"),
                        not_before=NOW, not_after=NOW, sha256="", key_type="ec-p256",
                        issuer_dn="", state=CertState.ACTIVE, created=NOW, path="")
            materials.append(CertMaterial(cert, leaf, (issuer,), True))
        ctx = CheckContext(now=NOW, domains=(), trust=())
        cfg = RevocationConfig(use_ocsp=False, require_crl_sign=False, workers=8)
        chk = RevocationCheck(cfg)
        t0 = time.perf_counter()
        out = chk.run_many(materials, ctx)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        chk.run_many(materials, ctx)
        warm = time.perf_counter() - t0
        chk.close()
        revoked = sum(1 for fs in out.values() if fs[0].severity.value == "fail")
        assert revoked > 0 and chk.crls.downloads == shards
        t0 = time.perf_counter()
        for m in materials[:naive_sample]:
            RevocationCheck(cfg).run(m, ctx)  # a fresh cache: one download per certificate
        naive = time.perf_counter() - t0
    finally:
        httpd.shutdown()
        httpd.server_close()
    return {"certs": n_certs, "shards": shards, "revoked_found": revoked,
            "cold_per_s": n_certs / cold, "warm_per_s": n_certs / warm,
            "naive_per_s": naive_sample / naive}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100k-entry CRL, 1,000 certificates")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "certfailover-bench"))
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    n = 100_000 if a.quick else 1_000_000
    big = bench_big_crl(work, n)
    print(f"[1] CRL with {big['entries']:,} entries ({big['bytes'] / 2**20:.1f} MiB DER)")
    print(f"    ours   : load+verify+index {big['ours_load_s']:.2f} s in-process, "
          f"{big['ours_process_s']:.2f} s process wall minus interpreter start, "
          f"+{big['ours_rss_mib']:.0f} MiB peak RSS")
    print(f"    openssl crl -CAfile -noout: {big['openssl_s']:.2f} s, "
          f"{big['openssl_rss_mib']:.0f} MiB peak RSS")
    print(f"    ratio  : time {big['ours_process_s'] / big['openssl_s']:.2f}x, "
          f"memory {big['ours_rss_mib'] / big['openssl_rss_mib']:.2f}x of openssl")
    oc = bench_ocsp(1.0 if a.quick else 3.0)
    print(f"[2] OCSP verify_response: {oc['ours_per_s']:,.0f}/s; bare ECDSA verify of the same "
          f"response: {oc['bare_ecdsa_verify_per_s']:,.0f}/s; ratio "
          f"{oc['ours_per_s'] / oc['bare_ecdsa_verify_per_s']:.2f}")
    m = bench_many(1_000 if a.quick else 10_000, 10, 1_000, 100 if a.quick else 200)
    print(f"[3] {m['certs']:,} certificates, {m['shards']} shared CRL shards "
          f"({m['revoked_found']:,} revoked found): cold {m['cold_per_s']:,.0f}/s, "
          f"warm {m['warm_per_s']:,.0f}/s; no-sharing baseline {m['naive_per_s']:,.0f}/s; "
          f"ratio cold/baseline {m['cold_per_s'] / m['naive_per_s']:.1f}x")


if __name__ == "__main__":
    main()
