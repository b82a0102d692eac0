"""Walk a Plan: start the origin, then each proxy in turn, run its rows, stop it.

Rows that fail (a proxy that does not start, a client that errors) are recorded
with the reason and the run goes on; every process is stopped when its block
ends, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from casfarm.certs import FarmCA

from perf import tools
from perf.failover.procs import REPO_ROOT
from perf.idle import raise_nofile
from perf.matrix import clients, idlemem, procs
from perf.matrix.configs import FDS, MAXCONN
from perf.matrix.plan import BASELINE, BODIES, L4Row, L7Row, Plan

Say = Callable[[str], None]
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


def missing_tools() -> list[str]:
    """What the matrix needs and could not find or install."""
    missing = tools.ensure("haproxy", "wrk", "nginx", "iperf3", "taskset")
    if not tools.ensure_file(NGINX_STREAM, "libnginx-mod-stream"):
        missing.append("libnginx-mod-stream")
    return missing


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _describe(plan: Plan) -> dict[str, Any]:
    commit = _version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "seconds": plan.seconds,
        "cpus": os.cpu_count(),
        "nofile": FDS,
        "pinning": {"proxy": procs.PROXY_PIN, "clients and origin": procs.CLIENT_PIN,
                    **{k: v for k, v in procs.CORES.items()}},
        "versions": {
            "haproxy": _version([tools.which("haproxy") or "haproxy", "-v"]),
            "nginx": _version([tools.which("nginx") or "nginx", "-v"]),
            "wrk": _version(["wrk", "--version"]),
            "iperf3": _version(["iperf3", "--version"]),
        },
    }


def _row_fields(row: L7Row | L4Row) -> dict[str, Any]:
    return dataclasses.asdict(row)


class Run:
    """The results of one run as it goes: rows measured, rows failed."""

    def __init__(self, plan: Plan, say: Say) -> None:
        self.plan, self.say = plan, say
        self.l7: list[dict[str, Any]] = []
        self.l4: list[dict[str, Any]] = []
        self.idle: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}

    def row(self, row: L7Row | L4Row, measure: Callable[[], clients.Outcome]) -> None:
        try:
            outcome = measure()
        except (RuntimeError, OSError, ValueError, KeyError,
                subprocess.TimeoutExpired) as exc:
            self.failed[row.key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.say(f"  {row.key}: failed ({self.failed[row.key]})")
            return
        record = {**_row_fields(row), **dataclasses.asdict(outcome)}
        (self.l7 if isinstance(row, L7Row) else self.l4).append(record)
        self.say(f"  {row.key}: {outcome.throughput:.2f} at {outcome.cpu_per_op:.0f} "
                 f"{outcome.cpu_unit} (load {outcome.load:.1f})")

    def fail_all(self, rows: list[L7Row] | list[L4Row], why: Exception) -> None:
        for row in rows:
            self.failed[row.key] = f"proxy did not start: {str(why)[:300]}"
        self.say(f"  {len(rows)} rows failed: {str(why)[:300]}")


def _proxy_rows(run: Run, proxy: str, origin: procs.Origin, pem: Path, workdir: Path) -> None:
    plan = run.plan
    l7 = [r for r in plan.l7 if r.proxy == proxy]
    l4 = [r for r in plan.l4 if r.proxy == proxy]
    if l7:
        run.say(f"{proxy}: {len(l7)} L7 rows")
        try:
            with procs.l7_proxy(proxy, origin, pem, workdir) as p:
                if plan.seconds >= 2:  # warm-up: caches, pools, the first handshakes
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        clients.run_l7(dataclasses.replace(l7[0], connections=16), p, 1)
                for row in l7:
                    run.row(row, lambda row=row: clients.run_l7(row, p, plan.seconds))
        except RuntimeError as exc:
            run.fail_all([r for r in l7 if r.key not in {x["key"] for x in run.l7}], exc)
    if l4:
        run.say(f"{proxy}: {len(l4)} L4 rows")
        try:
            with procs.l4_proxy(proxy, origin, workdir) as p:
                for l4row in l4:
                    run.row(l4row, lambda r=l4row: clients.run_l4(r, p, plan.seconds))
        except RuntimeError as exc:
            run.fail_all([r for r in l4 if r.key not in {x["key"] for x in run.l4}], exc)


def idle_counts(wanted: tuple[int, ...]) -> tuple[int, ...]:
    """`wanted`, the top ones lowered to what the proxies' descriptor limit holds."""
    top = MAXCONN - idlemem.WARMUP - 50
    return tuple(sorted({min(n, top) for n in wanted}))


def _idle_rows(run: Run, proxy: str, origin: procs.Origin, pem: Path, workdir: Path) -> None:
    counts = idle_counts(run.plan.idle_counts)
    for layer in run.plan.idle_layers:
        key = f"idle {proxy} {layer}"
        try:
            if layer == "l4":
                with procs.l4_proxy(proxy, origin, workdir) as p:
                    points = idlemem.measure(p, p.ports.hold,  # type: ignore[union-attr]
                                             False, counts)
            else:
                with procs.l7_proxy(proxy, origin, pem, workdir) as p:
                    ports = p.ports
                    port = ports.tls if layer == "l7-tls" else ports.plain  # type: ignore[union-attr]
                    points = idlemem.measure(p, port, layer == "l7-tls", counts)
        except (RuntimeError, OSError) as exc:
            run.failed[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            run.say(f"  {key}: failed ({run.failed[key]})")
            continue
        run.idle.append({"key": key, "proxy": proxy, "layer": layer, "load": os.getloadavg()[0],
                         "points": [dataclasses.asdict(pt) for pt in points]})
        last = points[-1]
        run.say(f"  {key}: {last.kib_per_connection:.2f} KiB each at {last.connections}")


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's throughput over HAProxy's in the same row of the same run."""
    baseline = {r["key"].replace(f" {BASELINE} ", " * "): r["throughput"]
                for r in rows if r["proxy"] == BASELINE}
    for r in rows:
        base = baseline.get(r["key"].replace(f" {r['proxy']} ", " * "))
        r["ratio"] = r["throughput"] / base if base else None


def run(plan: Plan, workdir: Path, say: Say) -> dict[str, Any]:
    """Measure every row of `plan`; the results document (see report.py)."""
    raise_nofile(FDS)
    workdir.chmod(0o755)  # nginx's workers run as www-data and read the bodies from here
    document = _describe(plan)
    run_ = Run(plan, say)
    ca = FarmCA(workdir / "certs")
    pem = ca.server_tls("bench", "bench.lab.local", "lab.local", "127.0.0.1").cert_path
    with _sigterm_as_interrupt(), procs.origin(workdir, BODIES) as origin:
        for proxy in plan.proxies:
            _proxy_rows(run_, proxy, origin, pem, workdir)
        for proxy in plan.idle_proxies:
            say(f"{proxy}: idle memory, {', '.join(plan.idle_layers)}")
            _idle_rows(run_, proxy, origin, pem, workdir)
    add_ratios(run_.l7)
    add_ratios(run_.l4)
    document.update(l7=run_.l7, l4=run_.l4, idle=run_.idle, failed=run_.failed,
                    pids=list(procs.STARTED), finished=datetime.datetime.now(datetime.UTC)
                    .isoformat(timespec="seconds"))
    if "mitmproxy" in plan.proxies:
        document["versions"]["mitmproxy"] = _version([str(procs.peer.mitmdump()), "--version"])
    return document
