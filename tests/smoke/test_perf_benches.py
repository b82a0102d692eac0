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


def _run_quick(module: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _column(output: str, row: str, header: str) -> str:
    """The cell of `row` under `header`, read from the table's header line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if header in line and line.startswith("target"))
    head = lines[start]
    line = next(line for line in lines[start:] if line.split()[:1] == [row])
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


def test_l7bench_quick_reports_cpu_per_request_and_profiles_the_round() -> None:
    """The quick bench's table, then the profiled round: it holds requests and no
    start-up, the packages a request runs through have time and calls per request,
    nothing is charged to the imports, and h11 (the health checks' parser, no longer
    the data path's) is nearly absent."""
    # installing wrk (apt-get, as root) must not eat the bench's own timeout
    missing = tools.ensure("haproxy", "wrk")
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    out = _run_quick("perf.l7bench", "--profile")
    assert float(_column(out, "caslb", "CPU µs/req")) > 0, out
    assert float(_column(out, "caslb", "req/s")) > 0, out
    rounds = re.search(r"caslb under cProfile: (\d+) requests in the profiled round", out)
    assert rounds is not None and int(rounds.group(1)) > 0, out
    table = out[out.index("by package:"):out.index("top functions:")]
    rows = {line.split()[-1]: line.split() for line in table.splitlines()[2:] if line.strip()}
    for package in ("lb", "trio"):
        assert float(rows[package][0]) > 0 and float(rows[package][1]) > 1, table
    assert "h11" not in rows or float(rows["h11"][1]) < 1, table
    # start-up (imports, compiles) would show in the standard library's share
    assert float(rows["other"][2].rstrip("%")) < 5, table


def test_reencrypt_reports_each_proxys_cpu_per_reencrypted_connection() -> None:
    missing = tools.ensure("haproxy", "wrk")
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    done = subprocess.run(
        [sys.executable, "-m", "perf.reencrypt", "--seconds", "1", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.split()[:1] in (["caslb"], ["haproxy"])}
    for proxy in ("caslb", "haproxy"):
        # req/s, p50 ms, CPU µs per request: every new connection re-encrypted and served
        assert all(float(cell) > 0 for cell in rows[proxy][1:4]), done.stdout
        assert rows[proxy][4] == "0", done.stdout  # no 503: the re-encryption worked
