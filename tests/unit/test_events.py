"""events.py is the one home of the event kinds: every kind the source emits is in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pysource import parse

import certfailover
from certfailover.events import KINDS, SEVERITIES, WARNING, EventKind, severity
from certfailover.notify.base import EVENT_KINDS, event_severity

SRC = Path(certfailover.__file__).parent


def _kind_args(tree: ast.AST) -> list[tuple[str, int, ast.expr]]:
    """The kind argument of every `x.record(report, site, kind, ...)`, `Event(time, site, kind,
    ...)` and `Alert(kind, ...)` call."""
    out: list[tuple[str, int, ast.expr]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        pos = {"record": 2, "Event": 2, "Alert": 0}.get(name)
        if pos is None:
            continue
        kw = next((k.value for k in node.keywords if k.arg == "kind"), None)
        arg = node.args[pos] if len(node.args) > pos else kw
        if arg is not None:
            out.append((name, node.lineno, arg))
    return out


def _kinds_in(expr: ast.expr) -> list[str] | None:
    """The kinds `expr` can be: literals and EventKind members (also in `a if c else b`);
    None when it is something else (a variable), which the test then checks by name."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) \
            and expr.value.id == "EventKind":
        return [EventKind[expr.attr].value] if expr.attr in EventKind.__members__ else ["?" + expr.attr]
    if isinstance(expr, ast.IfExp):
        a, b = _kinds_in(expr.body), _kinds_in(expr.orelse)
        return None if a is None or b is None else a + b
    return None


def _emitted() -> dict[str, list[str]]:
    """kind -> [file:line] of every kind emitted anywhere in the package source."""
    found: dict[str, list[str]] = {}
    variables: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = parse(path)
        for _, line, arg in _kind_args(tree):
            kinds = _kinds_in(arg)
            where = f"{path.relative_to(SRC)}:{line}"
            if kinds is None:
                variables.append(where)
                continue
            for k in kinds:
                found.setdefault(k, []).append(where)
        if not any(w.startswith(f"{path.relative_to(SRC)}:") for w in variables):
            continue
        # a kind held in a variable is assigned from literals or members in the same file
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "kind" for t in node.targets):
                for k in _kinds_in(node.value) or []:
                    found.setdefault(k, []).append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_every_emitted_kind_is_in_the_table() -> None:
    emitted = _emitted()
    # the scan sees the emitters it must (engine, daemon, CLI): a broken scan cannot pass
    assert {"failover", "activated", "reconciled", "trust_updated", "imported", "distrust",
            "lock_lost", "ca_unreachable"} <= set(emitted)
    missing = {k: where for k, where in emitted.items() if k not in {e.value for e in EventKind}}
    assert not missing, f"event kinds emitted but not in certfailover/events.py: {missing}"


def test_emitters_use_the_enum_not_strings() -> None:
    strings = [f"{path.relative_to(SRC)}:{line}" for path in sorted(SRC.rglob("*.py"))
               for name, line, arg in _kind_args(parse(path))
               if name == "record" and isinstance(arg, ast.Constant)]
    assert not strings, f"record() with a string kind (use events.EventKind): {strings}"


def test_each_kind_has_a_severity_and_a_description() -> None:
    assert set(KINDS) == set(EventKind)
    for kind, info in KINDS.items():
        assert info.severity in SEVERITIES, kind
        assert info.description.strip(), kind
    assert EVENT_KINDS == {k.value: i.severity for k, i in KINDS.items()}


@pytest.mark.parametrize(("kind", "expected"), [
    ("rollback", "critical"), ("issued", "info"), ("trust_updated", "info"),
    ("reconciled", "warning"), ("no_such_kind", WARNING),
])
def test_severity(kind: str, expected: str) -> None:
    assert severity(kind) == expected == event_severity(kind)


def test_the_operations_doc_lists_every_kind_with_its_severity() -> None:
    """docs/operations.md's event table says what events.py says (kind and severity)."""
    doc = (Path(certfailover.__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| (info|warning|critical) \|", doc, re.MULTILINE))
    assert table == {kind.value: info.severity for kind, info in KINDS.items()}
