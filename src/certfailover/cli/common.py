"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import config as config_mod
from ..config import Config
from ..model import to_jsonable


def load_config(args: argparse.Namespace) -> Config:
    return config_mod.load(args.config)


def runtime(args: argparse.Namespace) -> Any:
    from ..wiring import build
    return build(load_config(args))


def add_notify_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--notify-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="after the switch, wait at most this long for notifications "
                        "(default 10); what is not delivered by then is reported")


def settle_notifications(args: argparse.Namespace, rt: Any) -> list[Any]:
    """Wait up to --notify-timeout for the runtime's notifications (notify.routes.Routes) and
    report per notifier what was delivered or not: on stderr in text mode; the returned
    Delivery list goes into the JSON output."""
    flush = getattr(rt.engine.notify, "flush", None)
    if not callable(flush):
        return []
    deliveries: list[Any] = flush(max(0.0, float(getattr(args, "notify_timeout", 10.0))))
    if not args.json and deliveries:
        counts: dict[str, dict[str, int]] = {}
        for d in deliveries:
            c = counts.setdefault(d.notifier, {})
            c[d.status] = c.get(d.status, 0) + 1
        lines = [f"notify {name}: " + ", ".join(f"{n} {status}" for status, n in c.items())
                 for name, c in counts.items()]
        lines += [f"notify {d.notifier}: {d.kind} {d.site} {d.status}: {d.error}"
                  for d in deliveries if d.status != "delivered"]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    return deliveries


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    """Print `data` as JSON with --json, else `text` (or a JSON fallback)."""
    if args.json or text is None:
        json.dump(to_jsonable(data), sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
