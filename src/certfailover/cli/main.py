"""`certfailover` command line. Commands live in cli/*_cmd.py modules, found automatically.

Each module exposes `register(sub)`, adding its parser with `set_defaults(func=run)` where
`run(args) -> int`. Global options: --config PATH (default ./certfailover.toml or
$CERTFAILOVER_CONFIG), --json, -v/--verbose (repeatable).

Errors: a CertFailoverError exits 2 with `certfailover: error: ...` on stderr; a usage error
(bad option or argument) exits 2 with argparse's usage text on stderr. With --json both are one
JSON object on stdout instead, `{"error": {"type", "message", "exit_code"}}`, and nothing on
stderr, so a caller that parses stdout always gets JSON.

Logging (set up once, here): warnings and errors only; -v info; -vv debug, including alembic's
migration lines. The daemon (`run` without `--once`) logs at info by default: its log is its
journal.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..config import default_path
from ..errors import CertFailoverError

EXIT_ERROR = 2  # a CertFailoverError or a usage error
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line (argparse's error), raised instead of exiting so --json can report it."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message, self.usage = message, usage


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError (subparsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="certfailover",
        description="Keep a site trusted when its CA fails: standby certificates from independent "
                    "CAs, continuous checks, verified atomic failover.")
    parser.add_argument("--version", action="version", version=f"certfailover {__version__}")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: $CERTFAILOVER_CONFIG or ./certfailover.toml)")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON (errors too: an {\"error\": ...} "
                             "object on stdout)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more: -v info, -vv debug (default: warnings and errors only)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import __path__ as cli_path
    for mod in sorted(m.name for m in pkgutil.iter_modules(cli_path) if m.name.endswith("_cmd")):
        importlib.import_module(f"certfailover.cli.{mod}").register(sub)
    loaded, broken = set(), {}
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # installed but unusable: the rest of the CLI still works
            broken[ep.name] = f"{ep.value} cannot be imported: {exc}"
            continue
        register(sub)
        loaded.add(ep.name)
    if "demo" not in loaded:
        _register_missing_demo(sub, broken.get("demo"))
    return parser


#: installed packages add commands here (`certfailover-lab` adds `demo`); each entry point is a
#: `register(sub)` like the cli/*_cmd.py modules
PLUGIN_GROUP = "certfailover.commands"
LAB_HINT = ("certfailover demo comes with the lab, a separate package: pip install certfailover-lab "
            "(in a checkout: pip install ./lab), or run `make demo`")


def _register_missing_demo(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                           why: str | None) -> None:
    """`demo` without the lab installed: a command that says what to install."""
    def run(args: argparse.Namespace) -> int:
        raise CertFailoverError(LAB_HINT + (f" ({why})" if why else ""))
    p = sub.add_parser("demo", help="the local demo (needs the certfailover-lab package)")
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--interval", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (tests swap it), never a stale stream."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)


def log_level(verbose: int, *, daemon: bool = False) -> int:
    """0: warnings (the daemon: info), 1: info, 2 or more: debug."""
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1 or daemon:
        return logging.INFO
    return logging.WARNING


def setup_logging(verbose: int, *, daemon: bool = False) -> None:
    """One handler on the root logger (added once per process), the level from -v; alembic's
    info lines (`Context impl SQLiteImpl.`, ...) only with -vv."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(log_level(verbose, daemon=daemon))
    logging.getLogger("alembic").setLevel(logging.NOTSET if verbose >= 2 else logging.WARNING)


def json_wanted(argv: Sequence[str]) -> bool:
    """--json among the global options (before the command), read without argparse: a usage
    error must be reported as JSON even when parsing fails."""
    for arg in argv:
        if arg == "--json":
            return True
        if arg == "--":
            return False
    return False


def report_error(as_json: bool, kind: str, message: str, code: int) -> int:
    if as_json:
        json.dump({"error": {"type": kind, "message": message, "exit_code": code}}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        print(f"certfailover: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        if json_wanted(argv):
            return report_error(True, "UsageError", exc.message, EXIT_ERROR)
        sys.stderr.write(exc.usage)
        return report_error(False, "UsageError", exc.message, EXIT_ERROR)
    if args.config is None:
        args.config = default_path()
    setup_logging(args.verbose, daemon=args.command == "run" and not getattr(args, "once", False))
    if not getattr(args, "func", None):
        if args.json:
            return report_error(True, "UsageError", "no command given (see certfailover --help)",
                                EXIT_ERROR)
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.func(args))
    except CertFailoverError as exc:
        return report_error(args.json, type(exc).__name__, str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
