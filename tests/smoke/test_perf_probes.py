"""`python -m perf probes` end to end: farm and balancer processes, wrk, CPU hogs.

Asserts the report's shape and that the crash is detected; the figures
themselves (CPU per check, false transitions) belong to docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.smoke


def test_the_probe_harness_reports_cost_false_downs_and_detection() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "perf", "probes", "--seconds", "3", "--hogs", "1"],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(ln.startswith("idle: ") and "ms of CPU per check" in ln for ln in lines)
    assert any("false DOWN transitions" in ln for ln in lines)
    assert any(ln.startswith("crash of cas2 under that load: DOWN after ") for ln in lines)
