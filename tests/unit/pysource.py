"""Parsing the project's own source for the tests that scan it (boundaries, event kinds,
finding signals).

`parse` is `ast.parse`, retried: CPython 3.11 keeps the AST converter's recursion depth in
interpreter-wide state, and Python 3.11 parses source lines itself when it prints a traceback
(for the `^^^^` markers), so a traceback printed by another thread at the same moment (a lab
server logging a broken pipe) can make a parse here fail with `SystemError: AST constructor
recursion depth mismatch` (seen once in a full run). The source did not change; a second parse
succeeds.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

ATTEMPTS = 5


def parse(source: str | Path, filename: str = "<unknown>") -> ast.Module:
    text = source.read_text() if isinstance(source, Path) else source
    name = str(source) if isinstance(source, Path) else filename
    for attempt in range(ATTEMPTS):
        try:
            return ast.parse(text, name)
        except SystemError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")
