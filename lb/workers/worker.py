"""A worker process: the frontends, fed pool state by the supervisor."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from lb.app import Balancer, Roles, serve
from lb.config_model import Config
from lb.workers.lines import LineReader, write_lines
from lb.workers.memberstate import apply_control
from lb.workers.merged import traffic_families
from lb.workers.messages import (
    CHANNEL_BUFFER,
    METRICS_INTERVAL,
    SNAPSHOT_TIMEOUT,
    ControlMessage,
    GapDetector,
    MetricsUpdate,
    PassiveReport,
    Reloaded,
    ReportFilter,
    Resync,
    Sequencer,
    Snapshot,
    WorkerMessage,
    config_hash,
    decode_control,
    encode_worker,
)

Reloader = Callable[[Balancer, Path], Awaitable[None]]
"""`(balancer, path)`: re-read the config at `path` and apply it (`lb.cli.run.apply_reload`)."""

log = logging.getLogger("caslb.workers")



def worker_argv(path: Path, log_level: str, access_log: bool) -> list[str]:
    """The command line that starts one worker for the config at `path`."""
    return [sys.executable, "-c", "from lb.cli import main; main()", "run", str(path),
            "--worker", "--log-level", log_level,
            "--access-log" if access_log else "--no-access-log"]


async def _read_snapshot(reader: LineReader, gaps: GapDetector) -> list[ControlMessage]:
    """The lines up to and including the first snapshot (the supervisor sends it first)."""
    messages: list[ControlMessage] = []
    with trio.fail_after(SNAPSHOT_TIMEOUT):
        while True:
            line = await reader.next()
            if line is None:
                raise OSError("the supervisor closed the worker's stdin before the snapshot")
            stamp, message = decode_control(line)
            gaps.missing(stamp.seq)
            messages.append(message)
            if isinstance(message, Snapshot):
                return messages


async def run_worker(config: Config, path: Path, reload: Reloader) -> None:
    """Serve the data plane of `config` as a worker of `run_supervisor`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send, receive = trio.open_memory_channel[bytes](CHANNEL_BUFFER)
    reports = ReportFilter()
    sequence = Sequencer(config_hash(config))
    gaps = GapDetector()

    def queue(message: WorkerMessage) -> None:
        line = encode_worker(message, sequence.next())
        try:
            send.send_nowait(line)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("worker output backlog full: a message was dropped")

    def report(pool: str, server: str, ok: bool, reason: str) -> None:
        if reports.should_send(pool, server, ok):
            queue(PassiveReport(pool, server, ok, reason))

    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    reader = LineReader(stdin)
    initial = await _read_snapshot(reader, gaps)

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
                queue(MetricsUpdate(traffic_families(balancer.metrics.registry)))
                await send.aclose()
                with trio.move_on_after(5):
                    await writer_done.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(write)
            nursery.start_soon(_follow_supervisor, reader, gaps, balancer, queue)
            nursery.start_soon(_ship_metrics, balancer, queue)
            nursery.start_soon(finish)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await reload(balancer, path)
                    sequence.config = config_hash(balancer.config)
                    queue(Reloaded())
                elif balancer.stopping:
                    log.warning("worker %d: second stop signal: exiting now", os.getpid())
                    nursery.cancel_scope.cancel()
                else:
                    balancer.stop()


async def _follow_supervisor(
    reader: LineReader, gaps: GapDetector, balancer: Balancer,
    queue: Callable[[WorkerMessage], None],
) -> None:
    while True:
        line = await reader.next()
        if line is None:
            log.warning("worker %d: supervisor gone: stopping", os.getpid())
            balancer.stop()
            return
        try:
            stamp, message = decode_control(line)
        except ValueError as exc:
            log.error("worker %d: bad control line: %s", os.getpid(), exc)
            continue
        missing = gaps.missing(stamp.seq)
        if missing:
            log.warning("worker %d: %d state lines lost: asking for a snapshot",
                        os.getpid(), missing)
            queue(Resync(missing))
        apply_control(balancer.pools, message, trio.current_time())


async def _ship_metrics(balancer: Balancer, queue: Callable[[WorkerMessage], None]) -> None:
    while True:
        await trio.sleep(METRICS_INTERVAL)
        queue(MetricsUpdate(traffic_families(balancer.metrics.registry)))


