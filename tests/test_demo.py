"""``make demo`` works: the example orchestrator, worker process and jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"

pytestmark = pytest.mark.slow


def test_demo_runs_jobs_to_completion_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": finished, result") == 5
    assert "Traceback" not in result.stderr
