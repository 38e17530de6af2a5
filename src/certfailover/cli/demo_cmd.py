"""`certfailover demo`: the whole story on local CAs and a local nginx (see demo/run.py).

The demo needs the `lab` extra (`pip install 'certfailover[lab]'`, in a checkout
`pip install '.[lab]'`): without it the command says so and exits 2. It refuses a --workdir
that is not empty unless an earlier demo created it (marker file `.certfailover-demo`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import CertFailoverError
from .common import emit

#: what `pip install '.[lab]'` adds; the lab (local CAs, nginx) imports them
LAB_MODULES = ("trustme",)
LAB_HINT = ("certfailover demo needs the 'lab' extra: pip install 'certfailover[lab]' "
            "(in a checkout: pip install '.[lab]')")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="two local Pebble CAs, a local nginx, a real revocation "
                                    "and a verified failover (needs the 'lab' extra)")
    p.add_argument("--workdir", type=Path, default=Path(".demo"),
                   help="where the demo keeps its files (default ./.demo); must be missing, "
                        "empty, or made by an earlier demo (it is emptied first)")
    p.add_argument("--interval", type=float, default=1.0, help="daemon interval in seconds")
    p.set_defaults(func=run)


def load_demo() -> Any:
    """The demo module, or a CertFailoverError naming the extra when a lab dependency is missing."""
    try:
        from .. import demo
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in LAB_MODULES:
            raise CertFailoverError(f"{LAB_HINT}; missing module: {missing}") from exc
        raise
    return demo


def run(args: argparse.Namespace) -> int:
    demo = load_demo()
    out = (lambda s: print(s, file=sys.stderr)) if args.json else print
    result = demo.run_demo(args.workdir.resolve(), out=out, interval=args.interval)
    if args.json:
        emit(args, result)
    return 0 if result.ok else 1
