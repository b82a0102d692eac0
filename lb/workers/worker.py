"""A worker process: the frontends, fed pool state by the supervisor.

The worker's balancer gets the supervisor's feed as its state source and the
pipe back to the supervisor as its outcome sink (lb/seams.py), serves
frontends on SO_REUSEPORT sockets and no admin API. Around it run the writer
of the pipe, the metrics shipper and the signal loop: SIGHUP reloads from the
file and tells the supervisor (which answers with a snapshot), SIGTERM drains.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from lb.app import Balancer, serve
from lb.config import Config
from lb.workers.feed import SupervisorFeed
from lb.workers.lines import LineReader
from lb.workers.merged import traffic_families
from lb.workers.messages import METRICS_INTERVAL, MetricsUpdate, Reloaded, config_hash
from lb.workers.pipe import SupervisorPipe

log = logging.getLogger("caslb.workers")

Reloader = Callable[[Balancer, Path], Awaitable[None]]
"""`(balancer, path)`: re-read the config at `path` and apply it (`lb.cli.run.apply_reload`)."""


def worker_argv(path: Path, log_level: str, access_log: bool) -> list[str]:
    """The command line that starts one worker for the config at `path`."""
    return [sys.executable, "-c", "from lb.cli import main; main()", "run", str(path),
            "--worker", "--log-level", log_level,
            "--access-log" if access_log else "--no-access-log"]


async def run_worker(config: Config, path: Path, reload: Reloader) -> None:
    """Serve the data plane of `config` as a worker of `run_supervisor`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pipe = SupervisorPipe(config_hash(config))
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    feed = SupervisorFeed(LineReader(stdin), pipe)
    registry = CollectorRegistry()  # what the worker's metrics are shipped from
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM) as signals:
        async with stdin, stdout, trio.open_nursery() as nursery:
            writer_done = trio.Event()

            async def write() -> None:
                await pipe.pump(stdout)
                writer_done.set()

            nursery.start_soon(write)
            balancer: Balancer = await nursery.start(
                lambda task_status: serve(config, states=feed, outcomes=pipe, admin=False,
                                          reuse_port=True, registry=registry,
                                          task_status=task_status)
            )

            async def finish() -> None:
                await balancer.stopped.wait()
                pipe.flush_outcomes()
                pipe.send(MetricsUpdate(traffic_families(registry)))
                await pipe.close()
                with trio.move_on_after(5):
                    await writer_done.wait()
                nursery.cancel_scope.cancel()

            async def stop_when_supervisor_gone() -> None:
                await feed.lost.wait()
                balancer.stop()

            nursery.start_soon(stop_when_supervisor_gone)
            nursery.start_soon(_ship_metrics, registry, pipe)
            nursery.start_soon(finish)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await reload(balancer, path)
                    pipe.now_runs(config_hash(balancer.config))
                    pipe.send(Reloaded())
                elif balancer.stopping:
                    log.warning("worker %d: second stop signal: exiting now", os.getpid())
                    nursery.cancel_scope.cancel()
                else:
                    balancer.stop()


async def _ship_metrics(registry: CollectorRegistry, pipe: SupervisorPipe) -> None:
    # The first at once: it tells the supervisor this worker serves (systemd's READY).
    while True:
        pipe.flush_outcomes()
        pipe.send(MetricsUpdate(traffic_families(registry)))
        await trio.sleep(METRICS_INTERVAL)
