"""`certfailover import`: add a certificate obtained elsewhere (checked for consistency)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="import a certificate, key and chain as a standby")
    p.add_argument("site")
    p.add_argument("--ca", required=True, help="label of the issuing CA (its own name space in the vault)")
    p.add_argument("--cert", type=Path, required=True, help="PEM leaf (may include the chain)")
    p.add_argument("--key", type=Path, required=True, help="PEM private key (unencrypted)")
    p.add_argument("--chain", type=Path, help="PEM intermediates")
    p.set_defaults(func=run)


def _read(path: Path | None, what: str) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    site = rt.config.site(args.site)
    cert = rt.engine.store_cert(site, args.ca, leaf_pem=_read(args.cert, "certificate"),
                                chain_pem=_read(args.chain, "chain"),
                                key_pem=_read(args.key, "private key"), source=str(args.cert))
    rt.engine.record(None, site.name, "imported", f"imported {cert.id} from {args.cert}", cert=cert.id)
    emit(args, cert, f"imported {cert.id} (expires {cert.not_after:%Y-%m-%d}) as a standby")
    return 0
