"""The supervisor process: probes, admin and merged metrics; starts and feeds the workers."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from lb import sdnotify
from lb.admin import ReloadHook
from lb.app import Balancer, serve
from lb.config import Config
from lb.health import OwnProbes
from lb.seams import ProbeKey
from lb.workers.agreement import ConfigAgreement
from lb.workers.lines import LineReader, write_lines
from lb.workers.memberstate import ejection_change, snapshot
from lb.workers.merged import MergedCollector, WorkerTotals
from lb.workers.messages import (
    CHANNEL_BUFFER,
    SNAPSHOT_INTERVAL,
    AdminChange,
    CheckChange,
    ControlMessage,
    GapDetector,
    MetricsUpdate,
    OutlierOutcome,
    PassiveReport,
    Reloaded,
    Sequencer,
    Stamp,
    WorkerMessage,
    config_hash,
    decode_worker,
    encode_control,
)
from lb.workers.worker import Reloader
from probes.checks import CheckResult
from probes.state import AdminState, Transition

log = logging.getLogger("caslb.workers")

MAX_RESTARTS = 5
RESTART_DELAY = 1.0



@dataclass(eq=False)
class _Pipe:
    """The supervisor's end of one worker's pipes."""

    lines: trio.MemorySendChannel[bytes]
    sequence: Sequencer
    gaps: GapDetector = field(default_factory=GapDetector)


class Supervisor:
    """Spawns and restarts the workers, and carries messages to and from them.

    Args:
        count: how many workers.
        argv: the command line of one worker.
    """

    def __init__(self, count: int, argv: list[str]) -> None:
        self.count = count
        self.argv = argv
        self.totals = WorkerTotals()
        self.agreement = ConfigAgreement("", count)
        self.stopping = False
        self.balancer: Balancer | None = None
        self.probes = OwnProbes()
        self.probes.subscribe(self.on_probe)
        self._pipes: dict[int, _Pipe] = {}
        self._processes: dict[int, trio.Process] = {}
        self._started = trio.Event()
        self._heard: set[int] = set()
        self._serving = trio.Event()

    # sync hooks, called from the balancer's tasks

    def broadcast(self, message: ControlMessage) -> None:
        """Send a state change to every running worker."""
        for slot in list(self._pipes):
            self.send(slot, message)

    def send(self, slot: int, message: ControlMessage) -> None:
        """Send one message to the worker in `slot`; a line that cannot be queued is lost.

        Its sequence number is used all the same, so the worker sees the gap
        and asks for a snapshot.
        """
        pipe = self._pipes.get(slot)
        if pipe is None:
            return
        try:
            pipe.lines.send_nowait(encode_control(message, pipe.sequence.next()))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.error("worker %d is not reading its state changes", slot)

    def send_snapshot(self, slot: int) -> None:
        """Send every member's state to the worker in `slot`."""
        assert self.balancer is not None
        self.send(slot, snapshot(self.balancer.pools, trio.current_time()))

    def reloaded(self, config: str) -> None:
        """The supervisor now runs `config` (a hash); later lines carry it."""
        self.agreement.supervisor_runs(config)
        for pipe in self._pipes.values():
            pipe.sequence.config = config

    def on_admin(self, pool: str, server: str, state: AdminState) -> None:
        """The admin API's hook: an operator changed a member."""
        self.broadcast(AdminChange(pool, server, state))

    def on_probe(
        self, key: ProbeKey, result: CheckResult | None, transition: Transition | None
    ) -> None:
        """A probe runner subscriber: forward check transitions."""
        if transition is not None:
            self.broadcast(CheckChange(key.pool, key.server, transition.new))

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every running worker."""
        for process in list(self._processes.values()):
            if process.returncode is None:
                process.send_signal(signum)

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [p.pid for p in self._processes.values() if p.returncode is None]

    async def wait_started(self) -> None:
        """Wait until every slot has had a worker process."""
        await self._started.wait()

    async def wait_serving(self) -> None:
        """Wait until a worker of every slot has served: its first line comes once it does."""
        await self._serving.wait()

    # tasks

    async def keep(self, slot: int) -> None:
        """Run the worker in `slot`, restarting it when it dies unexpectedly."""
        restarts = 0
        while True:
            status = await self._run_once(slot)
            self.totals.retire(slot)
            self.agreement.gone(slot)
            if self.stopping:
                return
            if restarts >= MAX_RESTARTS:
                log.critical("worker %d exited with %s; restarted %d times already: giving up",
                             slot, status, restarts)
                return
            restarts += 1
            log.error("worker %d exited with %s: restarting (%d/%d)",
                      slot, status, restarts, MAX_RESTARTS)
            await trio.sleep(RESTART_DELAY)

    async def resnapshot(self) -> None:
        """Send every worker a snapshot every `SNAPSHOT_INTERVAL`, so a lost line heals."""
        while True:
            await trio.sleep(SNAPSHOT_INTERVAL)
            for slot in list(self._pipes):
                self.send_snapshot(slot)

    async def _run_once(self, slot: int) -> int | None:
        assert self.balancer is not None
        send, receive = trio.open_memory_channel[bytes](CHANNEL_BUFFER)
        self._pipes[slot] = _Pipe(send, Sequencer(self.agreement.own))
        self.send_snapshot(slot)  # queued first: the worker reads it before it accepts
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(partial(
                trio.run_process, self.argv, check=False,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            ))
            assert process.stdin is not None and process.stdout is not None
            self._processes[slot] = process
            if len(self._processes) == self.count:
                self._started.set()
            log.info("worker %d started: pid %d", slot, process.pid)

            async def pump_in() -> None:
                assert process.stdin is not None
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await write_lines(process.stdin, receive)

            async def pump_out() -> None:
                assert process.stdout is not None
                await self._read_worker(slot, LineReader(process.stdout))
                await process.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump_in)
            nursery.start_soon(pump_out)
        self._pipes.pop(slot, None)
        return process.returncode

    async def _read_worker(self, slot: int, reader: LineReader) -> None:
        while True:
            try:
                line = await reader.next()
            except (ValueError, trio.BrokenResourceError) as exc:
                log.error("worker %d: output unreadable: %s", slot, exc)
                return
            if line is None:
                return
            try:
                stamp, message = decode_worker(line)
            except ValueError as exc:
                log.error("worker %d: bad line: %s", slot, exc)
                continue
            self._handle(slot, stamp, message)

    def _handle(self, slot: int, stamp: Stamp, message: WorkerMessage) -> None:
        assert self.balancer is not None
        self._heard.add(slot)
        if len(self._heard) == self.count:
            self._serving.set()
        pipe = self._pipes.get(slot)
        missing = 0 if pipe is None else pipe.gaps.missing(stamp.seq)
        if missing:
            # Reports and metrics heal by themselves (the next failure, the next
            # cumulative sample); a lost `reloaded` by the periodic snapshot.
            log.warning("worker %d: %d lines lost", slot, missing)
        verdict = self.agreement.heard(slot, stamp.config,
                                       reloaded=isinstance(message, Reloaded))
        if verdict is not None:
            log.log(logging.WARNING if verdict.warn else logging.INFO, "%s", verdict.text)
        if isinstance(message, MetricsUpdate):
            self.totals.update(slot, message.families)
        elif isinstance(message, PassiveReport):
            self.probes.report(message.pool, message.server, message.ok, message.reason)
        elif isinstance(message, OutlierOutcome):
            self._outcome(message)
        else:
            self.send_snapshot(slot)


    def _outcome(self, message: OutlierOutcome) -> None:
        """An L7 outcome from a worker: the supervisor's pool decides, for every worker."""
        assert self.balancer is not None
        pool = self.balancer.pools.get(message.pool)
        try:
            if pool is None or pool.member(message.server) is None:
                return
        except KeyError:
            return  # around a reload the worker may still run another config
        now = trio.current_time()
        ejection = pool.ejections.record(message.server, message.outcome, now,
                                         client=message.client, count=message.count)
        if ejection is None:
            return
        log.warning("pool %s: ejecting %s for %.0fs (%s, ejection #%d)", pool.name,
                    ejection.server, ejection.until - now, ejection.reason, ejection.times_ejected)
        self.balancer.metrics.ejected(pool.name, ejection)
        self.broadcast(ejection_change(pool.name, ejection.server, ejection.until, now))


def merged_registry(own: CollectorRegistry, totals: WorkerTotals) -> CollectorRegistry:
    """What the supervisor's /metrics serves: its `own` series with the workers' traffic added."""
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(MergedCollector(own, totals))
    return exposed


def fixed_ports(config: Config) -> list[str]:
    """Frontends listening on port 0, which workers cannot share (each would get its own)."""
    return [fe.name for fe in config.frontends if fe.port == 0]


async def run_supervisor(
    config: Config,
    path: Path,
    count: int,
    reload: Reloader,
    *,
    argv: list[str],
    on_reload: ReloadHook | None = None,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the control plane and `count` workers until SIGTERM/SIGINT; `on_reload` is
    what the admin API's `POST /reload` calls.

    Raises:
        ValueError: a frontend on port 0 (workers must share one fixed port).
    """
    unshared = fixed_ports(config)
    if unshared:
        raise ValueError(f"--workers needs fixed ports; port 0 on frontend {unshared[0]!r}")
    supervisor = Supervisor(count, argv)
    own = CollectorRegistry()
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            balancer: Balancer = await nursery.start(
                lambda task_status: serve(
                    config, states=supervisor.probes, outcomes=supervisor.probes,
                    frontends=False, on_admin=supervisor.on_admin, on_reload=on_reload,
                    registry=own,
                    exposed=merged_registry(own, supervisor.totals), task_status=task_status,
                )
            )
            supervisor.balancer = balancer
            supervisor.reloaded(config_hash(balancer.config))
            nursery.start_soon(_follow_signals, signals, supervisor, path, reload)
            nursery.start_soon(supervisor.resnapshot)
            async with trio.open_nursery() as workers:
                for slot in range(count):
                    workers.start_soon(supervisor.keep, slot)
                await supervisor.wait_started()
                task_status.started(supervisor)
                await supervisor.wait_serving()
                sdnotify.ready()
            # Every `keep` returned: after a stop, or because every worker gave up.
            nursery.cancel_scope.cancel()
    if not supervisor.stopping:
        raise OSError("every worker exited and none could be restarted; see the log")
    log.info("all workers exited")


async def _follow_signals(
    signals: AsyncIterator[int], supervisor: Supervisor, path: Path, reload: Reloader
) -> None:
    assert supervisor.balancer is not None
    async for signum in signals:
        if signum == signal.SIGHUP:
            # The supervisor reloads first, so a worker's `reloaded` finds the
            # new pools when it asks for their states.
            sdnotify.reloading()
            await reload(supervisor.balancer, path)
            supervisor.reloaded(config_hash(supervisor.balancer.config))
            supervisor.signal_all(signal.SIGHUP)
            sdnotify.ready()
            continue
        if supervisor.stopping:
            log.warning("second stop signal: forwarding it, workers exit now")
        else:
            log.info("stop signal: workers drain for up to %gs",
                     supervisor.balancer.config.grace)
        supervisor.stopping = True
        sdnotify.stopping()
        supervisor.signal_all(signal.SIGTERM)

