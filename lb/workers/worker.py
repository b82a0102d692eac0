"""A worker process: the frontends, fed pool state by the supervisor."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from lb.app import Balancer, Roles, serve
from lb.config_model import Config
from lb.workers.merged import traffic_families
from lb.workers.messages import (
    CHANNEL_BUFFER,
    METRICS_INTERVAL,
    SNAPSHOT_TIMEOUT,
    ControlMessage,
    LineSplitter,
    MetricsUpdate,
    PassiveReport,
    Reloaded,
    Reloader,
    ReportFilter,
    Synced,
    apply_control,
    decode_control,
    encode_worker,
)

log = logging.getLogger("caslb.workers")



def worker_argv(path: Path, log_level: str, access_log: bool) -> list[str]:
    """The command line that starts one worker for the config at `path`."""
    return [sys.executable, "-c", "from lb.cli import main; main()", "run", str(path),
            "--worker", "--log-level", log_level,
            "--access-log" if access_log else "--no-access-log"]


class LineReader:
    """Lines from a trio receive stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._splitter = LineSplitter()
        self._ready: list[bytes] = []

    async def next(self) -> bytes | None:
        """The next line, or None at end of stream."""
        while not self._ready:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._ready = self._splitter.feed(bytes(data))
        return self._ready.pop(0)


async def write_lines(
    stream: trio.abc.SendStream, lines: trio.MemoryReceiveChannel[bytes]
) -> None:
    async with lines:
        async for line in lines:
            await stream.send_all(line)


async def _read_snapshot(reader: LineReader) -> list[ControlMessage]:
    messages: list[ControlMessage] = []
    with trio.fail_after(SNAPSHOT_TIMEOUT):
        while True:
            line = await reader.next()
            if line is None:
                raise OSError("the supervisor closed the worker's stdin before the snapshot")
            message = decode_control(line)
            if isinstance(message, Synced):
                return messages
            messages.append(message)


async def run_worker(config: Config, path: Path, reload: Reloader) -> None:
    """Serve the data plane of `config` as a worker of `run_supervisor`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send, receive = trio.open_memory_channel[bytes](CHANNEL_BUFFER)
    reports = ReportFilter()

    def queue(line: bytes) -> None:
        try:
            send.send_nowait(line)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("worker output backlog full: a message was dropped")

    def report(pool: str, server: str, ok: bool, reason: str) -> None:
        if reports.should_send(pool, server, ok):
            queue(encode_worker(PassiveReport(pool, server, ok, reason)))

    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    reader = LineReader(stdin)
    initial = await _read_snapshot(reader)

    def before_accept(balancer: Balancer) -> None:
        for message in initial:
            apply_control(balancer.pools, message, trio.current_time())

    roles = Roles(probes=False, admin=False, reuse_port=True, report=report,
                  before_accept=before_accept)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM) as signals:
        async with stdin, stdout, trio.open_nursery() as nursery:
            balancer: Balancer = await nursery.start(
                lambda task_status: serve(config, roles=roles, task_status=task_status)
            )
            writer_done = trio.Event()

            async def write() -> None:
                await write_lines(stdout, receive)
                writer_done.set()

            async def finish() -> None:
                await balancer.stopped.wait()
                queue(encode_worker(MetricsUpdate(traffic_families(balancer.metrics.registry))))
                await send.aclose()
                with trio.move_on_after(5):
                    await writer_done.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(write)
            nursery.start_soon(_follow_supervisor, reader, balancer)
            nursery.start_soon(_ship_metrics, balancer, queue)
            nursery.start_soon(finish)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await reload(balancer, path)
                    queue(encode_worker(Reloaded()))
                elif balancer.stopping:
                    log.warning("worker %d: second stop signal: exiting now", os.getpid())
                    nursery.cancel_scope.cancel()
                else:
                    balancer.stop()


async def _follow_supervisor(reader: LineReader, balancer: Balancer) -> None:
    while True:
        line = await reader.next()
        if line is None:
            log.warning("worker %d: supervisor gone: stopping", os.getpid())
            balancer.stop()
            return
        try:
            message = decode_control(line)
        except ValueError as exc:
            log.error("worker %d: bad control line: %s", os.getpid(), exc)
            continue
        apply_control(balancer.pools, message, trio.current_time())


async def _ship_metrics(balancer: Balancer, queue: Callable[[bytes], None]) -> None:
    while True:
        await trio.sleep(METRICS_INTERVAL)
        queue(encode_worker(MetricsUpdate(traffic_families(balancer.metrics.registry))))


