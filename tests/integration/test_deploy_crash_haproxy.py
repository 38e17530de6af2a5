"""kill -9 trials against real haproxy (the trial logic is in test_deploy_crash.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_deploy_crash import run_kill9_trials

pytestmark = pytest.mark.integration


def test_kill9_trials_haproxy(tmp_path: Path) -> None:
    run_kill9_trials("haproxy", 50, tmp_path)
