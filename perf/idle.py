"""`python -m perf idle`: memory per idle proxied connection.

Theory of operation. The harness runs a sink (a TCP server that greets each
connection with one byte, then holds it idle) and a balancer process in front of
it. It opens a warm-up batch of connections through the balancer, reads the
balancer's RSS from /proc, opens N more, waits until every one has received the
sink's greeting (so each is proxied end to end, both upstream and downstream
sockets open), reads RSS again and reports the growth per connection. File
descriptor limits are raised to the hard limit first; the balancer inherits them.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import trio

from perf import tools
from perf.failover.designs.caslb import CASLB_COMMAND
from perf.failover.procs import LineProcess, child
from perf.net import free_port
from perf.procfs import rss_kib

WARMUP = 200
GREETING = b"*"


def raise_nofile(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward `wanted` (at most the hard limit).

    As root the hard limit is raised first when it is below `wanted` (10k
    proxied connections are 20k descriptors in the proxy).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
            hard = wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


async def _sink(listeners: list[trio.SocketListener], held: list[trio.SocketStream]) -> None:
    async def greet(stream: trio.SocketStream) -> None:
        held.append(stream)
        try:
            await stream.send_all(GREETING)
        except trio.BrokenResourceError:
            # the readiness probe's connection (_wait_listening), already gone
            return
        await trio.sleep_forever()

    await trio.serve_listeners(greet, listeners)


Balancer = Callable[[int, int, int, Path], AbstractAsyncContextManager[LineProcess]]


@asynccontextmanager
async def _haproxy(front: int, back: int, count: int, workdir: Path) -> AsyncIterator[LineProcess]:
    cfg = workdir / "idle-haproxy.cfg"
    cfg.write_text(
        f"global\n    maxconn {count + WARMUP + 100}\n"
        "defaults\n    mode tcp\n    timeout connect 2s\n"
        "    timeout client 15m\n    timeout server 15m\n"
        f"frontend idle\n    bind 127.0.0.1:{front}\n    default_backend sink\n"
        f"backend sink\n    server sink 127.0.0.1:{back}\n"
    )
    argv = [tools.which("haproxy") or "haproxy", "-db", "-f", str(cfg)]
    async with child(argv, log=workdir / "haproxy.log") as proc:
        yield proc


@asynccontextmanager
async def _caslb(front: int, back: int, count: int, workdir: Path) -> AsyncIterator[LineProcess]:
    # the generic model: one tcp frontend, one pool, no check (the sink is
    # not an Exchange server); the first-response timeout stays off because
    # idle connections are exactly what is measured
    cfg = workdir / "idle-caslb.toml"
    cfg.write_text(
        'grace = "1s"\n'
        f'[admin]\nbind = "127.0.0.1:{free_port()}"\n'
        f'[frontends.idle]\nbind = "127.0.0.1:{front}"\nmode = "tcp"\npool = "sink"\n'
        f"max_connections = {count + WARMUP + 100}\n"
        f'[pools.sink]\nservers = [{{ name = "sink", address = "127.0.0.1:{back}" }}]\n'
        "check = false\n"
    )
    argv = [*CASLB_COMMAND, "run", str(cfg)]
    async with child(argv, log=workdir / "caslb.log", name="caslb") as proc:
        yield proc


IDLE_DESIGNS: dict[str, Balancer] = {"caslb-l4": _caslb, "haproxy-tcp": _haproxy}


async def _open_many(port: int, count: int, clients: list[trio.SocketStream]) -> None:
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        clients.append(stream)
        with trio.fail_after(10):
            if await stream.receive_some(1) != GREETING:
                raise RuntimeError("connection through the balancer got no greeting")


async def prepare(count: int) -> tuple[list[trio.SocketListener], int, int]:
    """Raise the fd limit for `count` proxied connections; the sink's listeners, its
    port and a free port for the balancer's frontend."""
    raise_nofile(2 * (count + WARMUP) + 1000)
    back_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return back_listeners, back_listeners[0].socket.getsockname()[1], free_port()


SETTLE = 0.5


async def measure(name: str, count: int, settle: float = SETTLE) -> str:
    """Open `count` idle connections through one design and report RSS per connection.

    RSS is read `settle` seconds after the last connection was greeted; caslb
    parks a relay idle for 0.25 to 0.5 s (lb/l4/parking.py), so 1 s or more
    measures parked connections.
    """
    back_listeners, back, front = await prepare(count)
    clients: list[trio.SocketStream] = []
    held: list[trio.SocketStream] = []
    with TemporaryDirectory(prefix="caslb-idle-") as tmp:
        async with IDLE_DESIGNS[name](front, back, count, Path(tmp)) as proc:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_sink, back_listeners, held)
                    await _wait_listening(front, proc)
                    await _open_many(front, WARMUP, clients)
                    before = rss_kib(proc.process.pid)
                    await _open_many(front, count, clients)
                    await trio.sleep(settle)
                    after = rss_kib(proc.process.pid)
                    nursery.cancel_scope.cancel()
            finally:
                for s in (*clients, *held):
                    await trio.aclose_forcefully(s)
    per = (after - before) / count
    return (f"{name}: {count} idle connections, RSS {before} -> {after} KiB after {settle:g} s, "
            f"{per:.2f} KiB each")


async def _wait_listening(port: int, proc: LineProcess) -> None:
    with trio.fail_after(10):
        while True:
            proc.check_alive()
            try:
                probe = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await trio.aclose_forcefully(probe)
            return


async def run_idle(names: list[str], count: int, settle: float = SETTLE) -> list[str]:
    """Measure each named design in turn; one that cannot start is reported, not fatal."""
    lines = []
    for name in names:
        try:
            lines.append(await measure(name, count, settle))
        except* (RuntimeError, OSError) as group:
            lines.append(f"{name}: skipped ({group.exceptions[0]})")
    return lines
