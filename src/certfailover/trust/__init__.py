"""Root-program trust: importers, the compiled snapshot, evaluation, forecast and diff."""

from __future__ import annotations

from .check import ProgramTrustCheck
from .diff import SnapshotDiff, diff_snapshots, load_any
from .evaluate import (
    Evaluation,
    Forecast,
    ForecastKind,
    Reason,
    TrustEngine,
    Verdict,
    engine_for,
    shares_root,
)
from .programs import KNOWN_PROGRAMS, ConstraintSet, Provenance, RootEntry, RootProgram
from .snapshot import Snapshot, build_snapshot, load_snapshot, read_snapshot, save_snapshot

__all__ = [
    "KNOWN_PROGRAMS",
    "ConstraintSet",
    "Evaluation",
    "Forecast",
    "ForecastKind",
    "ProgramTrustCheck",
    "Provenance",
    "Reason",
    "RootEntry",
    "RootProgram",
    "Snapshot",
    "SnapshotDiff",
    "TrustEngine",
    "Verdict",
    "build_snapshot",
    "diff_snapshots",
    "engine_for",
    "load_any",
    "load_snapshot",
    "read_snapshot",
    "save_snapshot",
    "shares_root",
]
