"""L4 throughput, connection rate and CPU cost: `caslb run`, direct, and HAProxy.

    python -m perf.l4bench [--seconds S] [--quick] [--access-log]

Everything runs on 127.0.0.1 in separate processes, so the balancer under test
competes for the cores like it would in production:

- a backend process: a bulk sink (reads and discards) and a "ping" port (reads
  one request, answers, closes);
- the proxy: `caslb run CONFIG` with a config this bench writes (two tcp
  frontends, a pool of one static server each, tcp checks every 2 s), the same
  with `--workers 2`, HAProxy `mode tcp` with its defaults, and HAProxy tuned
  with splice and 1 MiB pipes, each with the same 2 s check (HAProxy is
  skipped with a message if it is missing and cannot be installed);
- a client process per measure: 1 and 8 bulk streams sending for S seconds,
  then new connections per second from 16 concurrent threads.

Around each measure the bench reads the proxy's CPU time (user + system, its
children included) from /proc, and prints CPU per GB carried and per connection
beside the rates and their ratios to the faster HAProxy. `--quick` measures
caslb (one process) and HAProxy (defaults) only, 2 s per measure, for CI.
`--access-log` adds a row, caslb+log: the same with one tcplog line per
connection written to a file (the other rows run without a log, as HAProxy does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from perf import caslbrun, tools
from perf.net import free_port, wait_listening
from perf.procfs import cpu_seconds

HOST = "127.0.0.1"
CHUNK = 1 << 20
RATE_THREADS = 16

HAPROXY_DEFAULT = """global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
{backends}"""

HAPROXY_TUNED = """global
    maxconn 4000
    tune.pipesize 1048576
defaults
    mode tcp
    option splice-auto
    timeout connect 2s
    timeout client 60s
    timeout server 60s
{backends}"""

HAPROXY_PAIR = """listen l{port}
    bind {host}:{port}
    server s1 {host}:{target} check inter 2s
"""

# The generic model (docs/configuration.md): no `protocol`, so no catalog
# timeouts; the first-response timer is armed as the catalog arms it for
# Exchange pools, because that is the data path production runs.
CASLB_FRONTEND = """[frontends.{name}]
bind = "{host}:{port}"
mode = "tcp"
pool = "{name}"
max_connections = 100000

[pools.{name}]
servers = [{{ name = "b1", address = "{host}:{target}" }}]
first_response_timeout = "1s"

[pools.{name}.check]
kind = "tcp"
inter = "2s"
rise = 1
"""


def caslb_config(ports: tuple[int, int], targets: tuple[int, int], admin: int) -> str:
    """The caslb TOML: a bulk and a ping frontend, each to its backend port."""
    frontends = "\n".join(
        CASLB_FRONTEND.format(name=name, host=HOST, port=port, target=target)
        for name, port, target in zip(("bulk", "ping"), ports, targets, strict=True)
    )
    return (
        "# written by perf/l4bench; a short drain keeps the bench fast\n"
        f'grace = "1s"\n\n[admin]\nbind = "{HOST}:{admin}"\n\n{frontends}'
    )


# -- roles run in child processes ----------------------------------------------------


def _listen(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(1024)
    return sock


def role_backend() -> None:
    """Bulk sink and ping server; prints its two ports, runs until killed."""
    bulk, ping = _listen(), _listen()
    print(json.dumps([bulk.getsockname()[1], ping.getsockname()[1]]), flush=True)

    def sink(conn: socket.socket) -> None:
        buf = bytearray(CHUNK)
        with conn:
            while conn.recv_into(buf):
                pass

    def bulk_loop() -> None:
        while True:
            conn, _ = bulk.accept()
            threading.Thread(target=sink, args=(conn,), daemon=True).start()

    def ping_loop() -> None:
        while True:
            conn, _ = ping.accept()
            with conn, contextlib.suppress(OSError):
                conn.recv(64)
                conn.sendall(b"pong")

    threading.Thread(target=bulk_loop, daemon=True).start()
    for _ in range(2):
        threading.Thread(target=ping_loop, daemon=True).start()
    threading.Event().wait()


def role_bulk(port: int, streams: int, seconds: float) -> None:
    """Send as fast as possible on `streams` connections; print bytes per second."""
    data = os.urandom(CHUNK)
    totals = [0] * streams
    deadline = time.monotonic() + seconds

    def run(i: int) -> None:
        with socket.create_connection((HOST, port)) as sock:
            while time.monotonic() < deadline:
                sock.sendall(data)
                totals[i] += len(data)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(sum(totals) / (time.monotonic() - start)), flush=True)


def role_rate(port: int, seconds: float) -> None:
    """Open, ping, read to EOF, close, from RATE_THREADS threads; print connections/s."""
    counts = [0] * RATE_THREADS
    errors = [0] * RATE_THREADS
    deadline = time.monotonic() + seconds
    linger = struct.pack("ii", 1, 0)

    def run(i: int) -> None:
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, port), timeout=5) as sock:
                    sock.sendall(b"ping")
                    while sock.recv(64):
                        pass
                    # No TIME_WAIT on the client side: ports stay available.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                counts[i] += 1
            except OSError:
                errors[i] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(RATE_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps([sum(counts) / (time.monotonic() - start), sum(errors)]), flush=True)



# -- the conductor --------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "perf.l4bench", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def _first_line(proc: subprocess.Popen[str]) -> object:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child {proc.args!r} exited before reporting")
    return json.loads(line)


@contextlib.contextmanager
def _running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass(frozen=True)
class Target:
    """Where the load goes, and which process's CPU it costs (None: direct)."""

    bulk: int
    ping: int
    pid: int | None


@contextlib.contextmanager
def _haproxy(template: str, bulk: int, ping: int, workdir: Path) -> Iterator[Target]:
    ports = [free_port(), free_port()]
    targets = zip(ports, (bulk, ping), strict=True)
    pairs = "".join(HAPROXY_PAIR.format(host=HOST, port=p, target=t) for p, t in targets)
    cfg = workdir / f"haproxy-{ports[0]}.cfg"
    cfg.write_text(template.format(backends=pairs))
    command = [tools.which("haproxy") or "haproxy", "-db", "-f", str(cfg)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        for port in ports:
            wait_listening(port, proc=proc)
        yield Target(ports[0], ports[1], proc.pid)
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _caslb(
    bulk: int, ping: int, workdir: Path, workers: int = 1, access_log: bool = False
) -> Iterator[Target]:
    ports, admin = (free_port(), free_port()), free_port()
    cfg = workdir / f"caslb-{ports[0]}.toml"
    cfg.write_text(caslb_config(ports, (bulk, ping), admin))
    with caslbrun.running(cfg, ports, admin, workers=workers, access_log=access_log) as proc:
        yield Target(ports[0], ports[1], proc.pid)


def _cpu(target: Target) -> float:
    return 0.0 if target.pid is None else cpu_seconds(target.pid)


def _measure(target: Target, seconds: float, streams: tuple[int, ...]) -> dict[str, float]:
    results: dict[str, float] = {}
    for n in streams:
        before = _cpu(target)
        with _running(_spawn("_bulk", str(target.bulk), str(n), str(seconds))) as proc:
            value = _first_line(proc)
        assert isinstance(value, float)
        results[f"bulk{n}"] = value
        # bytes/s × seconds is what went through; CPU per GB of it
        results[f"cpu_gb{n}"] = (_cpu(target) - before) / (value * seconds / 1e9)
    before = _cpu(target)
    with _running(_spawn("_rate", str(target.ping), str(seconds))) as proc:
        rate = _first_line(proc)
    assert isinstance(rate, list)
    results["rate"], results["rate_errors"] = rate
    results["cpu_conn"] = (_cpu(target) - before) / max(1.0, rate[0] * seconds)
    return results


def _table(rows: dict[str, dict[str, float]], streams: tuple[int, ...]) -> str:
    haproxies = [r for n, r in rows.items() if n.startswith("haproxy")]
    keys = (*(f"bulk{n}" for n in streams), "rate")
    best = {k: max(r[k] for r in haproxies) for k in keys} if haproxies else {}
    cheapest = min(r["cpu_conn"] for r in haproxies) if haproxies else 0.0
    head = f"{'target':<16}"
    head += "".join(f"{f'bulk {n} Gbit/s':>15}{'CPU ms/GB':>11}" for n in streams)
    head += f"{'conn/s':>9}{'CPU µs/conn':>13}{'errors':>8}"
    head += "  vs best HAProxy (" + "/".join(keys) + ", CPU/conn)"
    lines = [head]
    for name, r in rows.items():
        line = f"{name:<16}"
        for n in streams:
            cpu = f"{r[f'cpu_gb{n}'] * 1e3:.0f}" if name != "direct" else "-"
            line += f"{r[f'bulk{n}'] * 8 / 1e9:>15.2f}{cpu:>11}"
        cpu = f"{r['cpu_conn'] * 1e6:.0f}" if name != "direct" else "-"
        line += f"{r['rate']:>9.0f}{cpu:>13}{r['rate_errors']:>8.0f}"
        ratio = "/".join(f"{r[k] / best[k]:.2f}" for k in keys) if best else "-"
        if best and name != "direct":
            ratio += f", {r['cpu_conn'] / cheapest:.2f}"
        lines.append(f"{line}  {ratio}")
    return "\n".join(lines)


def main(seconds: float, quick: bool, access_log: bool = False) -> int:
    """Run every target and print the table."""
    streams = (1,) if quick else (1, 8)
    rows: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="l4bench-") as tmp,
        _running(_spawn("_backend")) as backend,
    ):
        workdir = Path(tmp)
        ports = _first_line(backend)
        assert isinstance(ports, list)
        bulk, ping = ports
        print(f"backend on {HOST}: bulk {bulk}, ping {ping}; {seconds:g} s per measure", flush=True)
        if not quick:
            rows["direct"] = _measure(Target(bulk, ping, None), seconds, streams)
        with _caslb(bulk, ping, workdir) as target:
            rows["caslb"] = _measure(target, seconds, streams)
        if access_log:  # its log goes to caslb-PORT.log in the work directory
            with _caslb(bulk, ping, workdir, access_log=True) as target:
                rows["caslb+log"] = _measure(target, seconds, streams)
        if not quick:
            with _caslb(bulk, ping, workdir, workers=2) as target:
                rows["caslb-2workers"] = _measure(target, seconds, streams)
        if tools.ensure("haproxy"):
            print("haproxy not found and could not be installed: no HAProxy comparison")
        else:
            haproxies = {"haproxy": HAPROXY_DEFAULT}
            if not quick:
                haproxies["haproxy-splice"] = HAPROXY_TUNED
            for name, template in haproxies.items():
                with _haproxy(template, bulk, ping, workdir) as target:
                    rows[name] = _measure(target, seconds, streams)
    print(_table(rows, streams))
    print("CPU is user + system time of the proxy process and its children, from /proc, "
          "over each measure")
    return 0


def _dispatch(argv: list[str]) -> int:
    roles = {"_backend": 0, "_bulk": 3, "_rate": 2}
    if argv and argv[0] in roles:
        args = argv[1 : 1 + roles[argv[0]]]
        if argv[0] == "_backend":
            role_backend()
        elif argv[0] == "_bulk":
            role_bulk(int(args[0]), int(args[1]), float(args[2]))
        else:
            role_rate(int(args[0]), float(args[1]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m perf.l4bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measure (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke: caslb and HAProxy only, 2 s per measure")
    parser.add_argument("--access-log", action="store_true",
                        help="also measure caslb with its connection log on (row caslb+log)")
    args = parser.parse_args(argv)
    if not 0.5 <= args.seconds <= 10:
        parser.error(f"--seconds must be within 0.5..10, not {args.seconds!r}")
    return main(2.0 if args.quick else args.seconds, args.quick, args.access_log)


if __name__ == "__main__":
    sys.exit(_dispatch(sys.argv[1:]))
