"""Checks own their signals: what the policy, the scheduler, the engine and status need from a
finding is a typed field of `model.Finding`; `detail` is display data that no module reads
back (neither from a Finding nor from its JSON shape), and no module outside the checks compares a finding's `check` with a name spelled out."""

from __future__ import annotations

import ast
from pathlib import Path

from pysource import parse

import certfailover
from certfailover.health import local_checks
from certfailover.revocation import RevocationCheck
from certfailover.trust.check import ProgramTrustCheck

SRC = Path(certfailover.__file__).parent
#: the modules whose checks write findings (they name their own findings)
CHECK_MODULES = {"health.py", "revocation/check.py", "trust/check.py"}
#: what a mapping is read with
READS = {"get", "keys", "items", "values", "pop", "setdefault", "__getitem__", "__contains__"}


def _is_detail(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "detail"


def _is_detail_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == "detail"


def _reads_detail(node: ast.AST) -> bool:
    if isinstance(node, ast.Subscript):  # x.detail["k"], doc["detail"] (read, not written)
        return (_is_detail(node.value) or _is_detail_key(node.slice)) \
            and isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.Call):  # x.detail.get("k"), x.detail.items(), doc.get("detail")
        f = node.func
        return isinstance(f, ast.Attribute) and f.attr in READS and (
            _is_detail(f.value) or any(_is_detail_key(a) for a in node.args[:1]))
    if isinstance(node, ast.Compare):  # "k" in x.detail
        return any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
            and any(_is_detail(c) for c in node.comparators)
    return False


def detail_reads(tree: ast.AST) -> list[int]:
    """Lines that read from an attribute named `detail` as a mapping."""
    return sorted(node.lineno for node in ast.walk(tree) if _reads_detail(node))


def _spelled(node: ast.AST) -> bool:
    """A string literal, or a tuple / list / set holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return isinstance(node, (ast.Tuple, ast.Set, ast.List)) and any(_spelled(e) for e in node.elts)


def check_name_literals(tree: ast.AST) -> list[int]:
    """Lines that compare something's `.check` with a name spelled out (`f.check == "ari"`)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(x, ast.Attribute) and x.attr == "check" for x in sides) \
                    and any(_spelled(x) for x in sides):
                out.append(node.lineno)
    return sorted(out)


def _modules() -> list[tuple[str, ast.AST]]:
    return [(p.relative_to(SRC).as_posix(), parse(p))
            for p in sorted(SRC.rglob("*.py"))]


def test_the_scanners_see_what_they_look_for() -> None:
    bad = ast.parse('f.detail.get("renew")\nx = f.detail["date"]\nok = "date" in f.detail\n'
                    'f.detail.items()\nif f.check == "ari": pass\nif f.check in ("a", "b"): pass\n'
                    'f.detail["k"] = 1\nif f.check == NAME: pass\nprint(v.detail)\n'
                    'd = f.get("detail")\nd = f["detail"]\n')
    assert detail_reads(bad) == [1, 2, 3, 4, 10, 11]
    assert check_name_literals(bad) == [5, 6]


#: the store writes a finding as a JSON document {"typed": ..., "detail": ...} and reads that
#: document back whole; nothing else opens `detail`
SERIALIZER = "store/db.py"


def test_no_module_reads_finding_detail() -> None:
    found = {name: lines for name, tree in _modules()
             if name != SERIALIZER and (lines := detail_reads(tree))}
    assert found == {}, "read a typed field of model.Finding instead of its detail"


def test_check_names_are_spelled_only_by_the_checks() -> None:
    found = {name: lines for name, tree in _modules()
             if name not in CHECK_MODULES and (lines := check_name_literals(tree))}
    assert found == {}, "ask the check objects (name, findings, signals, remote) instead"


def test_every_check_declares_its_findings_signals_and_speed() -> None:
    checks = [*local_checks(), RevocationCheck(), ProgramTrustCheck()]
    produced = [n for k in checks for n in k.findings]
    assert len(produced) == len(set(produced)), "a finding name has one owner"
    for k in checks:
        assert k.name in k.findings
        assert k.signals and all(names <= k.findings for names in k.signals.values())
    assert {k.name for k in checks if k.remote} == {"revocation"}
