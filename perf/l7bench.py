"""L7 bench: small keep-alive requests through caslb's HTTP frontend, direct, and HAProxy.

    python -m perf.l7bench [--seconds S] [--connections N] [--workers W] [--profile]

Everything runs on 127.0.0.1 in separate processes:

- the backend: HAProxy answering every request itself (`http-request return`),
  so the backend is never the bottleneck;
- the proxy under test: caslb's `HttpFrontend` (plain HTTP, one pool of one
  server, outlier detection on, access log off), or HAProxy `mode http` with
  keep-alive both ways. With --workers W, W caslb processes share the port
  through SO_REUSEPORT, as the workers of `caslb run --workers W` do;
- the load: `wrk` with one thread, N keep-alive connections for S seconds
  (requests per second), then one connection (p50/p99 latency).

It prints each target's numbers and the ratios the targets in
docs/benchmarks.md are stated in. With --profile it also runs caslb under cProfile for one
throughput round and prints where the time goes. It needs `haproxy` and
`wrk` (apt-get install -y haproxy wrk) and says so when they are missing.
Total time stays under a minute with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from perf import tools
from perf.net import free_port, wait_listening

HOST = "127.0.0.1"
PATH = "/owa/bench"

BACKEND_CFG = """global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend backend
    bind {host}:{port}
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
    server s1 {host}:{target}
"""


@contextlib.contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` for the duration of the block, then stop it."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.contextmanager
def haproxy(config: str, port: int, workdir: Path) -> Iterator[None]:
    path = workdir / f"haproxy-{port}.cfg"
    path.write_text(config)
    with process([tools.which("haproxy") or "haproxy", "-db", "-f", str(path)]):
        wait_listening(port)
        yield


@contextlib.contextmanager
def caslb(
    port: int, target: int, *, run_for: float | None = None, profile: Path | None = None,
    workers: int = 1,
) -> Iterator[subprocess.Popen[bytes]]:
    argv = [
        sys.executable,
        "-m",
        "perf.l7bench",
        "--role",
        "caslb",
        "--port",
        str(port),
        "--target",
        str(target),
    ]
    if run_for is not None:
        argv += ["--run-for", str(run_for)]
    if profile is not None:
        argv += ["--profile-out", str(profile)]
    if workers == 1:
        with process(argv) as proc:
            wait_listening(port)
            yield proc
        return
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(process([*argv, "--reuse-port"])) for _ in range(workers)]
        wait_listening(port)
        time.sleep(1.0)  # the others bind too: a connection made before sticks to the first
        yield procs[0]


@dataclass(frozen=True)
class Measure:
    """One wrk run's numbers."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(port: int, connections: int, seconds: float) -> Measure:
    """Run wrk against `port`; parse requests/s, p50, p99 and errors."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        f"http://{HOST}:{port}{PATH}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return Measure(
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        errors + (int(non2xx.group(1)) if non2xx else 0),
    )


def missing_tools() -> list[str]:
    """The tools this bench needs that are not installed."""
    return tools.ensure("haproxy", "wrk")


# -- the caslb role (a child process) -------------------------------------------------


class _StaticMember:
    def __init__(self, port: int) -> None:
        self.name, self.host, self.port, self.fqdn = "s1", HOST, port, "localhost"
        self.weight, self.active, self.total, self.eligible = 1, 0, 0, True


class _StaticLease:
    def __init__(self, member: _StaticMember) -> None:
        import trio

        self.member = member
        self.scope = trio.CancelScope()


class _StaticPool:
    """One server, always eligible: the bench measures the proxy, not the pool."""

    def __init__(self, port: int) -> None:
        self.name = "bench"
        self.members = (_StaticMember(port),)

    def pick(
        self, now: float, *, client: str | None = None, exclude: Collection[str] = ()
    ) -> _StaticMember | None:
        member = self.members[0]
        return None if member.name in exclude else member

    @contextlib.contextmanager
    def lease(self, member: _StaticMember) -> Iterator[_StaticLease]:
        member.active += 1
        member.total += 1
        try:
            yield _StaticLease(member)
        finally:
            member.active -= 1


def role_caslb(
    port: int, target: int, run_for: float | None, profile_out: Path | None,
    reuse_port: bool = False,
) -> None:
    """Serve caslb's L7 frontend on `port` in front of `target` until killed or `run_for`."""
    import trio

    from lb.app import open_reuse_port_listener
    from lb.l7.frontend import HttpFrontend
    from lb.l7.routing import RouteTable
    from lb.l7.settings import HttpFrontendSettings
    from lb.l7.upstream import UpstreamSettings
    from probes.outlier import OutlierSettings

    settings = HttpFrontendSettings(name="bench", routes=RouteTable(default_pool="bench"))
    frontend = HttpFrontend(
        settings,
        {"bench": _StaticPool(target)},  # type: ignore[dict-item]
        upstream=UpstreamSettings(connect_timeout=2),
        outlier=OutlierSettings(),
    )

    async def main() -> None:
        if reuse_port:
            listeners = [await open_reuse_port_listener(HOST, port)]
        else:
            listeners = await trio.open_tcp_listeners(port, host=HOST)
        with trio.move_on_after(math.inf if run_for is None else run_for):
            await frontend.serve(listeners)

    profiler = cProfile.Profile() if profile_out is not None else None
    if profiler is not None:
        profiler.enable()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    if profiler is not None and profile_out is not None:
        profiler.disable()
        profiler.dump_stats(str(profile_out))


# -- the driver -----------------------------------------------------------------------


def bench(seconds: float, connections: int, profile: bool, workers: int = 1) -> int:
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
        with haproxy(BACKEND_CFG.format(host=HOST, port=backend), backend, workdir):
            wrk(backend, connections, 1)  # warm up
            results["direct"] = (wrk(backend, connections, seconds), wrk(backend, 1, seconds))
            port = free_port()
            with caslb(port, backend, workers=workers):
                wrk(port, connections, 1)
                results["caslb"] = (wrk(port, connections, seconds), wrk(port, 1, seconds))
            port = free_port()
            with haproxy(PROXY_CFG.format(host=HOST, port=port, target=backend), port, workdir):
                wrk(port, connections, 1)
                results["haproxy"] = (wrk(port, connections, seconds), wrk(port, 1, seconds))
            if profile:
                print_profile(workdir, backend, connections, seconds)
    report(results, connections, workers)
    return 0


def report(
    results: dict[str, tuple[Measure, Measure]], connections: int, workers: int = 1
) -> None:
    print(
        f"\nL7 small keep-alive requests (wrk, 1 thread): {connections} connections; "
        "latency at 1 connection"
    )
    print(
        f"{'target':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'1c p50':>8} "
        f"{'1c p99':>8} {'errors':>7}"
    )
    for name, (load, single) in results.items():
        print(
            f"{name:10} {load.rps:10.0f} {load.p50_ms:8.3f} {load.p99_ms:8.3f} "
            f"{single.p50_ms:8.3f} {single.p99_ms:8.3f} {load.errors + single.errors:7d}"
        )
    caslb, haproxy_, direct = results["caslb"], results["haproxy"], results["direct"]
    print(
        f"\ncaslb ({workers} process{'es' if workers > 1 else ''}) / HAProxy requests/s: "
        f"{caslb[0].rps / haproxy_[0].rps:.2f}x "
        f"({'target >= 0.08x on one process' if workers == 1 else 'target >= 0.15x with 2'})"
    )
    added = caslb[1].p50_ms - direct[1].p50_ms
    print(
        f"caslb added p50 latency at 1 connection: {added:.3f} ms (target <= 0.3 ms); "
        f"HAProxy adds {haproxy_[1].p50_ms - direct[1].p50_ms:.3f} ms"
    )


def print_profile(workdir: Path, backend: int, connections: int, seconds: float) -> None:
    out = workdir / "caslb.prof"
    port = free_port()
    with caslb(port, backend, run_for=seconds + 3, profile=out) as proc:
        wrk(port, connections, seconds)
        proc.wait(seconds + 30)
    stream = io.StringIO()
    stats = pstats.Stats(str(out), stream=stream)
    stats.sort_stats("tottime").print_stats(18)
    print("\ncaslb hot path (cProfile, by own time):")
    print("\n".join(line for line in stream.getvalue().splitlines() if line.strip())[-2600:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.l7bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measure (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="for requests/s (default 16)")
    parser.add_argument("--profile", action="store_true", help="also profile caslb's hot path")
    parser.add_argument("--workers", type=int, default=1,
                        help="caslb processes sharing the port (default 1)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--role", choices=["caslb"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-for", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "caslb":
        role_caslb(args.port, args.target, args.run_for, args.profile_out, args.reuse_port)
        return 0
    if not 0.5 <= args.seconds <= 8:
        parser.error(
            f"--seconds must be within 0.5..8 to keep the run under a minute, not {args.seconds!r}"
        )
    if not 1 <= args.connections <= 256:
        parser.error(f"--connections must be within 1..256, not {args.connections!r}")
    if not 1 <= args.workers <= 4:
        parser.error(f"--workers must be within 1..4, not {args.workers!r}")
    return bench(args.seconds, args.connections, args.profile, args.workers)


if __name__ == "__main__":
    sys.exit(main())
