"""`python -m perf.checkcost` end to end against a casfarm process, a few checks each.

Asserts the report's shape and that every check passed; the figures belong to
docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.smoke


def _run(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "perf.checkcost", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_each_check_kind_reports_its_cpu_and_its_calls() -> None:
    lines = _run("kinds", "--count", "3", "--gap", "5", "--profile")
    kinds = [ln for ln in lines if "ms CPU per check" in ln]
    assert [ln.split("  ")[0] for ln in kinds] == [
        "healthcheck GET (kept)", "imaps", "pops", "smtp"]
    assert all("{'ok': 3}" in ln for ln in kinds)
    assert sum("per check:" in ln for ln in lines) == 4


def test_the_runner_reports_cpu_per_check_with_every_server_up() -> None:
    [line] = _run("runner", "--seconds", "2")
    assert line.startswith("runner: ") and "ms CPU per check" in line
    assert ", 0 not eligible;" in line and "30 registered" in line
