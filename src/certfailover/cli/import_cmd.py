"""`certfailover import`: add a certificate obtained elsewhere (checked for consistency).

Refused with the reason (exit 2) unless `--force`, then stored with a printed warning: an
expired or not yet valid certificate, a self-signed one, and a key type other than the
site's `key_type`. Every refusal happens before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from cryptography import x509

from .. import keys
from ..config import SiteConfig
from ..errors import InputError
from ..events import EventKind
from ..model import to_jsonable
from ..store.vault import load_key, load_pem_certs
from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="import a certificate, key and chain as a standby")
    p.add_argument("site")
    p.add_argument("--ca", required=True, help="label of the issuing CA (its own name space in the vault)")
    p.add_argument("--cert", type=Path, required=True, help="PEM leaf (may include the chain)")
    p.add_argument("--key", type=Path, required=True, help="PEM private key (unencrypted)")
    p.add_argument("--chain", type=Path, help="PEM intermediates")
    p.add_argument("--force", action="store_true",
                   help="store an expired, not yet valid or self-signed certificate, or one "
                        "whose key type is not the site's, with a warning (never a "
                        "certificate whose key does not match)")
    p.set_defaults(func=run)


def _read(path: Path | None, what: str) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def _self_signed(leaf: x509.Certificate) -> bool:
    if leaf.issuer != leaf.subject:
        return False
    try:
        leaf.verify_directly_issued_by(leaf)
    except Exception:  # noqa: BLE001 - any failure: not signed by its own key
        return False
    return True


def problems(site: SiteConfig, leaf: x509.Certificate, key_pem: bytes, *, cert_path: Path,
             key_path: Path, now: datetime) -> list[str]:
    """What makes this certificate unfit to be a standby of `site`, one sentence each."""
    out: list[str] = []
    if leaf.not_valid_after_utc <= now:
        out.append(f"{cert_path}: the certificate expired on "
                   f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")
    if leaf.not_valid_before_utc > now:
        out.append(f"{cert_path}: the certificate is not valid before "
                   f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z")
    if _self_signed(leaf):
        out.append(f"{cert_path}: the certificate is self-signed ({leaf.subject.rfc4514_string()}); "
                   "no client trusts it")
    found = keys.key_type_of(load_key(key_pem, str(key_path)).public_key())
    if found != site.key_type:
        out.append(f"{key_path}: the key is {found}, site {site.name!r} uses key_type "
                   f"{site.key_type}")
    return out


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    site = rt.config.site(args.site)
    leaf_pem, chain_pem = _read(args.cert, "certificate"), _read(args.chain, "chain")
    key_pem = _read(args.key, "private key")
    leaves = load_pem_certs(leaf_pem, str(args.cert))
    if not leaves:
        raise InputError(f"{args.cert}: no certificate found")
    found = problems(site, leaves[0], key_pem, cert_path=args.cert, key_path=args.key,
                     now=rt.engine.clock())
    if found and not args.force:
        raise InputError("refused: " + "; ".join(found) + " (nothing was stored; --force "
                         "stores it anyway)")
    for p in found:
        print(f"certfailover: warning: {p} (stored anyway: --force)", file=sys.stderr, flush=True)
    cert = rt.engine.store_cert(site, args.ca, leaf_pem=leaf_pem, chain_pem=chain_pem,
                                key_pem=key_pem, source=str(args.cert))
    rt.engine.record(None, site.name, EventKind.IMPORTED,
                     f"imported {cert.id} from {args.cert}"
                     + (f" despite: {'; '.join(found)}" if found else ""),
                     cert=cert.id, forced=found)
    data = {**to_jsonable(cert), "warnings": found}
    emit(args, data, f"imported {cert.id} (expires {cert.not_after:%Y-%m-%d}) as a standby")
    return 0
