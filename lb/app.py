"""The running balancer: one nursery owns the probes, the frontends and the admin API.

Theory of operation
-------------------
`serve(config)` builds the runtime from the config tree: a `Pool` per pool, a
probe per (pool, server) in one `ProbeRunner` (lb/health.py wires their
transitions into the pools), a `Metrics` on a fresh registry reading the pools
live, a frontend object per frontend (lb/frontends.py), and the admin API. All
of it runs as tasks of one nursery; `task_status.started()` hands the caller a
`Balancer`, the handle tests, `caslb run` and `caslb demo` drive.

Listeners are opened here (or injected, for tests) and wrapped in a
`GateListener`, so a graceful stop is the same for every frontend: the gate
closes the listening sockets (new connections are refused by the kernel),
established connections go on, and the app waits until every pool lease has
ended or the grace is over before cancelling the rest.

A reload (`Balancer.reload`) applies a new config's pools in place: members
keep their check, admin and slow-start state, probes are re-registered only
where their settings changed, and connections are untouched. Changes to the
frontends themselves (binds, routes, certificates) need a restart; the reload
says so in its result rather than dropping connections to apply them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry

from lb import frontends
from lb.admin import serve_admin
from lb.config_model import Config
from lb.health import HealthWiring
from lb.metrics import Metrics
from lb.pool import Pool
from probes.runner import ProbeRunner

log = logging.getLogger("caslb.app")


class GateListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener that stops accepting, and closes its socket, when its gate shuts."""

    def __init__(self, inner: trio.abc.Listener[Any], gate: trio.Event) -> None:
        self.inner = inner
        self._gate = gate

    async def accept(self) -> trio.abc.Stream:
        if self._gate.is_set():
            await self.inner.aclose()
            await trio.sleep_forever()
        async with trio.open_nursery() as nursery:
            accepted: list[trio.abc.Stream] = []

            async def take() -> None:
                accepted.append(await self.inner.accept())
                nursery.cancel_scope.cancel()

            async def shut() -> None:
                await self._gate.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(take)
            nursery.start_soon(shut)
        if accepted:
            return accepted[0]
        await self.inner.aclose()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.inner.aclose()


def bound_address(listener: trio.abc.Listener[Any]) -> tuple[str, int]:
    """The (host, port) a TCP listener is bound to."""
    inner = listener.inner if isinstance(listener, GateListener) else listener
    if not isinstance(inner, trio.SocketListener):
        raise TypeError(f"not a TCP listener: {inner!r}")
    sockname = inner.socket.getsockname()
    return str(sockname[0]), int(sockname[1])


@dataclass
class Balancer:
    """A running balancer, as `serve` hands it over.

    Attributes:
        config: the config in force.
        pools: live pools by name.
        metrics: every series, on `metrics.registry`.
        runner: the probe runner.
        addresses: frontend name → bound (host, port).
        admin_address: the admin API's bound (host, port).
    """

    config: Config
    pools: dict[str, Pool]
    metrics: Metrics
    runner: ProbeRunner
    wiring: HealthWiring
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    admin_address: tuple[str, int] | None = None
    gate: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)

    def active_connections(self) -> int:
        """Connections currently leased on any pool member."""
        return sum(m.active for pool in self.pools.values() for m in pool.members)

    def reload(self, config: Config) -> list[str]:
        """Apply a new config's pools in place; returns what needs a restart instead."""
        now = trio.current_time()
        pools = dict(self.pools)
        for name, pool_config in config.pools.items():
            if name in pools:
                pools[name].reconfigure(pool_config, now)
            else:
                pools[name] = Pool(pool_config)
        for name in set(pools) - set(config.pools):
            del pools[name]
        self.pools.clear()
        self.pools.update(pools)
        self.wiring.sync(self.pools)
        self.config = config
        return frontend_changes(self.frontend_configs, config)

    frontend_configs: tuple[Any, ...] = ()

    def stop(self) -> None:
        """Begin a graceful stop: refuse new connections, drain, then exit."""
        self.gate.set()


def frontend_changes(old: Sequence[Any], new: Config) -> list[str]:
    """Frontends whose config differs between two configs (they need a restart)."""
    before = {fe.name: fe for fe in old}
    after = {fe.name: fe for fe in new.frontends}
    return sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))


async def _open_listeners(
    config: Config, injected: Mapping[str, Sequence[trio.abc.Listener[Any]]] | None
) -> dict[str, list[trio.abc.Listener[Any]]]:
    opened: dict[str, list[trio.abc.Listener[Any]]] = {}
    for fe in config.frontends:
        if injected is not None and fe.name in injected:
            opened[fe.name] = list(injected[fe.name])
        else:
            opened[fe.name] = list(await trio.open_tcp_listeners(fe.port, host=fe.host))
    return opened


async def serve(
    config: Config,
    *,
    listeners: Mapping[str, Sequence[trio.abc.Listener[Any]]] | None = None,
    admin_listeners: Sequence[trio.abc.Listener[Any]] | None = None,
    connector: frontends.Connector | None = None,
    registry: CollectorRegistry | None = None,
    task_status: trio.TaskStatus[Balancer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the balancer for `config` until cancelled or stopped.

    Args:
        config: the validated config.
        listeners: frontend name → listeners to use instead of binding.
        admin_listeners: listeners for the admin API instead of binding.
        connector: opens upstream streams (tests inject memory streams).
        registry: where metrics go (a fresh registry by default).
        task_status: started with the `Balancer` handle once everything accepts.

    Raises:
        ValueError: a frontend setting refused at start, naming the frontend.
        OSError: an address could not be bound.
    """
    pools = {name: Pool(pc) for name, pc in config.pools.items()}
    metrics = Metrics(registry or CollectorRegistry())
    runner = ProbeRunner()
    wiring = HealthWiring(runner, pools)
    wiring.sync(pools)
    runner.subscribe(metrics.on_probe)
    app = Balancer(config, pools, metrics, runner, wiring, frontend_configs=config.frontends)
    metrics.watch_pools(lambda: app.pools)
    built = {
        fe.name: frontends.build(fe, config, pools, connector=connector, report=wiring.report,
                                 metrics=metrics)
        for fe in config.frontends
    }
    opened = await _open_listeners(config, listeners)
    try:
        await _run(app, built, opened, admin_listeners, task_status)
    finally:
        # The app opened (or was handed) the listeners, so it closes them,
        # whatever each frontend does with its own on cancellation.
        with trio.CancelScope(shield=True):
            for group in opened.values():
                for listener in group:
                    await trio.aclose_forcefully(listener)
    app.stopped.set()


async def _run(
    app: Balancer,
    built: Mapping[str, frontends.Frontend],
    opened: Mapping[str, list[trio.abc.Listener[Any]]],
    admin_listeners: Sequence[trio.abc.Listener[Any]] | None,
    task_status: trio.TaskStatus[Balancer],
) -> None:
    config, metrics, runner = app.config, app.metrics, app.runner
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        for name, frontend in built.items():
            gated = [GateListener(listener, app.gate) for listener in opened[name]]
            if gated and isinstance(opened[name][0], trio.SocketListener):
                app.addresses[name] = bound_address(gated[0])
            await nursery.start(frontend.serve, gated)
        admin_listen: Any = admin_listeners or (config.admin.host, config.admin.port)
        started = await nursery.start(
            lambda task_status: serve_admin(
                admin_listen, pools=app.pools, metrics=metrics, token=config.admin.token,
                task_status=task_status,
            )
        )
        if started and isinstance(started[0], trio.SocketListener):
            app.admin_address = bound_address(started[0])
        log.info("caslb serving %s; admin on %s", app.addresses, app.admin_address)
        task_status.started(app)
        await app.gate.wait()
        await _drain(app, config.grace)
        nursery.cancel_scope.cancel()


async def _drain(app: Balancer, grace: float) -> None:
    """Wait, at most `grace` seconds, for every leased connection to end."""
    log.info("stopping: new connections refused, %d open, grace %gs",
             app.active_connections(), grace)
    with trio.move_on_after(grace if math.isfinite(grace) else 0):
        while app.active_connections():
            await trio.sleep(0.05)
    left = app.active_connections()
    if left:
        log.warning("grace over: resetting %d connections", left)
