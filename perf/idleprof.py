"""`python -m perf.idleprof [--connections N] [--mode l4|l7]`: what an idle connection holds.

Theory of operation. The harness of `python -m perf idle` (a greeting sink, a
warm-up batch, then N more connections), with `caslb run` started by this same
module (`python -m perf.idleprof --child CONFIG OUT`). A thread in the child
waits for a request file, starts `tracemalloc` at the first one (after the
warm-up, so start-up is not traced), then writes what the process holds: Python
objects by type (from `gc`) and traced bytes grouped two ways, by
the line that allocated them and by the innermost caslb (`lb/`) frame on the
allocating stack. The driver asks once after the warm-up and once after the N
connections, and prints the difference per connection beside the RSS growth.
tracemalloc's own overhead inflates RSS, so the RSS line is only the total the
breakdown should account for; `python -m perf idle` gives the untraced figure.
l7 mode puts an L7 plain http frontend in front of the sink; its connections
send one GET (the sink answers 100 B, keep-alive) and then stay idle.
"""

from __future__ import annotations

import collections
import gc
import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from tempfile import TemporaryDirectory

import trio

from perf.failover.procs import child
from perf.idle import WARMUP, _open_many, _sink, _wait_listening, prepare
from perf.net import free_port
from perf.procfs import rss_kib

FRAMES = 25
_L7_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
_REQUEST = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"


def _holdings() -> dict[str, dict[str, int]]:
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    by_line: collections.Counter[str] = collections.Counter()
    by_caslb: collections.Counter[str] = collections.Counter()
    for trace in snap.traces:
        frames = list(reversed(trace.traceback))  # innermost first
        by_line[f"{frames[0].filename}:{frames[0].lineno}"] += trace.size
        mine = next((f for f in frames if "/lb/" in f.filename), None)
        by_caslb["-" if mine is None else f"{mine.filename}:{mine.lineno}"] += trace.size
    types: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        name = type(o).__qualname__
        sizes[name] += sys.getsizeof(o)  # a coroutine's size includes its frame
        types[f"{name} {o.cr_code.co_qualname}" if name == "coroutine" else name] += 1
    return {"line": dict(by_line), "caslb": dict(by_caslb), "types": dict(types),
            "sizes": dict(sizes)}


def _serve_requests(out: Path) -> None:
    while True:
        for req in sorted(out.glob("*.req")):
            if not tracemalloc.is_tracing():
                # Tracing starts at the first question, after the warm-up: what
                # start-up allocated is not per connection, and tracing it made
                # every snapshot walk (and the start itself) far slower.
                tracemalloc.start(FRAMES)
            data = _holdings()
            req.with_suffix(".json").write_text(json.dumps(data))
            req.unlink()
        time.sleep(0.1)


def _child(config: str, out: str) -> None:
    from lb.cli import main

    threading.Thread(target=_serve_requests, args=(Path(out),), daemon=True).start()
    sys.argv = ["caslb", "run", config]
    main()


async def _ask(out: Path, name: str) -> dict[str, dict[str, int]]:
    (out / f"{name}.req").write_text("")
    target = out / f"{name}.json"
    with trio.fail_after(120):
        while not target.exists():
            await trio.sleep(0.2)
    return dict(json.loads(target.read_text()))


def _config(mode: str, front: int, back: int, count: int) -> str:
    kind = "tcp" if mode == "l4" else "http"
    return ('grace = "1s"\n'
            f'[admin]\nbind = "127.0.0.1:{free_port()}"\n'
            f'[frontends.idle]\nbind = "127.0.0.1:{front}"\nmode = "{kind}"\n'
            f'{"" if mode == "l4" else "default_"}pool = "sink"\n'
            f"max_connections = {count + WARMUP + 100}\n"
            f'[pools.sink]\nservers = [{{ name = "sink", address = "127.0.0.1:{back}" }}]\n'
            "check = false\n")


async def _l7_sink(listeners: list[trio.SocketListener], held: list[trio.SocketStream]) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        held.append(stream)
        try:
            while await stream.receive_some(65536):
                await stream.send_all(_L7_ANSWER)
        except trio.BrokenResourceError:
            return

    await trio.serve_listeners(answer, listeners)


async def _open_l7(port: int, count: int, clients: list[trio.SocketStream]) -> None:
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        clients.append(stream)
        await stream.send_all(_REQUEST)
        got = b""
        with trio.fail_after(10):
            while not got.endswith(b"x" * 100):
                got += await stream.receive_some(65536)


def _diff(before: dict[str, int], after: dict[str, int], count: int, top: int,
          scale: float) -> list[str]:
    keys = set(before) | set(after)
    grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in keys), reverse=True)
    total = sum(d for d, _ in grown)
    lines = [f"  total {total / count / scale:.2f} per connection"]
    lines += [f"  {d / count / scale:8.2f}  {d / max(total, 1):5.1%}  {k}"
              for d, k in grown[:top] if d > 0]
    return lines


async def profile(mode: str, count: int, settle: float = 0.5) -> list[str]:
    """Open `count` idle connections through a traced `caslb run`; report what they hold."""
    back_listeners, back, front = await prepare(count)
    clients: list[trio.SocketStream] = []
    held: list[trio.SocketStream] = []
    sink = _sink if mode == "l4" else _l7_sink
    opener = _open_many if mode == "l4" else _open_l7
    with TemporaryDirectory(prefix="caslb-idleprof-") as tmp:
        out = Path(tmp)
        cfg = out / "caslb.toml"
        cfg.write_text(_config(mode, front, back, count))
        argv = [sys.executable, "-m", "perf.idleprof", "--child", str(cfg), str(out)]
        async with child(argv, log=out / "caslb.log", name="caslb") as proc:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sink, back_listeners, held)
                    await _wait_listening(front, proc)
                    await opener(front, WARMUP, clients)
                    rss0, before = rss_kib(proc.process.pid), await _ask(out, "before")
                    await opener(front, count, clients)
                    await trio.sleep(settle)  # 1 s or more: every L4 relay parked
                    rss1, after = rss_kib(proc.process.pid), await _ask(out, "after")
                    nursery.cancel_scope.cancel()
            finally:
                for s in (*clients, *held):
                    await trio.aclose_forcefully(s)
    lines = [f"{mode}: {count} idle connections, traced RSS {(rss1 - rss0) / count:.2f} KiB each",
             "traced KiB per connection, by allocating line:"]
    lines += _diff(before["line"], after["line"], count, 25, 1024)
    lines += ["traced KiB per connection, by innermost caslb frame:"]
    lines += _diff(before["caslb"], after["caslb"], count, 25, 1024)
    lines += ["objects per connection, by type:"]
    lines += _diff(before["types"], after["types"], count, 30, 1)
    lines += ["KiB per connection, by type (sys.getsizeof of gc-tracked objects):"]
    lines += _diff(before["sizes"], after["sizes"], count, 20, 1024)
    return lines


def main() -> None:
    """Entry point: the driver, or (`--child CONFIG OUT`) the traced balancer."""
    args = sys.argv[1:]
    if args[:1] == ["--child"]:
        _child(args[1], args[2])
        return
    count = int(args[args.index("--connections") + 1]) if "--connections" in args else 1000
    mode = args[args.index("--mode") + 1] if "--mode" in args else "l4"
    settle = float(args[args.index("--settle") + 1]) if "--settle" in args else 0.5
    print("\n".join(trio.run(profile, mode, count, settle)))


if __name__ == "__main__":
    main()
