"""`certfailover pins SITE`: RFC 7469 pin-sha256 of the active, standby and spare keys."""

from __future__ import annotations

import argparse

from ..chains import ChainJudge
from ..errors import StoreError
from ..pins import site_pins, spare_key_path
from .common import emit, load_config, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pins", help="base64 SHA-256 SPKI pins of the active, standby and one "
                                    "spare key (created in the vault the first time; "
                                    "otherwise read-only), and of every intermediate and root "
                                    "of every chain that may be served")
    p.add_argument("site")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..wiring import open_store
    config = load_config(args)
    site = config.site(args.site)
    db, vault = open_store(config, read_only=True)  # works on a read-only store
    try:
        result = site_pins(db, vault, site, judge=ChainJudge.for_snapshot(config.trust.snapshot))
    except OSError as exc:  # the spare key is created the first time: that is a write
        raise StoreError(f"{exc.filename or spare_key_path(vault.root, site.name)}: cannot create "
                         f"the spare key: {exc.strerror}; run `certfailover pins {site.name}` "
                         "once with write access to the store") from exc
    rows = [[p.role, p.pin_sha256, p.ca or "-",
             p.subject or p.cert_id or f"(spare key {result.spare_key})"]
            for p in result.pins]
    emit(args, result, f"site {result.site}\n" + table(rows, ["ROLE", "PIN-SHA256", "CA", "CERT"]))
    return 0
