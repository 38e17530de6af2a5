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
