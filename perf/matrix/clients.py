"""The load of one row, wrk or iperf3, metered: the proxy's CPU per operation and the load average.

A row's CPU is read per process of the proxy from /proc (utime + stime) just
before the client starts and just after it ends, so `caslb run --workers 2`
shows its supervisor and each worker, nginx its master and worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass

from perf.l7bench import read_wrk
from perf.matrix.configs import HOST, body_path
from perf.matrix.plan import L4Row, L7Row
from perf.matrix.procs import CLIENT_PIN, Proxy, pin
from perf.procfs import own_cpu_seconds, process_tree


@dataclass
class Outcome:
    """One row's figures. `ops` are requests (L7) or GB carried (L4)."""

    key: str
    throughput: float  # requests/s or Gbit/s
    ops: float
    cpu_per_op: float  # every process of the proxy together, in cpu_unit
    cpu_by_process: list[float]  # the same per process, parent first
    load: float  # the 1-minute load average at the row's end
    cpu_unit: str = "µs/req"
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    ratio: float | None = None  # throughput over HAProxy's in the same row


class CpuWindow:
    """CPU seconds each process of a proxy spends from construction to `spent()`."""

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.before = [own_cpu_seconds(p) for p in self.pids]

    def spent(self) -> list[float]:
        """Seconds per process since the window opened (0 for one that has gone)."""
        out = []
        for pid, before in zip(self.pids, self.before, strict=True):
            try:
                out.append(own_cpu_seconds(pid) - before)
            except OSError:
                out.append(0.0)
        return out


def _per_op(spent: list[float], ops: float, scale: float) -> tuple[float, list[float]]:
    each = [s * scale / ops if ops else 0.0 for s in spent]
    return sum(each), each


def wrk_argv(row: L7Row, proxy: Proxy, seconds: float) -> list[str]:
    """wrk, pinned beside the origin: one thread, latency distribution, a 10 s timeout."""
    ports = proxy.ports
    port = ports.tls if row.tls else ports.plain  # type: ignore[union-attr]
    scheme = "https" if row.tls else "http"
    close = [] if row.keepalive else ["-H", "Connection: close"]
    return [
        *pin(CLIENT_PIN), "wrk", "-t1", f"-c{row.connections}", f"-d{max(1, round(seconds))}s",
        "--latency", "--timeout", "10s", *close, f"{scheme}://{HOST}:{port}{body_path(row.body)}",
    ]


def run_l7(row: L7Row, proxy: Proxy, seconds: float) -> Outcome:
    """One wrk round through `proxy`; CPU per request in µs."""
    argv = wrk_argv(row, proxy, seconds)
    window = CpuWindow(proxy.pid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    spent = window.spent()
    measure = read_wrk(done.stdout + done.stderr)
    total, each = _per_op(spent, measure.requests, 1e6)
    return Outcome(row.key, measure.rps, measure.requests, total, each, os.getloadavg()[0],
                   p50_ms=measure.p50_ms, p99_ms=measure.p99_ms, max_ms=measure.max_ms,
                   errors=measure.errors)


def iperf3_argv(row: L4Row, proxy: Proxy, seconds: float) -> list[str]:
    """iperf3 client to the proxy's bulk frontend, JSON out."""
    port = proxy.ports.bulk  # type: ignore[union-attr]
    return [*pin(CLIENT_PIN), "iperf3", "-c", HOST, "-p", str(port),
            "-t", str(max(1, round(seconds))), "-P", str(row.streams), "-J"]


def run_l4(row: L4Row, proxy: Proxy, seconds: float) -> Outcome:
    """One iperf3 round through `proxy`; Gbit/s received and CPU ms per GB carried."""
    argv = iperf3_argv(row, proxy, seconds)
    for attempt in range(3):
        window = CpuWindow(proxy.pid)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                              check=False)
        spent = window.spent()
        report = json.loads(done.stdout or "{}")
        if "error" not in report and done.returncode == 0:
            break
        # the server finishing the previous test answers "busy" for a moment
        time.sleep(1 + attempt)
    else:
        raise RuntimeError(f"iperf3 failed: {report.get('error', done.stderr[-500:])}")
    received = report["end"]["sum_received"]
    gigabytes = received["bytes"] / 1e9
    total, each = _per_op(spent, gigabytes, 1e3)  # ms per GB
    return Outcome(row.key, received["bits_per_second"] / 1e9, gigabytes, total, each,
                   os.getloadavg()[0], cpu_unit="ms/GB")
