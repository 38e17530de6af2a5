"""`certfailover remove CERT_ID`: take a bad certificate out of the rotation for good.

The certificate is marked retired (never served, never counted as a standby) and a `removed`
event is recorded. Its files stay in the archive: certfailover never deletes key material.
The active certificate is refused: fail over first.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from ..events import EventKind
from ..model import CertState
from ..store.vault import base_dir
from .common import emit, runtime


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("remove", help="retire a (bad) certificate; its files stay in the archive")
    p.add_argument("cert_id", metavar="CERT_ID", help="as shown by `status --json` (site/ca/serial)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    cert = rt.db.cert(args.cert_id)
    if cert is None:
        raise InputError(f"no certificate {args.cert_id!r} in the store {rt.config.store} "
                         "(`certfailover --json status` lists the ids)")
    live = rt.vault.live_target(cert.site)
    served = live is not None and base_dir(live) == Path(cert.path).resolve()  # any chain
    if cert.state is CertState.ACTIVE or served:
        raise InputError(f"{cert.id} is the active certificate of site {cert.site!r} (served "
                         f"through {rt.vault.live_path(cert.site)}): fail over first "
                         f"(`certfailover failover {cert.site}`), then remove it")
    kept = os.path.isdir(cert.path)
    data = {"removed": cert.id, "site": cert.site, "ca": cert.ca, "serial": cert.serial,
            "previous_state": cert.state.value, "path": cert.path, "files_kept": kept}
    if cert.state is CertState.RETIRED:
        emit(args, {**data, "already": True},
             f"{cert.id} was already retired; nothing changed (its files stay in {cert.path})")
        return 0
    rt.db.set_state(cert.id, CertState.RETIRED)
    rt.engine.record(None, cert.site, EventKind.REMOVED,
                     f"removed {cert.id} ({cert.state.value}) from the rotation; its files stay in "
                     f"{cert.path}", cert=cert.id, path=cert.path, previous=cert.state.value)
    emit(args, {**data, "already": False},
         f"removed {cert.id}: retired, it is no longer served nor counted as a standby.\n"
         f"Its certificate and private key stay in {cert.path} (certfailover never deletes "
         "key material; delete the directory yourself once you are sure).")
    return 0
