"""CI skips nothing: with CASLB_NO_SKIPS set, a skipped test fails the run (tests/noskip.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.noskip import NO_SKIPS

ROOT = Path(__file__).resolve().parents[2]

SKIPPING = """
import shutil
import pytest

@pytest.mark.skipif(shutil.which("no-such-tool-here") is None, reason="no-such-tool-here missing")
def test_needs_a_tool():
    pass

def test_skips_inside():
    pytest.skip("wanted a tool")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_skipping.py"
    test.write_text(SKIPPING)
    environ = {k: v for k, v in os.environ.items() if k != NO_SKIPS} | env
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.noskip", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(test)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=environ,
    )


def test_without_the_variable_skips_are_skips(tmp_path: Path) -> None:
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "2 skipped, 1 xfailed" in result.stdout, result.stdout


def test_with_the_variable_a_skip_fails_naming_its_reason(tmp_path: Path) -> None:
    result = _pytest(tmp_path, **{NO_SKIPS: "1"})
    assert result.returncode == 1, result.stdout
    # a skipif fails the set-up (an error), a skip inside the test fails the test
    assert "1 failed, 1 xfailed, 1 error" in result.stdout, result.stdout
    assert "no-such-tool-here missing" in result.stdout
    assert "wanted a tool" in result.stdout
