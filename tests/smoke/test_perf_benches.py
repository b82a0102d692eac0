"""The throughput benches end to end: `caslb run` as a subprocess, a CPU figure per operation.

Only the shape of the output is asserted: a timing would fail on a loaded CI
machine and pass on an idle one, which tells nothing about caslb.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from perf import tools

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parents[2]


def _run_quick(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _column(output: str, row: str, header: str) -> str:
    """The cell of `row` under `header`, read from the table's header line."""
    lines = output.splitlines()
    head = next(line for line in lines if header in line and line.startswith("target"))
    line = next(line for line in lines if line.split()[:1] == [row])
    # cells are right-aligned under their header
    end = head.index(header) + len(header)
    return line[:end].split()[-1]


@pytest.mark.parametrize("bench", ["l4bench", "l7bench"])
def test_benches_do_not_build_lb_in_process(bench: str) -> None:
    source = (REPO / "perf" / f"{bench}.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+lb(\.|\s|$)", source, re.M)


def test_l4bench_quick_reports_caslb_cpu_per_connection() -> None:
    out = _run_quick("perf.l4bench")
    assert float(_column(out, "caslb", "CPU µs/conn")) > 0, out
    assert float(_column(out, "caslb", "conn/s")) > 0, out


def test_l7bench_quick_reports_caslb_cpu_per_request() -> None:
    # installing wrk (apt-get, as root) must not eat the bench's own timeout
    missing = tools.ensure("haproxy", "wrk")
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    out = _run_quick("perf.l7bench")
    assert float(_column(out, "caslb", "CPU µs/req")) > 0, out
    assert float(_column(out, "caslb", "req/s")) > 0, out
