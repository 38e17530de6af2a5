"""``certfailover trust verify | update | diff``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import CertFailoverError, InputError
from ..model import to_jsonable, utcnow
from ..trust.diff import Site, diff_snapshots, load_any, summarize
from ..trust.evaluate import Evaluation, engine_for
from ..trust.snapshot import ENV_SNAPSHOT, PACKAGED_SNAPSHOT, load_snapshot
from ..trust.sources.load import SourceSpec, update_snapshot


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("trust", help="root-program trust: verify a chain, update or diff the data")
    tsub = p.add_subparsers(dest="trust_command", required=True)

    v = tsub.add_parser("verify", help="per-program verdict for a PEM chain (leaf first)")
    v.add_argument("chain", type=Path, help="PEM file: leaf, then intermediates")
    v.add_argument("--name", help="host name the certificate must cover")
    v.add_argument("--at", help="evaluate at this ISO 8601 time (default: now)")
    v.add_argument("--program", action="append", dest="programs", metavar="NAME",
                   help="program to evaluate (repeatable; default: all in the snapshot)")
    v.add_argument("--chrome-version", type=int, help="Chrome major version (default: stable at --at)")
    v.add_argument("--snapshot", type=Path, help="trust snapshot file (default: packaged)")
    v.add_argument("--json", action="store_true", dest="trust_json", help="JSON output")
    v.set_defaults(func=run_verify)

    u = tsub.add_parser("update", help="rebuild the trust snapshot from upstream files or URLs")
    u.add_argument("--source", action="append", required=True, metavar="NAME=FILE_OR_URL[,META]",
                   help="mozilla=certdata.txt, chrome=root_store.textproto, microsoft=authroot.stl, "
                        "apple|android|java|openjdk=bundle.pem[,metadata.yaml] (repeatable)")
    u.add_argument("--pool", action="append", default=[], metavar="FILE_OR_URL",
                   help="extra certificates (PEM bundle or certdata.txt) to resolve hash-only roots")
    u.add_argument("--output", type=Path,
                   help="where to write (default: [trust] snapshot of the config, else "
                        "$CERTFAILOVER_TRUST_SNAPSHOT; never the packaged snapshot)")
    u.add_argument("--fresh", action="store_true",
                   help="do not carry over programs and certificates from the current snapshot")
    u.add_argument("--allow-shrink", action="store_true",
                   help="accept a program losing more than 10%% of its trusted roots")
    u.add_argument("--json", action="store_true", dest="trust_json")
    u.set_defaults(func=run_update)

    d = tsub.add_parser("diff", help="roots added/removed/constrained between two snapshots")
    d.add_argument("old", help="snapshot (.json.gz) or upstream file")
    d.add_argument("new", help="snapshot (.json.gz) or upstream file")
    d.add_argument("--site", action="append", default=[], metavar="LABEL=CHAIN.pem",
                   help="a certificate chain whose verdict change to report (repeatable)")
    d.add_argument("--at", help="evaluate sites at this ISO 8601 time (default: now)")
    d.add_argument("--json", action="store_true", dest="trust_json")
    d.set_defaults(func=run_diff)


def _want_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "trust_json", False) or getattr(args, "json", False))


def parse_at(text: str | None) -> datetime:
    if text is None:
        return utcnow()
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"--at {text!r}: not an ISO 8601 time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def load_chain(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InputError(f"{path}: not a PEM certificate chain: {exc}") from exc
    if not certs:
        raise InputError(f"{path}: no certificates")
    return certs


def format_evaluation(ev: Evaluation) -> list[str]:
    lines = [f"at {ev.at.isoformat()}  leaf sha256 {ev.leaf_sha256}  paths found: {ev.paths}"]
    for v in ev.verdicts:
        state = "trusted" if v.trusted else "NOT TRUSTED"
        why = v.detail if v.trusted else f"{v.reason.value}: {v.detail}"
        lines.append(f"{v.program:<10} {state:<12} {why}")
        if v.path:
            lines.append(" " * 11 + "path: " + " -> ".join(p.subject for p in v.path))
        for f in v.forecasts:
            lines.append(" " * 11 + f"forecast {f.date.isoformat()} ({f.kind.value}): {f.detail}")
    return lines


def _emit(args: argparse.Namespace, doc: Any, lines: Sequence[str]) -> None:
    if _want_json(args):
        json.dump(to_jsonable(doc), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")


def run_verify(args: argparse.Namespace) -> int:
    try:
        certs = load_chain(args.chain)
        at = parse_at(args.at)
        snap = load_snapshot(args.snapshot) if args.snapshot else load_snapshot()
        ev = engine_for(snap).evaluate(
            certs[0], certs[1:], at=at, programs=args.programs, name=args.name,
            chrome_version=args.chrome_version,
        )
    except CertFailoverError as exc:
        print(f"certfailover trust verify: {exc}", file=sys.stderr)
        return 2
    _emit(args, ev, format_evaluation(ev))
    return 0 if all(v.trusted for v in ev.verdicts) else 1


def update_output(args: argparse.Namespace) -> Path:
    """Where ``trust update`` writes: --output, else the config's ``[trust] snapshot`` (the file
    the checks read), else $CERTFAILOVER_TRUST_SNAPSHOT. Never the packaged snapshot by
    default: it is replaced by the next upgrade and may not be writable."""
    if args.output is not None:
        return Path(args.output)
    path = getattr(args, "config", None)
    if path is not None and Path(path).is_file():
        from .. import config as config_mod
        configured = config_mod.load(Path(path)).trust.snapshot
        if configured is not None:
            return configured
    env = os.environ.get(ENV_SNAPSHOT)
    if env:
        return Path(env)
    raise InputError(
        "no output file: pass --output FILE, or set [trust] snapshot in the config "
        f"(or ${ENV_SNAPSHOT}); refusing to write the packaged snapshot {PACKAGED_SNAPSHOT}"
    )


def run_update(args: argparse.Namespace) -> int:
    try:
        specs = [SourceSpec.parse(s) for s in args.source]
        out = update_output(args)
        snap = update_snapshot(specs, output=out, pools=list(args.pool), now=utcnow(),
                               fresh=args.fresh, allow_shrink=args.allow_shrink,
                               progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except CertFailoverError as exc:
        print(f"certfailover trust update: {exc}", file=sys.stderr)
        return 2
    programs = snap.programs
    lines = [f"wrote {out}"] + [
        f"  {n:<10} {p.trusted_count():>4} trusted roots  "
        f"{len(p.roots) - p.trusted_count():>3} distrust entries  "
        f"{len(p.unresolved):>4} without certificate  "
        f"{p.provenance.version or ''} {p.provenance.date or ''}".rstrip()
        for n, p in sorted(programs.items())
    ]
    doc = {"output": str(out), "programs": {
        n: {"roots": p.trusted_count(), "distrust_entries": len(p.roots) - p.trusted_count(),
            "unresolved": len(p.unresolved), "provenance": p.provenance}
        for n, p in programs.items()}}
    _emit(args, doc, lines)
    return 0


def configured_sites(args: argparse.Namespace) -> list[Site]:
    """Every stored certificate of the configured sites, when a config file is there."""
    path = getattr(args, "config", None)
    if path is None or not Path(path).is_file():
        return []
    from .. import config as config_mod
    from ..wiring import open_store
    cfg = config_mod.load(Path(path))
    db, vault = open_store(cfg)
    out: list[Site] = []
    for site in cfg.sites:
        for cert in db.certs(site.name):
            m = vault.load(Path(cert.path))
            out.append((f"{cert.id} ({cert.state.value})", m.leaf, list(m.chain)))
    return out


def run_diff(args: argparse.Namespace, sites: Sequence[Site] = ()) -> int:
    """``sites``: extra (label, leaf, intermediates) to evaluate (the lead wires in config)."""
    try:
        at = parse_at(args.at)
        all_sites = list(sites) or configured_sites(args)
        for spec in args.site:
            label, sep, file = spec.partition("=")
            if not sep:
                raise InputError(f"--site {spec!r}: expected LABEL=CHAIN.pem")
            certs = load_chain(Path(file))
            all_sites.append((label, certs[0], certs[1:]))
        old = load_any(args.old, built=at)
        new = load_any(args.new, built=at)
        d = diff_snapshots(old, new, sites=all_sites, at=at)
    except CertFailoverError as exc:
        print(f"certfailover trust diff: {exc}", file=sys.stderr)
        return 2
    _emit(args, d, summarize(d))
    return 0
