"""L7 bench: small keep-alive requests through `caslb run`, direct, and HAProxy, with CPU cost.

    python -m perf.l7bench [--seconds S] [--connections N] [--workers W] [--profile]
                           [--access-log] [--quick]

Everything runs on 127.0.0.1 in separate processes:

- the backend: HAProxy answering every request itself (`http-request return`),
  so the backend is never the bottleneck;
- the proxy under test: `caslb run CONFIG [--workers W]` with a config this
  bench writes (one plain-HTTP frontend, a pool of one static server with an
  HTTP healthcheck.htm check every 2 s, outlier detection on as always at L7,
  access log off), or HAProxy `mode http` with keep-alive both ways and the
  same check;
- the load: `wrk` with one thread, N keep-alive connections for S seconds
  (requests per second, p50/p99), then one connection (p50/p99 latency).

Around each load the bench reads the proxy's CPU time (user + system, the
workers included) from /proc and prints it per request. It also prints the
ratios the targets in docs/benchmarks.md are stated in. With --profile it runs
caslb once more under cProfile, switched on for one throughput round only, and
prints per request where the time goes, by package and by function. `--quick`
measures caslb and HAProxy only, 2 s per measure,
for CI. It needs `haproxy` and `wrk`, installs them with apt-get when it can,
and says so when they are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from perf import caslbrun, pyprofile, tools
from perf.net import free_port, wait_listening
from perf.procfs import cpu_seconds

HOST = "127.0.0.1"
PATH = "/owa/bench"
CHECK = "/owa/healthcheck.htm"

BACKEND_CFG = """global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend backend
    bind {host}:{port}
    # caslb's healthcheck kind wants Exchange's body, "200 OK" first
    http-request return status 200 content-type text/html string "200 OK" if {{ path {check} }}
    http-request return status 200 content-type text/plain string "hello from the backend"
"""

PROXY_CFG = """global
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend front
    bind {host}:{port}
    default_backend servers
backend servers
    option httpchk GET {check}
    server s1 {host}:{target} check inter 2s
"""

# The generic model (docs/configuration.md): one frontend, one pool, no
# `protocol`, so nothing but the check differs from HAProxy's setup above.
CASLB_CFG = """# written by perf/l7bench; a short drain keeps the bench fast
grace = "1s"

[admin]
bind = "{host}:{admin}"

[frontends.bench]
bind = "{host}:{port}"
mode = "http"
default_pool = "bench"
max_connections = 100000
"""

CHECKED_POOL = """
[pools.{pool}]
servers = [{{ name = "{server}", address = "{host}:{target}" }}]

[pools.{pool}.check]
kind = "healthcheck"
path = "{check}"
tls = false
inter = "2s"
rise = 1
"""


def checked_pool(pool: str, server: str, target: int, check: str = CHECK) -> str:
    """A caslb pool of one static server on 127.0.0.1, checked at `check` every 2 s."""
    return CHECKED_POOL.format(pool=pool, server=server, host=HOST, target=target, check=check)


def caslb_config(port: int, target: int, admin: int) -> str:
    """The caslb TOML of the bench: `port` in front of the backend on `target`."""
    frontend = CASLB_CFG.format(host=HOST, port=port, admin=admin)
    return frontend + checked_pool("bench", "s1", target)


@contextlib.contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` for the duration of the block, then stop it."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        caslbrun.stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.contextmanager
def haproxy(config: str, port: int, workdir: Path) -> Iterator[int]:
    """HAProxy on `config` until the block ends; yields its pid."""
    path = workdir / f"haproxy-{port}.cfg"
    path.write_text(config)
    with process([tools.which("haproxy") or "haproxy", "-db", "-f", str(path)]) as proc:
        wait_listening(port, proc=proc)
        yield proc.pid


@contextlib.contextmanager
def caslb(
    port: int, target: int, workdir: Path, *, workers: int = 1, profile: Path | None = None,
    access_log: bool = False,
) -> Iterator[int]:
    """`caslb run` in front of `target` until the block ends; yields the pid to meter."""
    admin = free_port()
    cfg = workdir / f"caslb-{port}.toml"
    cfg.write_text(caslb_config(port, target, admin))
    with caslbrun.running(cfg, [port], admin, workers=workers, profile=profile,
                          access_log=access_log) as proc:
        yield proc.pid


@dataclass(frozen=True)
class Measure:
    """One wrk run's numbers, and the proxy's CPU per request over it."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float | None = None
    max_ms: float | None = None  # the slowest request wrk saw


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(
    port: int, connections: int, seconds: float, pid: int | None = None, *, close: bool = False
) -> Measure:
    """Run wrk against `port`; parse requests/s, p50, p99 and errors.

    With `pid`, also the CPU that process and its children spent per request;
    with `close`, every request asks for `Connection: close` (a new connection each).
    """
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        *(["-H", "Connection: close"] if close else []),
        f"http://{HOST}:{port}{PATH}",
    ]
    before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    spent = cpu_seconds(pid) - before if pid is not None else 0.0
    measure = read_wrk(out)
    if pid is None or not measure.requests:
        return measure
    return dataclasses.replace(measure, cpu_us=spent * 1e6 / measure.requests)


def read_wrk(out: str) -> Measure:
    """Requests/s, p50, p99, errors (socket errors and non-2xx/3xx) from wrk --latency output.

    Raises:
        RuntimeError: when the output lacks one of them (wrk failed).
    """
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # "Latency   avg   stdev   max   +/- stdev" of the thread stats
    slowest = re.search(r"^[ \t]+Latency[ \t]+\S+[ \t]+\S+[ \t]+(\S+)", out, re.M)
    if rps is None or p50 is None or p99 is None or total is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return Measure(
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        errors + (int(non2xx.group(1)) if non2xx else 0),
        int(total.group(1)),
        max_ms=_ms(slowest.group(1)) if slowest else None,
    )


def missing_tools() -> list[str]:
    """The tools this bench needs that are not installed."""
    return tools.ensure("haproxy", "wrk")


# -- the driver -----------------------------------------------------------------------


def _rounds(
    port: int, pid: int | None, connections: int, seconds: float, quick: bool
) -> tuple[Measure, Measure]:
    if not quick:
        wrk(port, connections, 1)  # warm up
    return wrk(port, connections, seconds, pid), wrk(port, 1, seconds)


def bench(
    seconds: float, connections: int, profile: bool, workers: int, quick: bool,
    access_log: bool = False,
) -> int:
    missing = missing_tools()
    if missing:
        print(
            f"l7bench: skipped, missing {', '.join(missing)} "
            f"(apt-get install -y {' '.join(missing)})"
        )
        return 0
    results: dict[str, tuple[Measure, Measure]] = {}
    with tempfile.TemporaryDirectory(prefix="l7bench-") as tmp:
        workdir = Path(tmp)
        backend = free_port()
        with haproxy(BACKEND_CFG.format(host=HOST, port=backend, check=CHECK), backend, workdir):
            if not quick:
                wrk(backend, connections, 1)  # warm up
                results["direct"] = _rounds(backend, None, connections, seconds, quick=True)
            port = free_port()
            with caslb(port, backend, workdir, workers=workers) as pid:
                results["caslb"] = _rounds(port, pid, connections, seconds, quick)
            if access_log:  # the same with one httplog line per request (to a file)
                port = free_port()
                with caslb(port, backend, workdir, workers=workers, access_log=True) as pid:
                    results["caslb+log"] = _rounds(port, pid, connections, seconds, quick)
            port = free_port()
            config = PROXY_CFG.format(host=HOST, port=port, target=backend, check=CHECK)
            with haproxy(config, port, workdir) as pid:
                results["haproxy"] = _rounds(port, pid, connections, seconds, quick)
            if profile:
                print_profile(workdir, backend, connections, seconds)
    report(results, connections, workers)
    return 0


def report(
    results: dict[str, tuple[Measure, Measure]], connections: int, workers: int = 1
) -> None:
    print(
        f"\nL7 small keep-alive requests (wrk, 1 thread): {connections} connections; "
        "latency at 1 connection; CPU of the proxy (and its workers) from /proc"
    )
    print(
        f"{'target':10} {'req/s':>10} {'CPU µs/req':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'1c p50':>8} {'1c p99':>8} {'errors':>7}"
    )
    for name, (load, single) in results.items():
        cpu = "-" if load.cpu_us is None else f"{load.cpu_us:.0f}"
        print(
            f"{name:10} {load.rps:10.0f} {cpu:>11} {load.p50_ms:8.3f} {load.p99_ms:8.3f} "
            f"{single.p50_ms:8.3f} {single.p99_ms:8.3f} {load.errors + single.errors:7d}"
        )
    caslb_, haproxy_ = results["caslb"], results["haproxy"]
    print(
        f"\ncaslb ({workers} process{'es' if workers > 1 else ''}) / HAProxy requests/s: "
        f"{caslb_[0].rps / haproxy_[0].rps:.2f}x "
        f"({'target >= 0.08x on one process' if workers == 1 else 'target >= 0.15x with 2'})"
    )
    if caslb_[0].cpu_us is not None and haproxy_[0].cpu_us:
        print(
            f"caslb CPU per request: {caslb_[0].cpu_us:.0f} µs (target <= 250 µs), "
            f"{caslb_[0].cpu_us / haproxy_[0].cpu_us:.1f}x HAProxy's {haproxy_[0].cpu_us:.0f} µs"
        )
    direct = results.get("direct")
    if direct is not None:
        added = caslb_[1].p50_ms - direct[1].p50_ms
        print(
            f"caslb added p50 latency at 1 connection: {added:.3f} ms (target <= 0.3 ms); "
            f"HAProxy adds {haproxy_[1].p50_ms - direct[1].p50_ms:.3f} ms"
        )


def print_profile(workdir: Path, backend: int, connections: int, seconds: float) -> None:
    """One throughput round against `caslb run` under cProfile: where a request's time goes.

    The profiler runs only for the round (caslbrun's SIGUSR1 and SIGUSR2), after
    a one-second warm-up.

    Prints own time and calls per request by package and the top 30 functions
    (perf.pyprofile).
    """
    out = workdir / "caslb.prof"
    port = free_port()
    with caslb(port, backend, workdir, profile=out) as pid:
        wrk(port, connections, 1)  # warm up: first connections, lazy imports
        os.kill(pid, signal.SIGUSR1)
        measure = wrk(port, connections, seconds)
        os.kill(pid, signal.SIGUSR2)
        for _ in range(100):  # the stats are written from caslb's signal handler
            if out.exists():
                break
            time.sleep(0.1)
    stats = pstats.Stats(str(out), stream=io.StringIO())
    requests = max(1, measure.requests)
    print(f"\ncaslb under cProfile: {measure.requests} requests in the profiled round")
    print(pyprofile.render(pyprofile.by_package(stats, requests), "by package:"))
    print(pyprofile.render(pyprofile.top_functions(stats, requests, 30), "top functions:"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.l7bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measure (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="for requests/s (default 16)")
    parser.add_argument("--profile", action="store_true", help="also profile caslb's hot path")
    parser.add_argument("--workers", type=int, default=1,
                        help="caslb run --workers W (default 1: no supervisor)")
    parser.add_argument("--access-log", action="store_true",
                        help="also measure caslb with its access log on (row caslb+log)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke: caslb and HAProxy only, 2 s per measure, no warm-up")
    args = parser.parse_args(argv)
    if not 0.5 <= args.seconds <= 8:
        parser.error(
            f"--seconds must be within 0.5..8 to keep the run under a minute, not {args.seconds!r}"
        )
    if not 1 <= args.connections <= 256:
        parser.error(f"--connections must be within 1..256, not {args.connections!r}")
    if not 1 <= args.workers <= 4:
        parser.error(f"--workers must be within 1..4, not {args.workers!r}")
    if args.profile and args.workers > 1:
        parser.error("--profile runs one caslb process; leave out --workers")
    seconds = 2.0 if args.quick else args.seconds
    return bench(seconds, args.connections, args.profile, args.workers, args.quick,
                 args.access_log)


if __name__ == "__main__":
    sys.exit(main())
