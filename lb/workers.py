"""`caslb run --workers N`: one supervisor (control plane) and N workers (data plane).

Theory of operation
-------------------
One Python process is bound to one core, so the data plane runs in N worker
processes that share each frontend address through SO_REUSEPORT (the kernel
spreads new connections over them). Everything that must be decided once
stays in the supervisor, the process `caslb run` starts:

- The supervisor runs a `Balancer` with probes, pools and the admin API but
  no frontends. It starts each worker as `caslb run CONFIG --worker` with
  pipes on its stdin and stdout, and restarts one that dies (at most
  `MAX_RESTARTS` times per slot, each logged).
- A worker runs a `Balancer` with the frontends only: no probe runs, no admin
  listener. Its members' check and admin states are whatever the supervisor
  last said.

Messages are JSON lines, one object each, with a `t` field naming the kind:

- supervisor → worker (stdin): `check` (pool, server, UP|DOWN) for every
  probe transition, `admin` (pool, server, READY|DRAIN|MAINT) for every change
  made through the admin API, and a snapshot (one `check` and one `admin` per
  member, then `synced`) when the worker starts and after it reloads. The
  worker applies each with `Pool.set_check_state`/`Pool.set_admin` at its own
  clock, so resets and drain deadlines act on its own connections as they
  would in one process. A worker reads the whole first snapshot before its
  frontends accept, so it never serves a member the supervisor knows is DOWN.
- worker → supervisor (stdout): `report` (pool, server, ok, reason), the
  passive outcomes of live traffic: every failure, and a success only when the
  worker's previous report for that member was a failure (`ReportFilter`), so
  healthy traffic costs no message; `reloaded` after a SIGHUP reload (the
  supervisor answers with a snapshot); `metrics` every `METRICS_INTERVAL`.

Metrics: a worker sends the samples of its counters and histograms (and the
current-connections gauge), without `_created`. The supervisor keeps the last
set per worker (`WorkerTotals`) and, when a worker is replaced, folds its
counters into a retired total so no counter goes backwards. Its `/metrics`
is `MergedCollector`: its own series (pool state, checks) with the workers'
samples added per label set, plus `caslb_worker_frontend_connections_total
{worker}` and `caslb_worker_http_requests_total{worker}` to show how the
kernel spread the traffic. prometheus_client's
multiprocess mode was not used: it needs a shared directory and environment
set before import, and does not fit the injected registries. The cost is that
worker traffic counters lag by up to one interval.

Signals: SIGHUP to the supervisor reloads its config, then is forwarded to
every worker (which reloads frontends and pools from the file). SIGTERM or
SIGINT is forwarded; each worker drains for `grace` and exits, and the
supervisor exits 0 once they all have. Workers ignore SIGINT themselves (a
Ctrl-C reaches the whole process group; the forwarded stop is enough) and stop
when their stdin ends, so a supervisor that dies takes them with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from lb.app import Balancer, Roles, serve
from lb.config_model import Config
from lb.health import ProbeKey
from lb.metrics import PREFIX
from lb.pool import Pool
from probes.checks import CheckResult
from probes.state import AdminState, CheckState, Transition

log = logging.getLogger("caslb.workers")

MAX_LINE_BYTES = 8 * 1024 * 1024
METRICS_INTERVAL = 1.0
MAX_RESTARTS = 5
RESTART_DELAY = 1.0
SNAPSHOT_TIMEOUT = 30.0
CHANNEL_BUFFER = 100_000
CURRENT_CONNECTIONS = PREFIX + "frontend_current_connections"
PER_WORKER: Mapping[str, tuple[str, str]] = {
    PREFIX + "frontend_connections": (
        PREFIX + "worker_frontend_connections",
        "Accepted client connections (L4 frontends) per worker process.",
    ),
    PREFIX + "frontend_http_requests": (
        PREFIX + "worker_http_requests", "HTTP requests (L7 frontends) per worker process.",
    ),
}
"""Worker family → (per-worker family, help): how the kernel spread the traffic."""

Reloader = Callable[[Balancer, Path], Awaitable[None]]
"""`(balancer, path)`: re-read the config at `path` and apply it (`lb.cli.run.apply_reload`)."""


# -- messages (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckChange:
    """A member's check state, supervisor → worker."""

    pool: str
    server: str
    state: CheckState


@dataclass(frozen=True)
class AdminChange:
    """A member's admin state, supervisor → worker."""

    pool: str
    server: str
    state: AdminState


@dataclass(frozen=True)
class Synced:
    """The end of a snapshot, supervisor → worker."""


@dataclass(frozen=True)
class PassiveReport:
    """A live-traffic outcome, worker → supervisor."""

    pool: str
    server: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class Reloaded:
    """A worker finished a reload and wants a snapshot."""


SampleKey = tuple[str, tuple[tuple[str, str], ...]]
"""(sample name, sorted label pairs)."""


@dataclass(frozen=True)
class Family:
    """The samples of one metric family from one worker."""

    type: str
    samples: Mapping[SampleKey, float]


@dataclass(frozen=True)
class MetricsUpdate:
    """A worker's traffic samples by family name, worker → supervisor."""

    families: Mapping[str, Family]


ControlMessage = CheckChange | AdminChange | Synced
WorkerMessage = PassiveReport | Reloaded | MetricsUpdate


def _line(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def encode_control(message: ControlMessage) -> bytes:
    """One supervisor → worker line."""
    if isinstance(message, Synced):
        return _line({"t": "synced"})
    kind = "check" if isinstance(message, CheckChange) else "admin"
    return _line({"t": kind, "pool": message.pool, "server": message.server,
                  "state": message.state.value})


def encode_worker(message: WorkerMessage) -> bytes:
    """One worker → supervisor line."""
    if isinstance(message, PassiveReport):
        return _line({"t": "report", "pool": message.pool, "server": message.server,
                      "ok": message.ok, "reason": message.reason})
    if isinstance(message, Reloaded):
        return _line({"t": "reloaded"})
    return _line({"t": "metrics", "families": [
        [name, family.type, [[sample, dict(labels), value]
                             for (sample, labels), value in family.samples.items()]]
        for name, family in message.families.items()
    ]})


def _object(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON line: {line[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {line[:80]!r}")
    return data


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {value!r}")
    return value


def decode_control(line: bytes) -> ControlMessage:
    """Parse a supervisor → worker line.

    Raises:
        ValueError: naming the bad line, kind, field or state.
    """
    data = _object(line)
    kind = data.get("t")
    if kind == "synced":
        return Synced()
    if kind not in ("check", "admin"):
        raise ValueError(f"unknown control message kind {kind!r}")
    pool, server, state = _text(data, "pool"), _text(data, "server"), _text(data, "state")
    try:
        if kind == "check":
            return CheckChange(pool, server, CheckState(state))
        return AdminChange(pool, server, AdminState(state))
    except ValueError as exc:
        raise ValueError(f"unknown {kind} state {state!r}") from exc


def decode_worker(line: bytes) -> WorkerMessage:
    """Parse a worker → supervisor line.

    Raises:
        ValueError: naming the bad line, kind or field.
    """
    data = _object(line)
    kind = data.get("t")
    if kind == "reloaded":
        return Reloaded()
    if kind == "report":
        ok = data.get("ok")
        if not isinstance(ok, bool):
            raise ValueError(f"field 'ok' must be a boolean, got {ok!r}")
        return PassiveReport(_text(data, "pool"), _text(data, "server"), ok,
                             _text(data, "reason"))
    if kind == "metrics":
        return MetricsUpdate(_families(data.get("families")))
    raise ValueError(f"unknown worker message kind {kind!r}")


def _families(raw: Any) -> dict[str, Family]:
    if not isinstance(raw, list):
        raise ValueError(f"field 'families' must be a list, got {type(raw).__name__}")
    families: dict[str, Family] = {}
    try:
        for name, kind, samples in raw:
            parsed: dict[SampleKey, float] = {}
            for sample, labels, value in samples:
                key = (str(sample), tuple(sorted((str(k), str(v)) for k, v in labels.items())))
                parsed[key] = float(value)
            families[str(name)] = Family(str(kind), parsed)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed metrics family in {str(raw)[:80]!r}") from exc
    return families


def snapshot(pools: Mapping[str, Pool]) -> list[ControlMessage]:
    """Every member's check and admin state, then `Synced`."""
    messages: list[ControlMessage] = []
    for pool in pools.values():
        for member in pool.members:
            messages.append(CheckChange(pool.name, member.name, member.check_state))
            messages.append(AdminChange(pool.name, member.name, member.admin))
    messages.append(Synced())
    return messages


def apply_control(pools: Mapping[str, Pool], message: ControlMessage, now: float) -> None:
    """Apply a state change to the worker's pools; unknown pools or servers are ignored.

    The supervisor and a worker can briefly disagree on the config around a
    reload; the snapshot that follows the worker's reload settles it.
    """
    if isinstance(message, Synced):
        return
    pool = pools.get(message.pool)
    if pool is None:
        return
    try:
        if isinstance(message, CheckChange):
            pool.set_check_state(message.server, message.state, now)
        else:
            pool.set_admin(message.server, message.state, now)
    except KeyError:
        log.debug("state for a server not in pool %s: %s", message.pool, message.server)


class ReportFilter:
    """Which passive outcomes a worker sends: failures, and the first success after one."""

    def __init__(self) -> None:
        self._failing: set[tuple[str, str]] = set()

    def should_send(self, pool: str, server: str, ok: bool) -> bool:
        """True when this outcome must go to the supervisor."""
        key = (pool, server)
        if not ok:
            self._failing.add(key)
            return True
        if key in self._failing:
            self._failing.discard(key)
            return True
        return False


class LineSplitter:
    """Cuts a byte stream into lines.

    Args:
        limit: the longest line accepted, in bytes.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines `data` ends (without their newline).

        Raises:
            ValueError: a line grew past the limit.
        """
        self._buffer += data
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest)
        if len(self._buffer) > self._limit:
            raise ValueError(f"line longer than {self._limit} bytes")
        return lines


# -- metrics (pure) -------------------------------------------------------------------


def traffic_families(registry: CollectorRegistry) -> dict[str, Family]:
    """The samples a worker ships: counters, histograms and current connections.

    Pool-state gauges are the supervisor's own; `_created` timestamps do not add up.
    """
    families: dict[str, Family] = {}
    for metric in registry.collect():
        if metric.type not in ("counter", "histogram") and metric.name != CURRENT_CONNECTIONS:
            continue
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for s in metric.samples if not s.name.endswith("_created")
        }
        if samples:
            families[metric.name] = Family(metric.type, samples)
    return families


def _add(into: dict[str, Family], families: Mapping[str, Family], *, gauges: bool) -> None:
    for name, family in families.items():
        if family.type == "gauge" and not gauges:
            continue
        merged = dict(into[name].samples) if name in into else {}
        for key, value in family.samples.items():
            merged[key] = merged.get(key, 0.0) + value
        into[name] = Family(family.type, merged)


class WorkerTotals:
    """The workers' last metrics, summed; a replaced worker's counters are kept."""

    def __init__(self) -> None:
        self._latest: dict[int, Mapping[str, Family]] = {}
        self._retired: dict[int, dict[str, Family]] = {}

    def update(self, slot: int, families: Mapping[str, Family]) -> None:
        """The latest samples from the worker in `slot`."""
        self._latest[slot] = families

    def retire(self, slot: int) -> None:
        """The worker in `slot` ended: keep its counters, forget its gauges."""
        families = self._latest.pop(slot, None)
        if families is not None:
            _add(self._retired.setdefault(slot, {}), families, gauges=False)

    def summed(self) -> dict[str, Family]:
        """Every family summed over live and retired workers, per label set."""
        total: dict[str, Family] = {}
        for retired in self._retired.values():
            _add(total, retired, gauges=False)
        for latest in self._latest.values():
            _add(total, latest, gauges=True)
        return total

    def by_worker(self, name: str) -> dict[int, float]:
        """The total of counter family `name` per worker slot, over every label set."""
        out: dict[int, float] = {}
        for slot in sorted(set(self._latest) | set(self._retired)):
            count = 0.0
            for families in (self._retired.get(slot, {}), self._latest.get(slot, {})):
                family = families.get(name)
                if family is not None:
                    count += sum(v for (name, _), v in family.samples.items()
                                 if name.endswith("_total"))
            out[slot] = count
        return out


class MergedCollector:
    """The supervisor's own series with the workers' samples added (a custom collector).

    Args:
        own: the supervisor's registry (pool state, checks, empty traffic series).
        totals: the workers' samples.
    """

    def __init__(self, own: CollectorRegistry, totals: WorkerTotals) -> None:
        self._own = own
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        """One read of the supervisor's series and the workers' latest samples."""
        summed = self._totals.summed()
        for metric in self._own.collect():
            extra = summed.pop(metric.name, None)
            yield metric if extra is None else _merged(metric, extra)
        for name, family in summed.items():
            yield _merged(Metric(name, "", family.type), family)
        for source, (name, documentation) in PER_WORKER.items():
            per_worker = CounterMetricFamily(name, documentation, labels=["worker"])
            for slot, count in self._totals.by_worker(source).items():
                per_worker.add_metric([str(slot)], count)
            yield per_worker


def _merged(metric: Metric, extra: Family) -> Metric:
    values: dict[SampleKey, float] = {}
    for s in metric.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        values[key] = values.get(key, 0.0) + s.value
    for key, value in extra.samples.items():
        values[key] = values.get(key, 0.0) + value
    merged = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    for (name, labels), value in values.items():
        merged.add_sample(name, dict(labels), value)
    return merged


# -- the worker -----------------------------------------------------------------------


def worker_argv(path: Path, log_level: str, access_log: bool) -> list[str]:
    """The command line that starts one worker for the config at `path`."""
    return [sys.executable, "-c", "from lb.cli import main; main()", "run", str(path),
            "--worker", "--log-level", log_level,
            "--access-log" if access_log else "--no-access-log"]


class _LineReader:
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


async def _write_lines(
    stream: trio.abc.SendStream, lines: trio.MemoryReceiveChannel[bytes]
) -> None:
    async with lines:
        async for line in lines:
            await stream.send_all(line)


async def _read_snapshot(reader: _LineReader) -> list[ControlMessage]:
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
    reader = _LineReader(stdin)
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
                await _write_lines(stdout, receive)
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


async def _follow_supervisor(reader: _LineReader, balancer: Balancer) -> None:
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


# -- the supervisor -------------------------------------------------------------------


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
        self.stopping = False
        self.balancer: Balancer | None = None
        self._channels: dict[int, trio.MemorySendChannel[bytes]] = {}
        self._processes: dict[int, trio.Process] = {}

    # sync hooks, called from the balancer's tasks

    def broadcast(self, message: ControlMessage) -> None:
        """Send a state change to every running worker."""
        line = encode_control(message)
        for slot, channel in list(self._channels.items()):
            try:
                channel.send_nowait(line)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                log.error("worker %d is not reading its state changes", slot)

    def on_admin(self, pool: str, server: str, state: AdminState) -> None:
        """The admin API's hook: an operator changed a member."""
        self.broadcast(AdminChange(pool, server, state))

    def on_probe(
        self, key: object, result: CheckResult | None, transition: Transition | None
    ) -> None:
        """A probe runner subscriber: forward check transitions."""
        if transition is not None and isinstance(key, ProbeKey):
            self.broadcast(CheckChange(key.check, key.server, transition.new))

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every running worker."""
        for process in list(self._processes.values()):
            if process.returncode is None:
                process.send_signal(signum)

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [p.pid for p in self._processes.values() if p.returncode is None]

    async def wait_started(self) -> None:
        """Wait until every slot has a worker process."""
        while len(self._processes) < self.count:
            await trio.sleep(0.01)

    # tasks

    async def keep(self, slot: int) -> None:
        """Run the worker in `slot`, restarting it when it dies unexpectedly."""
        restarts = 0
        while True:
            status = await self._run_once(slot)
            self.totals.retire(slot)
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

    async def _run_once(self, slot: int) -> int | None:
        assert self.balancer is not None
        send, receive = trio.open_memory_channel[bytes](CHANNEL_BUFFER)
        for message in snapshot(self.balancer.pools):
            send.send_nowait(encode_control(message))
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(partial(
                trio.run_process, self.argv, check=False,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            ))
            assert process.stdin is not None and process.stdout is not None
            self._processes[slot] = process
            self._channels[slot] = send
            log.info("worker %d started: pid %d", slot, process.pid)

            async def pump_in() -> None:
                assert process.stdin is not None
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await _write_lines(process.stdin, receive)

            async def pump_out() -> None:
                assert process.stdout is not None
                await self._read_worker(slot, _LineReader(process.stdout))
                await process.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump_in)
            nursery.start_soon(pump_out)
        self._channels.pop(slot, None)
        return process.returncode

    async def _read_worker(self, slot: int, reader: _LineReader) -> None:
        while True:
            try:
                line = await reader.next()
            except (ValueError, trio.BrokenResourceError) as exc:
                log.error("worker %d: output unreadable: %s", slot, exc)
                return
            if line is None:
                return
            try:
                message = decode_worker(line)
            except ValueError as exc:
                log.error("worker %d: bad line: %s", slot, exc)
                continue
            self._handle(slot, message)

    def _handle(self, slot: int, message: WorkerMessage) -> None:
        assert self.balancer is not None
        if isinstance(message, MetricsUpdate):
            self.totals.update(slot, message.families)
        elif isinstance(message, PassiveReport):
            self.balancer.wiring.report(message.pool, message.server, message.ok,
                                        message.reason)
        else:
            self.send_snapshot(slot)

    def send_snapshot(self, slot: int) -> None:
        """Send every member's state to the worker in `slot` (after its reload)."""
        assert self.balancer is not None
        channel = self._channels.get(slot)
        if channel is None:
            return
        for control in snapshot(self.balancer.pools):
            try:
                channel.send_nowait(encode_control(control))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                log.error("worker %d is not reading its state changes", slot)
                return


def expose_merged(balancer: Balancer, own: CollectorRegistry, totals: WorkerTotals) -> None:
    """Make the admin API's /metrics show the workers' traffic on top of `own`."""
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(MergedCollector(own, totals))
    # The admin API reads `metrics.registry` at every scrape; the supervisor's
    # own series keep going to `own`, which the merged collector reads.
    balancer.metrics.registry = exposed


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
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the control plane and `count` workers until SIGTERM/SIGINT.

    Raises:
        ValueError: a frontend on port 0 (workers must share one fixed port).
    """
    unshared = fixed_ports(config)
    if unshared:
        raise ValueError(f"--workers needs fixed ports; port 0 on frontend {unshared[0]!r}")
    supervisor = Supervisor(count, argv)
    own = CollectorRegistry()
    roles = Roles(frontends=False, on_admin=supervisor.on_admin)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            balancer: Balancer = await nursery.start(
                lambda task_status: serve(config, registry=own, roles=roles,
                                          task_status=task_status)
            )
            supervisor.balancer = balancer
            expose_merged(balancer, own, supervisor.totals)
            balancer.runner.subscribe(supervisor.on_probe)
            nursery.start_soon(_follow_signals, signals, supervisor, path, reload)
            async with trio.open_nursery() as workers:
                for slot in range(count):
                    workers.start_soon(supervisor.keep, slot)
                await supervisor.wait_started()
                task_status.started(supervisor)
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
            await reload(supervisor.balancer, path)
            supervisor.signal_all(signal.SIGHUP)
            continue
        if supervisor.stopping:
            log.warning("second stop signal: forwarding it, workers exit now")
        else:
            log.info("stop signal: workers drain for up to %gs",
                     supervisor.balancer.config.grace)
        supervisor.stopping = True
        supervisor.signal_all(signal.SIGTERM)
