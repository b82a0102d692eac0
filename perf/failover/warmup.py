"""Warm-up latency of one failover run: `python -m perf.failover.warmup RESULTS.json`.

For each scenario, the median and 90th percentile of the new-connection
(`owa-new`: TCP connect, TLS handshake, one GET) and kept-alive (`owa-kept`)
requests that ended without error before the fault began, start to finish.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

PROTOCOLS = ("owa-new", "owa-kept")


def warm_up(path: Path) -> list[str]:
    """One line per scenario and protocol."""
    lines = []
    for scenario in json.loads(path.read_text())["scenarios"]:
        columns = scenario["request_columns"]
        at = {name: columns.index(name) for name in ("protocol", "started", "finished", "error")}
        fault = scenario["timeline"]["fault_at"]
        for protocol in PROTOCOLS:
            took = sorted(
                r[at["finished"]] - r[at["started"]] for r in scenario["requests"]
                if r[at["protocol"]] == protocol and r[at["finished"]] < fault
                and r[at["error"]] is None
            )
            if not took:
                continue
            p90 = took[min(len(took) - 1, int(0.9 * len(took)))]
            lines.append(f"{scenario['design']:<14} {scenario['fault']:<8} {protocol:<9} "
                         f"n={len(took):<5} p50 {statistics.median(took) * 1e3:8.1f} ms  "
                         f"p90 {p90 * 1e3:8.1f} ms")
    return lines


if __name__ == "__main__":
    print("\n".join(warm_up(Path(sys.argv[1]))))
