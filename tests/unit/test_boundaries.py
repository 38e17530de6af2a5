"""Module boundaries the code keeps: no private name imported across modules.

A name with a leading underscore is its module's own business; a second module that needs it
needs a public name (issue 11: the config table reader was `config._Table`, read by four
modules). Generated protobuf code aliases its imports (`import descriptor as _descriptor`):
an alias is not a private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pysource import parse

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "src" / "certfailover", ROOT / "lab" / "src" / "certfailover_lab"]


def private_imports(path: Path) -> list[str]:
    tree = parse(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                                 f"from {'.' * node.level}{node.module or ''} import {alias.name}")
    return found


def test_the_scan_sees_a_private_import(tmp_path: Path) -> None:
    probe = ROOT / "src" / "certfailover" / "_probe_for_test.py"
    probe.write_text("from .config import _site\nfrom .model import utcnow as _now\n")
    try:
        assert [line.split(": ", 1)[1] for line in private_imports(probe)] == [
            "from .config import _site"]
    finally:
        probe.unlink()


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = [hit for base in SOURCES for path in sorted(base.rglob("*.py"))
                 for hit in private_imports(path)]
    assert offenders == []
