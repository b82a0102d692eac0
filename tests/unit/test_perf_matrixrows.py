"""perf.matrixrows' pure parts: proxies from trees, connection counts, the rotation, the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf import matrixrows
from perf.matrix.clients import Outcome


def test_a_caslb_entry_may_name_the_tree_it_runs_from(tmp_path: Path) -> None:
    got = matrixrows.parse_proxies(f"caslb-old={tmp_path},caslb,haproxy")
    assert got == [("caslb-old", tmp_path.resolve()), ("caslb", None), ("haproxy", None)]
    with pytest.raises(ValueError, match="only caslb"):
        matrixrows.parse_proxies(f"haproxy={tmp_path}")
    with pytest.raises(ValueError, match="twice"):
        matrixrows.parse_proxies("caslb,caslb")


def test_conns_gives_a_row_per_count() -> None:
    rows = matrixrows.plan_rows("plainka,tlska", "64,256")
    assert [(r.tls, r.connections) for r in rows] == [
        (False, 64), (False, 256), (True, 64), (True, 256)]
    assert [r.connections for r in matrixrows.plan_rows("bulk", "")] == [16]


def test_each_round_starts_with_the_next_proxy() -> None:
    names = ["a", "b", "c"]
    assert [matrixrows.rotated(names, i)[0] for i in range(4)] == ["a", "b", "c", "a"]


def _outcome(key: str, cpu: float, p50: float, p99: float, slowest: float) -> Outcome:
    return Outcome(key, 1000.0, 4000.0, cpu, [cpu], 1.0, p50_ms=p50, p99_ms=p99,
                   max_ms=slowest)


def test_summary_gives_median_range_and_the_slowest() -> None:
    lines = matrixrows.summary([
        _outcome("l7 caslb c64", 300, 10, 40, 90), _outcome("l7 caslb c64", 200, 12, 50, 120),
        _outcome("l7 caslb c64", 250, 11, 45, 80), _outcome("l7 haproxy c64", 20, 1, 2, 5),
    ])
    caslb = next(line for line in lines if line.startswith("l7 caslb"))
    assert "250 (200–300)" in caslb and " 11.00 " in caslb and " 45.00 " in caslb
    assert caslb.endswith("120.0")
    assert len(lines) == 3  # the heading, a line per row key


def test_gc_share_of_the_round() -> None:
    text = matrixrows.gc_share({"collections": [90, 8, 1], "seconds": [0.2, 0.04, 0.01],
                                "collected": [0, 0, 3]}, 5.0)
    assert text == "gc 5.0% (90/8/1 collections, ms 200.0/40.0/10.0, objects freed 0/0/3)"
