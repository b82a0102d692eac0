"""A few matrix rows, repeated and alternated through chosen proxies, with optional probes.

    python -m perf.matrixrows PROXIES SECONDS [SPY_PREFIX]
    ROWS=plainka,tlska ROUNDS=3 CONNS=64,256 GC=1 PROFILE=DIR NATIVE=1 (environment)

The same origin, configs, pinning and CPU bookkeeping as `python -m perf matrix`,
for measuring one change before and after without the whole matrix.

PROXIES is a comma list; an entry `caslb-NAME=TREE` is caslb imported from the
source tree TREE (a worktree or a `git archive` of the code before a change),
so `caslb-old=/tmp/old,caslb,haproxy` measures before, after and HAProxy in
one run. Every proxy is started first and the rounds alternate between them
(each round in a rotated order), so each sees the same machine: on a shared
machine, CPU per request moves by a third from one minute to the next.

ROWS picks rows (default `tlsclose,bulk`), CONNS replaces their connection
counts (a row per count), ROUNDS is how many times each runs. GC=1 times
caslb's cyclic collector in every round (gc.callbacks, perf.caslbrun) and
prints its share of the round's CPU; PROFILE=DIR runs caslb under cProfile
for the first round of each row and prints where a request's time goes
(perf.pyprofile). With SPY_PREFIX, the first round of each row through caslb
is sampled by py-spy (200 Hz, raw stacks, NATIVE=1 for C frames) into
SPY_PREFIX-<proxy>-c<conns>-<body>-<plain|tls>.txt. The end is a summary per
row: the median and range of CPU per request, and p50, p99 and the slowest
request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from casfarm.certs import FarmCA

from perf import pyprofile
from perf.idle import raise_nofile
from perf.matrix import clients, procs
from perf.matrix.configs import FDS
from perf.matrix.plan import BODIES, L7Row

ROWS = {
    "tlsclose": L7Row("?", 64, "100B", True, False),
    "plainclose": L7Row("?", 64, "100B", False, False),
    "plainka": L7Row("?", 64, "100B", False, True),
    "tlska": L7Row("?", 64, "100B", True, True),
    "bulk": L7Row("?", 16, "1MiB", False, True),
    "tlsbulk": L7Row("?", 16, "1MiB", True, True),
}

T = TypeVar("T")


def parse_proxies(text: str) -> list[tuple[str, Path | None]]:
    """`caslb-old=/tmp/old,caslb,haproxy` → [(name, tree or None), ...]."""
    out: list[tuple[str, Path | None]] = []
    for item in text.split(","):
        name, _, tree = item.partition("=")
        if tree and not name.startswith("caslb"):
            raise ValueError(f"{item}: only caslb runs from a tree")
        out.append((name, Path(tree).resolve() if tree else None))
    if len({name for name, _ in out}) != len(out):
        raise ValueError(f"{text}: a proxy named twice")
    return out


def plan_rows(names: str, conns: str) -> list[L7Row]:
    """The rows named in ROWS, once per connection count in CONNS (or as defined)."""
    rows = [ROWS[k] for k in names.split(",")]
    if not conns:
        return rows
    counts = [int(c) for c in conns.split(",")]
    return [dataclasses.replace(r, connections=c) for r in rows for c in counts]


def rotated(items: list[str], turn: int) -> list[str]:
    """`items` starting at `turn` (mod its length): round i runs proxy i first."""
    k = turn % len(items)
    return items[k:] + items[:k]


def summary(outcomes: list[clients.Outcome]) -> list[str]:
    """One line per row key: CPU per request (median, range), p50, p99, the slowest."""
    by_key: dict[str, list[clients.Outcome]] = defaultdict(list)
    for o in outcomes:
        by_key[o.key].append(o)
    lines = [f"{'row':<32} {'n':>2} {'µs/req median (range)':>24} {'p50 ms':>7} "
             f"{'p99 ms':>7} {'max ms':>7}"]
    for key, runs in by_key.items():
        cpu = [o.cpu_per_op for o in runs]
        p50 = statistics.median(o.p50_ms or 0.0 for o in runs)
        p99 = statistics.median(o.p99_ms or 0.0 for o in runs)
        slowest = max(o.max_ms or 0.0 for o in runs)
        span = f"{statistics.median(cpu):.0f} ({min(cpu):.0f}–{max(cpu):.0f})"
        lines.append(f"{key:<32} {len(runs):>2} {span:>24} {p50:>7.2f} {p99:>7.2f} "
                     f"{slowest:>7.1f}")
    return lines


def gc_share(stats: dict[str, list[float]], cpu_seconds: float) -> str:
    """`gc 0.4% (70/6/0 collections, ms 3.1/1.2/0.0)` from a perf.caslbrun gc-timed
    dump: the share of the round's CPU, then per generation the collections and
    the milliseconds they took and the unreachable objects they freed."""
    spent = sum(stats["seconds"])
    counts = "/".join(str(n) for n in stats["collections"])
    ms = "/".join(f"{s * 1e3:.1f}" for s in stats["seconds"])
    share = spent / cpu_seconds if cpu_seconds else 0.0
    freed = "/".join(str(n) for n in stats.get("collected", []))
    return f"gc {share:.1%} ({counts} collections, ms {ms}, objects freed {freed})"


def _spy(prefix: str, row: L7Row, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    out = (f"{prefix}-{row.proxy}-c{row.connections}-{row.body}-"
           f"{'tls' if row.tls else 'plain'}.txt")
    mode = ["--native"] if os.environ.get("NATIVE") else ["--nonblocking"]
    argv = [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "200", "-f", "raw",
            "-o", out, "-d", str(int(seconds)), "-p", str(pid), *mode]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


def _signalled(pid: int, out: Path, run: Callable[[], T]) -> T:
    """SIGUSR1 before `run`, SIGUSR2 after, then wait for caslb to write `out`."""
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    os.kill(pid, signal.SIGUSR1)
    result = run()
    os.kill(pid, signal.SIGUSR2)
    for _ in range(100):  # written from caslb's signal handler
        if out.exists():
            break
        time.sleep(0.1)
    return result


@dataclasses.dataclass
class _Probes:
    """What each caslb is started with, and reads after a round."""

    workdir: Path
    gc: bool
    profile: Path | None
    spy: str

    def files(self, name: str) -> tuple[Path | None, Path | None]:
        gc = self.workdir / f"{name}.gc.json" if self.gc else None
        prof = self.profile / f"{name}.prof" if self.profile else None
        return gc, prof


def one_round(row: L7Row, proxy: procs.Proxy, seconds: float, probes: _Probes,
              first: bool) -> clients.Outcome:
    """One wrk round through `proxy`, with the probes this run asked for; prints a line."""
    is_caslb = proxy.name.startswith("caslb")
    gc_file, prof_file = probes.files(proxy.name) if is_caslb else (None, None)
    spy = (_spy(probes.spy, row, proxy.pid, seconds)
           if probes.spy and is_caslb and first else None)
    signalled = gc_file if gc_file else (prof_file if prof_file and first else None)
    o = (_signalled(proxy.pid, signalled, lambda: clients.run_l7(row, proxy, seconds))
         if signalled is not None else clients.run_l7(row, proxy, seconds))
    if spy is not None:
        spy.wait()
    line = (f"{row.key}: {o.throughput:.0f} req/s, {o.cpu_per_op:.0f} µs/req, "
            f"p50/p99/max {o.p50_ms or 0:.2f}/{o.p99_ms or 0:.2f}/{o.max_ms or 0:.1f} ms, "
            f"errors {o.errors}, load {o.load:.1f}")
    if gc_file is not None and gc_file.exists():
        cpu = o.cpu_per_op * o.ops / 1e6
        line += ", " + gc_share(json.loads(gc_file.read_text()), cpu)
    print(line, flush=True)
    if prof_file is not None and first and prof_file.exists():
        stats = pstats.Stats(str(prof_file), stream=io.StringIO())
        requests = max(1, int(o.ops))
        print(pyprofile.render(pyprofile.by_package(stats, requests), f"{row.key}, by package:"))
        print(pyprofile.render(pyprofile.top_functions(stats, requests, 30), "top functions:"))
    return o


def main() -> None:
    proxies, seconds = parse_proxies(sys.argv[1]), float(sys.argv[2])
    rows = plan_rows(os.environ.get("ROWS", "tlsclose,bulk"), os.environ.get("CONNS", ""))
    rounds = int(os.environ.get("ROUNDS", "3"))
    profile_dir = os.environ.get("PROFILE")
    if profile_dir and os.environ.get("GC"):
        raise SystemExit("PROFILE and GC each start caslb their own way: one at a time")
    raise_nofile(FDS)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        probes = _Probes(workdir, bool(os.environ.get("GC")),
                         Path(profile_dir).resolve() if profile_dir else None,
                         sys.argv[3] if len(sys.argv) > 3 else "")
        if probes.profile:
            probes.profile.mkdir(parents=True, exist_ok=True)
        ca = FarmCA(workdir / "certs")
        pem = ca.server_tls("bench", "bench.lab.local", "lab.local", "127.0.0.1").cert_path
        origin = stack.enter_context(procs.origin(workdir, BODIES))
        running: dict[str, procs.Proxy] = {}
        for name, tree in proxies:
            gc_file, prof_file = probes.files(name) if name.startswith("caslb") else (None, None)
            running[name] = stack.enter_context(procs.l7_proxy(
                name, origin, pem, workdir, tree=tree, gc_timed=gc_file, profile=prof_file))
        for template in rows:  # warm up: first connections, lazy imports, TLS sessions
            for name, proxy in running.items():
                row = dataclasses.replace(template, proxy=name, connections=16)
                clients.run_l7(row, proxy, 1)
        outcomes = []
        for i in range(rounds):
            for template in rows:
                for name in rotated(list(running), i):
                    row = dataclasses.replace(template, proxy=name)
                    outcomes.append(one_round(row, running[name], seconds, probes, i == 0))
        print("\n".join(["", *summary(outcomes)]))


if __name__ == "__main__":
    main()
