"""`certfailover demo`: the whole story on local CAs and a local nginx (see demo.py).

The lab distribution (`certfailover-lab`, in a checkout `pip install ./lab`) adds this command
to the `certfailover` CLI through the `certfailover.commands` entry point; the product never
imports the lab. Without the lab, `certfailover demo` says which package to install and exits 2.
It refuses a --workdir that is not empty unless an earlier demo created it (marker file
`.certfailover-demo`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certfailover.cli.common import emit

from . import demo


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="two local Pebble CAs, a local nginx, a real revocation "
                                    "and a verified failover (from the certfailover-lab package)")
    p.add_argument("--workdir", type=Path, default=Path(".demo"),
                   help="where the demo keeps its files (default ./.demo); must be missing, "
                        "empty, or made by an earlier demo (it is emptied first)")
    p.add_argument("--interval", type=float, default=1.0, help="daemon interval in seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = (lambda s: print(s, file=sys.stderr)) if args.json else print
    result = demo.run_demo(args.workdir.resolve(), out=out, interval=args.interval)
    if args.json:
        emit(args, result)
    return 0 if result.ok else 1
