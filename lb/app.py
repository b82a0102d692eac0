"""The running balancer: one nursery owns the state source, the frontends and the admin API.

Theory of operation
-------------------
`serve(config)` builds the runtime from the config tree: a `Pool` per pool, a
`Metrics` on a registry chosen here reading the pools live, a frontend object
per frontend (lb/build.py), and the admin API. Two seams (lb/seams.py)
say where health comes from and where traffic outcomes go: by default this
process's own probes (`lb.health.OwnProbes`) are both; a worker of `caslb run
--workers N` passes the supervisor's feed and the pipe back to it instead.
All of it runs as tasks of one nursery, the state source first; once it has
started, the frontends accept, and `task_status.started()` hands the caller
the `Balancer`, the handle tests, `caslb run` and `caslb demo` drive.

Every frontend accepts through `GateListener`s. Shutting a gate stops that
frontend accepting without touching the connections it serves, which gives one
mechanism for both:

- a graceful stop: every gate shuts and closes its socket (the kernel refuses
  new connections), leased connections get the config's `grace` (the wait
  wakes on each pool's last lease ending), then the rest is cancelled;
- a reload, planned by `lb.reload.plan_reload` and carried out here: pools
  reconfigured in place, a changed frontend replaced, on the very same
  listening sockets when it keeps its address; the old one stops accepting
  and lives on until its last connection ends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry

from lb import frontends, logs, renewal
from lb.admin import AdminHook, ReloadHook, serve_admin
from lb.boundary import guarded
from lb.build import build_frontend, known_refusals
from lb.config import Config, FrontendConfig
from lb.fdreserve import FdReserve, reserve_from_environment
from lb.gates import GateListener, bound_address
from lb.health import OwnProbes
from lb.listeners import AcceptGuard, open_listeners
from lb.listeners import open_reuse_port_listener as open_reuse_port_listener
from lb.metrics import Metrics
from lb.pool import Pool
from lb.reload import plan_reload
from lb.seams import OutcomeSink, StateSource
from probes.wire import forget_tls_contexts

log = logging.getLogger("caslb.app")

Listeners = Sequence[trio.abc.Listener[Any]]


@dataclass(eq=False)
class _Served:
    """One frontend object and the gates it accepts through."""

    config: FrontendConfig
    frontend: frontends.Frontend
    gates: list[GateListener]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Balancer:
    """A running balancer, as `serve` hands it over.

    Attributes:
        config: the config in force.
        pools: live pools by name (the same dict across reloads).
        metrics: every series, on `metrics.registry`.
        states: where the members' check states come from.
        outcomes: where the frontends' traffic outcomes go.
        addresses: frontend name → bound (host, port).
        admin_address: the admin API's bound (host, port).
        stopped: set once a graceful stop has finished.
    """

    def __init__(
        self, config: Config, *, states: StateSource, outcomes: OutcomeSink,
        registry: CollectorRegistry, exposed: CollectorRegistry | None = None,
        frontends: bool = True, admin: bool = True, on_admin: AdminHook | None = None,
        on_reload: ReloadHook | None = None, reuse_port: bool = False,
        connector: frontends.Connector | None = None,
    ) -> None:
        self.config = config
        self.states, self.outcomes = states, outcomes
        self.pools = {name: Pool(pc) for name, pc in config.pools.items()}
        self.metrics = Metrics(registry, exposed=exposed, pools=lambda: self.pools,
                               last_check=states.last_result)
        self.guard = AcceptGuard(
            FdReserve(reserve_from_environment()),
            on_pause=self.metrics.accept_paused,
        )
        self._serves_frontends, self._serves_admin = frontends, admin
        self._declare_series(config)
        self._on_admin, self._on_reload, self._reuse_port = on_admin, on_reload, reuse_port
        self.addresses: dict[str, tuple[str, int]] = {}
        self.admin_address: tuple[str, int] | None = None
        self.stopped = trio.Event()
        self._connector = connector
        # What the running frontends and probes were built from (lb/renewal.py).
        self._digests = renewal.digests(config)
        self._served: dict[str, _Served] = {}
        self._sockets: list[trio.abc.Listener[Any]] = []
        self._stopping = trio.Event()
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<Balancer frontends={sorted(self._served)} pools={sorted(self.pools)}>"

    def active_connections(self) -> int:
        """Connections currently leased on any pool member."""
        return sum(m.active for pool in self.pools.values() for m in pool.members)

    @property
    def stopping(self) -> bool:
        """True once a graceful stop has begun."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Begin a graceful stop: refuse new connections, drain, then exit."""
        self._stopping.set()

    def _declare_series(self, config: Config) -> None:
        if self._serves_frontends:  # a supervisor sums its workers' series instead
            fes = config.frontends
            self.metrics.declare(
                (fe.name for fe in fes),
                ((p.name, s.name) for p in config.pools.values() for s in p.servers),
                ((fe.name, pool) for fe in fes for pool in fe.pool_names), known_refusals(fes))

    def _build(self, fe: FrontendConfig) -> frontends.Frontend:
        return build_frontend(fe, self.config, self.pools, connector=self._connector,
                              report=self.outcomes.report, metrics=self.metrics,
                              guard=self.guard)

    def _frontends(self, config: Config) -> Sequence[FrontendConfig]:
        return config.frontends if self._serves_frontends else ()

    async def _open(self, fe: FrontendConfig) -> Listeners:
        opened = await open_listeners(fe.host, fe.port, what=f"frontend {fe.name}",
                                      reuse_port=self._reuse_port)
        self._sockets.extend(opened)
        return opened

    async def _start(self, fe: FrontendConfig, sockets: Listeners) -> None:
        assert self._nursery is not None
        served = _Served(fe, self._build(fe), [GateListener(s) for s in sockets])
        address = bound_address(served.gates[0]) if served.gates else None
        if address is not None:
            self.addresses[fe.name] = address
        self._served[fe.name] = served
        await self._nursery.start(self._serve_frontend, served)

    @staticmethod
    async def _serve_frontend(served: _Served, *, task_status: trio.TaskStatus[None]) -> None:
        with served.scope:
            await served.frontend.serve(served.gates, task_status=task_status)

    async def _retire(self, served: _Served, *, close: bool) -> None:
        """Stop a frontend accepting; it ends when its last connection does."""
        assert self._nursery is not None
        for gate in served.gates:
            await gate.shut(close=close)
        self._nursery.start_soon(self._end_when_idle, served)

    async def _end_when_idle(self, served: _Served) -> None:
        async def wait_idle() -> None:
            # Polled: neither frontend kind signals the end of its last connection yet.
            while frontends.open_connections(
                served.frontend, parked_accepts=sum(gate.parked for gate in served.gates)
            ):
                await trio.sleep(0.5)

        try:
            await guarded(log, f"retired frontend {served.config.name}",
                          self.metrics.internal_error, wait_idle)
        finally:
            served.scope.cancel()  # a wait that failed must not keep the old frontend alive

    async def reload(self, config: Config) -> list[str]:
        """Apply a new config without dropping a connection, as `plan_reload` plans it;
        the certificate, key and CA files renewed on disk are loaded again (lb/renewal.py).

        Returns:
            What it could not apply (an admin listener change needs a restart).

        Raises:
            ValueError, OSError: a new frontend could not be built or bound; the
                frontends already replaced stay replaced, the rest is untouched.
        """
        digests = renewal.digests(config)
        renewed = renewal.renewed(self._digests, digests)
        plan = plan_reload(self.config, config,
                           {name: served.config for name, served in self._served.items()},
                           pools=self.pools, serve_frontends=self._serves_frontends,
                           renewed=renewed)
        if renewed:
            log.info("renewed on disk: %s", ", ".join(sorted(renewed)))
        forget_tls_contexts(renewed)  # the probes' CA files
        now = trio.current_time()
        for name in plan.reconfigure:
            self.pools[name].reconfigure(config.pools[name], now)
        for name in plan.add:
            self.pools[name] = Pool(config.pools[name])
        self.config = config
        for name in plan.retire:
            await self._retire(self._served.pop(name), close=True)
            self.addresses.pop(name, None)
        for fe in config.frontends:
            if fe.name in plan.start or fe.name in plan.replace:
                await self._replace(fe, reuse=fe.name in plan.reuse)
        for name in plan.remove:
            del self.pools[name]
        self.states.pools_changed()
        self._declare_series(config)
        # Only now: a frontend that failed to build loads its files again next time.
        self._digests = digests
        return list(plan.needs_restart)

    async def _replace(self, fe: FrontendConfig, *, reuse: bool) -> None:
        old = self._served.get(fe.name)
        if old is not None and reuse:
            sockets: Listeners = [gate.inner for gate in old.gates]
        else:
            sockets = await self._open(fe)
        await self._start(fe, sockets)
        if old is not None:
            await self._retire(old, close=not reuse)
        log.info("frontend %s %s", fe.name, "replaced" if old else "started")

    async def run(
        self,
        injected: Mapping[str, Listeners] | None,
        admin_listeners: Listeners | None,
        task_status: trio.TaskStatus[Balancer],
    ) -> None:
        """Serve until stopped; see `serve`."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for fe in self._frontends(self.config):
                    given = (injected or {}).get(fe.name)
                    if given is not None:
                        self._sockets.extend(given)
                    await self._start(fe, given if given is not None else await self._open(fe))
                await self._start_admin(admin_listeners)
                # Checks start once every port is ours: a start that fails on a
                # taken port has probed nobody (and logged no server's state).
                await nursery.start(self.states.run, self.pools, self.metrics)
                logs.log_serving(log, self.addresses, self.admin_address)
                task_status.started(self)
                await self._stopping.wait()
                await self._drain()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            # The app opened (or was handed) every listening socket, so it closes
            # them, whatever each frontend did with its own on cancellation.
            with trio.CancelScope(shield=True):
                for listener in self._sockets:
                    await trio.aclose_forcefully(listener)
        self.stopped.set()

    async def _start_admin(self, admin_listeners: Listeners | None) -> None:
        assert self._nursery is not None
        if not self._serves_admin:
            return
        admin = self.config.admin
        listen: Any = admin_listeners or (admin.host, admin.port)
        started = await self._nursery.start(
            lambda task_status: serve_admin(
                listen, pools=self.pools, metrics=self.metrics,
                last_check=self.states.last_result,
                check_progress=self.states.check_progress, token=admin.token,
                hosts=admin.names, on_admin=self._on_admin, on_reload=self._on_reload,
                on_internal_error=self.metrics.internal_error,
                guard=self.guard,
                task_status=task_status,
            )
        )
        if started:
            self.admin_address = bound_address(started[0])

    async def _drain(self) -> None:
        """Refuse new connections, then wait, at most `grace`, for leases to end."""
        for served in self._served.values():
            for gate in served.gates:
                await gate.shut(close=True)
        grace = self.config.grace
        log.info("stopping: new connections refused, %d open, grace %gs",
                 self.active_connections(), grace)
        with trio.move_on_after(grace if math.isfinite(grace) else 0):
            while self.active_connections():
                # A lease can start on one pool (an L7 retry) while another empties.
                for pool in list(self.pools.values()):
                    await pool.idle()
        left = self.active_connections()
        if left:
            log.warning("grace over: resetting %d connections", left)


async def serve(
    config: Config,
    *,
    states: StateSource | None = None,
    outcomes: OutcomeSink | None = None,
    frontends: bool = True,
    admin: bool = True,
    on_admin: AdminHook | None = None,
    on_reload: ReloadHook | None = None,
    listeners: Mapping[str, Listeners] | None = None,
    admin_listeners: Listeners | None = None,
    reuse_port: bool = False,
    connector: frontends.Connector | None = None,
    registry: CollectorRegistry | None = None,
    exposed: CollectorRegistry | None = None,
    task_status: trio.TaskStatus[Balancer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the balancer for `config` until cancelled or stopped.

    Args:
        config: the validated config.
        states: where check states come from; outcomes: where traffic
            outcomes go (lb/seams.py). Give both or neither: by default this
            process's own probes are both.
        frontends: serve the config's frontends (the supervisor does not).
        admin: serve the admin API (a worker does not).
        on_admin: told of every change made through the admin API.
        on_reload: what the admin API's `POST /reload` calls (none: no such route).
        listeners: frontend name → listeners to use instead of binding.
        admin_listeners: listeners for the admin API instead of binding.
        reuse_port: bind frontends with SO_REUSEPORT, so several processes
            share one address and the kernel spreads new connections.
        connector: opens upstream streams (tests inject memory streams).
        registry: where metrics go (a fresh registry by default).
        exposed: what /metrics serves (`registry` by default).
        task_status: started with the `Balancer` handle once everything accepts.

    Raises:
        TypeError: only one of `states` and `outcomes` given.
        ValueError: a frontend setting refused at start, naming the frontend.
        OSError: an address could not be bound.
    """
    if states is None and outcomes is None:
        states = outcomes = OwnProbes()
    if states is None or outcomes is None:
        raise TypeError("serve takes both a state source and an outcome sink, or neither")
    balancer = Balancer(
        config, states=states, outcomes=outcomes, registry=registry or CollectorRegistry(),
        exposed=exposed, frontends=frontends, admin=admin, on_admin=on_admin,
        on_reload=on_reload, reuse_port=reuse_port, connector=connector,
    )
    await balancer.run(listeners, admin_listeners, task_status)

