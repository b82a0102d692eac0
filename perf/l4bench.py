"""L4 throughput and connection-rate bench: caslb's TCP frontend, direct, and HAProxy.

    python -m perf.l4bench [--seconds S]

Everything runs on 127.0.0.1 in separate processes, so the balancer under test
competes for the two cores like it would in production:

- a backend process: a bulk sink (reads and discards) and a "ping" port (reads
  one request, answers, closes);
- the proxy: caslb's `TcpFrontend` (splice pump, first-response timer armed as
  in production), HAProxy `mode tcp` with its defaults, and HAProxy tuned with
  splice and 1 MiB pipes (skipped with a message if `haproxy` is missing);
- a client process per measure: 1 and 8 bulk streams sending for S seconds,
  then new connections per second from 16 concurrent threads.

Each target is measured the same way and the table prints ratios to direct and
to the faster HAProxy. Total time stays under a minute with the default S.
"""

from __future__ import annotations

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
from pathlib import Path

from perf import tools
from perf.net import free_port, wait_listening

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
    server s1 {host}:{target}
"""


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


def role_caslb(bulk_target: int, ping_target: int, shared: list[int] | None = None) -> None:
    """caslb TcpFrontends in front of the backend's two ports; prints its ports.

    With `shared` ports it binds those with SO_REUSEPORT, as each worker of
    `caslb run --workers N` does, so several of these processes share them.
    """
    import trio

    from lb.app import open_reuse_port_listener
    from lb.config.model import PoolConfig, ServerConfig
    from lb.l4.frontend import Route, TcpFrontend
    from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
    from lb.pool import Pool

    class Quiet:
        """Counters nobody reads: the bench measures the data path only."""

        def __getattr__(self, name: str) -> object:
            return lambda *args, **kwargs: None

    async def main() -> None:
        ports = []
        async with trio.open_nursery() as nursery:
            for i, (name, target) in enumerate((("bulk", bulk_target), ("ping", ping_target))):
                pool = Pool(PoolConfig(name, (ServerConfig("b1", HOST, target, "b1"),)))
                policy = UpstreamPolicy(first_response_timeout=1.0)
                frontend = TcpFrontend(
                    TcpFrontendSettings(name, max_connections=100_000),
                    default=Route(pool, policy),
                    events=Quiet(),  # type: ignore[arg-type]
                    report=lambda *r: None,
                )
                if shared:
                    listeners = [await open_reuse_port_listener(HOST, shared[i])]
                else:
                    listeners = await trio.open_tcp_listeners(0, host=HOST, backlog=1024)
                ports.append(listeners[0].socket.getsockname()[1])
                await nursery.start(frontend.serve, listeners)
            print(json.dumps(ports), flush=True)

    trio.run(main)


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


@contextlib.contextmanager
def _haproxy(template: str, bulk: int, ping: int) -> Iterator[tuple[int, int]]:
    ports = [free_port(), free_port()]
    targets = zip(ports, (bulk, ping), strict=True)
    pairs = "".join(HAPROXY_PAIR.format(host=HOST, port=p, target=t) for p, t in targets)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(template.format(backends=pairs))
        command = [tools.which("haproxy") or "haproxy", "-db", "-f", str(cfg)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            for port in ports:
                wait_listening(port, proc=proc)
            yield ports[0], ports[1]
        finally:
            proc.kill()
            proc.wait()


def _measure(bulk: int, ping: int, seconds: float) -> dict[str, float]:
    results: dict[str, float] = {}
    for streams in (1, 8):
        with _running(_spawn("_bulk", str(bulk), str(streams), str(seconds))) as proc:
            value = _first_line(proc)
            assert isinstance(value, float)
            results[f"bulk{streams}"] = value
    with _running(_spawn("_rate", str(ping), str(seconds))) as proc:
        rate = _first_line(proc)
        assert isinstance(rate, list)
        results["rate"], results["rate_errors"] = rate
    return results


def _measure_workers(bulk: int, ping: int, workers: int, seconds: float) -> dict[str, float]:
    """The same data path in `workers` processes sharing two ports (SO_REUSEPORT)."""
    ports = [str(free_port()), str(free_port())]
    with contextlib.ExitStack() as stack:
        for _ in range(workers):
            proc = stack.enter_context(_running(_spawn("_caslb", str(bulk), str(ping), *ports)))
            _first_line(proc)  # bound and serving
        return _measure(int(ports[0]), int(ports[1]), seconds)


def _table(rows: dict[str, dict[str, float]]) -> str:
    haproxies = [r for n, r in rows.items() if n.startswith("haproxy")]
    keys = ("bulk1", "bulk8", "rate")
    best = {k: max(r[k] for r in haproxies) for k in keys} if haproxies else {}
    lines = [f"{'target':<16}{'bulk 1 (MB/s)':>15}{'bulk 8 (MB/s)':>15}{'conn/s':>10}"
             f"{'errors':>8}{'vs best HAProxy (b1/b8/rate)':>32}"]
    for name, r in rows.items():
        ratio = "/".join(f"{r[k] / best[k]:.2f}" for k in keys) if best else "-"
        lines.append(f"{name:<16}{r['bulk1'] / 1e6:>15.0f}{r['bulk8'] / 1e6:>15.0f}"
                     f"{r['rate']:>10.0f}{r['rate_errors']:>8.0f}{ratio:>32}")
    return "\n".join(lines)


def main(seconds: float = 2.5) -> None:
    """Run every target and print the table."""
    rows: dict[str, dict[str, float]] = {}
    with _running(_spawn("_backend")) as backend:
        ports = _first_line(backend)
        assert isinstance(ports, list)
        bulk, ping = ports
        print(f"backend on {HOST}: bulk {bulk}, ping {ping}; {seconds:g} s per measure", flush=True)
        rows["direct"] = _measure(bulk, ping, seconds)
        with _running(_spawn("_caslb", str(bulk), str(ping))) as lb:
            lb_ports = _first_line(lb)
            assert isinstance(lb_ports, list)
            rows["caslb"] = _measure(lb_ports[0], lb_ports[1], seconds)
        rows["caslb-2workers"] = _measure_workers(bulk, ping, 2, seconds)
        if tools.ensure("haproxy"):
            print("haproxy not found and could not be installed: no HAProxy comparison")
        else:
            for name, template in (("haproxy", HAPROXY_DEFAULT),
                                   ("haproxy-splice", HAPROXY_TUNED)):
                with _haproxy(template, bulk, ping) as (hb, hp):
                    rows[name] = _measure(hb, hp, seconds)
    print(_table(rows))


def _dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("--seconds",):
        main(float(argv[1]) if len(argv) > 1 else 2.5)
    elif argv[0] == "_backend":
        role_backend()
    elif argv[0] == "_caslb":
        role_caslb(int(argv[1]), int(argv[2]), [int(a) for a in argv[3:5]])
    elif argv[0] == "_bulk":
        role_bulk(int(argv[1]), int(argv[2]), float(argv[3]))
    elif argv[0] == "_rate":
        role_rate(int(argv[1]), float(argv[2]))
    else:
        raise SystemExit(f"unknown argument {argv[0]!r}; usage: python -m perf.l4bench "
                         "[--seconds S]")


if __name__ == "__main__":
    _dispatch(sys.argv[1:])
