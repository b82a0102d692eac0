"""`python -m perf matrix --quick` end to end: every row measured, nothing left running.

caslb and HAProxy in front of the nginx origin, wrk and iperf3 as clients, one
second a row. Only the shape is asserted (every row there, every figure
positive), never a timing: a loaded machine would make any timing fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perf.matrix.runner import missing_tools

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parents[2]
L7_KEYS = {f"l7 {p} c{c} 100B plain ka" for p in ("caslb", "haproxy") for c in (1, 16)} | {
    "l7 direct c1 100B plain ka"}
L4_KEYS = {"l4 caslb P1", "l4 haproxy P1", "l4 haproxy-splice P1"}
IDLE_KEYS = {f"idle {p} {layer}" for p in ("caslb", "haproxy") for layer in ("l4", "l7")}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_quick_matrix_measures_every_row_and_stops_every_process(tmp_path: Path) -> None:
    missing = missing_tools()  # installs with apt-get first, outside the run's timeout
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    out = tmp_path / "matrix"
    done = subprocess.run(
        [sys.executable, "-m", "perf", "matrix", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads((out / "results.json").read_text())
    assert document["failed"] == {}, document["failed"]

    l7 = {r["key"]: r for r in document["l7"]}
    assert set(l7) == L7_KEYS
    for row in l7.values():
        for field in ("throughput", "cpu_per_op", "p50_ms", "p99_ms", "max_ms", "ratio", "load"):
            assert row[field] > 0, (row["key"], field, row)
        assert row["errors"] == 0, row
    assert l7["l7 haproxy c16 100B plain ka"]["ratio"] == 1.0

    l4 = {r["key"]: r for r in document["l4"]}
    assert set(l4) == L4_KEYS
    for row in l4.values():
        assert row["throughput"] > 0 and row["cpu_per_op"] > 0 and row["ratio"] > 0, row

    idle = {r["key"]: r for r in document["idle"]}
    assert set(idle) == IDLE_KEYS
    for row in idle.values():
        assert [p["connections"] for p in row["points"]] == [100, 200], row
        assert all(p["kib_per_connection"] > 0 for p in row["points"]), row

    table = (out / "results.md").read_text()
    for key in L7_KEYS:
        _, proxy, conns, body, *_ = key.split()
        assert f"| {body} | {conns[1:]} | {proxy} |" in table, table
    assert (out / "l7-100B-plain-keepalive.svg").read_text().startswith("<svg")
    added = next(line for line in table.splitlines() if "added p50 at 1 connection" in line)
    caslb_added = float(added.split("|")[2])
    direct = l7["l7 direct c1 100B plain ka"]["p50_ms"]
    assert caslb_added == pytest.approx(l7["l7 caslb c1 100B plain ka"]["p50_ms"] - direct,
                                        abs=0.001), added

    assert document["pids"], "no process recorded"
    assert not [p for p in document["pids"] if _alive(p)], "processes left running"
