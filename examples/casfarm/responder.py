"""Managed Availability's offline and online responders, as a pure model.

Theory of operation (docs/exchange.md §2.2): on every Exchange server, Managed
Availability probes each front-end protocol locally (`https://localhost/<vdir>`)
every 15 s. A monitor counts consecutive failed probes; at 3 it fires. If the
protocol is still failing 7 minutes later, the offline responder sets the
protocol's component (EwsProxy, OwaProxy...) Inactive with requester HealthApi,
so that its healthcheck.htm fails and the load balancer takes the server out for
that protocol alone. It holds back when fewer than (N+1)/2 servers would stay in
service for that component. Once the probes pass again, the component is set
Active again by the same requester.

casfarm runs the same loop, with times a lab can wait for (`ResponderPolicy`).
A local probe of a vdir passes unless a fault would fail a real request to it:
its app pool stopped, an `errors` fault on it, a hang, or a slowness longer
than the probe interval. The responder lifts only what it set itself: another
requester's Inactive (Maintenance) is not its to clear. `step` decides; the farm
(casfarm.farm) probes, applies the actions and logs them. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from casfarm.components import Component, ComponentState, ComponentStates
from casfarm.faults import FaultKind, FaultSet, request_failure
from casfarm.vdirs import VDIRS, Vdir

_HANGS = (FaultKind.HANG, FaultKind.HANG_TLS)


@dataclass(frozen=True)
class ResponderPolicy:
    """How the farm's Managed Availability behaves.

    Attributes:
        probe_interval: seconds between local probes of every protocol (Exchange: 15).
        failures: consecutive failed probes that fire the monitor (Exchange: 3).
        offline_after: seconds from the monitor firing to the offline responder
            acting, if the protocol still fails (Exchange: 420).
    """

    probe_interval: float = 15.0
    failures: int = 3
    offline_after: float = 420.0

    def __post_init__(self) -> None:
        if not self.probe_interval > 0:
            raise ValueError(f"probe_interval must be positive, got {self.probe_interval!r}")
        if self.failures < 1:
            raise ValueError(f"failures must be at least 1, got {self.failures!r}")
        if not self.offline_after >= 0:
            raise ValueError(f"offline_after must be >= 0, got {self.offline_after!r}")


LAB_POLICY = ResponderPolicy(probe_interval=2.0, failures=3, offline_after=10.0)
"""`caslb farm`'s default: a failing protocol is taken out about 16 s after it broke."""


@dataclass(frozen=True)
class Monitor:
    """One protocol's monitor on one server.

    Attributes:
        failed: consecutive failed probes.
        fired_at: when `failed` reached the threshold (None: healthy).
        offlined: the responder set the component Inactive and has not lifted it.
    """

    failed: int = 0
    fired_at: float | None = None
    offlined: bool = False


@dataclass(frozen=True)
class Action:
    """A component state the responder sets, with requester HealthApi."""

    server: str
    component: Component
    state: ComponentState
    reason: str


@dataclass(frozen=True)
class ServerView:
    """What the responder knows of one server at a probe round.

    Attributes:
        name: cas1...
        faults: its faults (a crashed server runs no probes at all).
        states: its component states as set (not as the health cache shows them).
    """

    name: str
    faults: FaultSet
    states: ComponentStates = field(default_factory=ComponentStates)

    @property
    def running(self) -> bool:
        """Whether Managed Availability runs on it (a crashed server runs nothing)."""
        return not self.faults.has(FaultKind.CRASH)


def local_probe_passes(faults: FaultSet, vdir: Vdir, probe_timeout: float) -> bool:
    """Whether a local MA probe of `vdir` passes under `faults`."""
    if faults.find(FaultKind.APP_POOL_STOPPED, vdir) is not None:
        return False
    if request_failure(faults, vdir) is not None:
        return False
    if any(faults.has(kind) for kind in _HANGS):
        return False
    return faults.added_latency() < probe_timeout


_Key = tuple[str, Component]


def step(
    policy: ResponderPolicy,
    monitors: Mapping[_Key, Monitor],
    servers: Iterable[ServerView],
    now: float,
) -> tuple[dict[_Key, Monitor], list[Action]]:
    """One probe round over the farm: the monitors after it and what to set.

    Args:
        policy: the responder's timing.
        monitors: every (server, component) monitor from the last round.
        servers: the farm's servers, each with its faults and component states.
        now: the time of this round.
    """
    views = list(servers)
    after = dict(monitors)
    actions: list[Action] = []
    for vdir in VDIRS:
        component = vdir.component
        in_service = {v.name for v in views if v.running and v.states.healthcheck_passes(component)}
        quorum = (len(views) + 1) // 2
        for view in (v for v in views if v.running):
            key = (view.name, component)
            monitor = after.get(key, Monitor())
            if local_probe_passes(view.faults, vdir, policy.probe_interval):
                if monitor.offlined:
                    actions.append(Action(view.name, component, ComponentState.ACTIVE,
                                          f"{vdir.path} local probes pass again"))
                after[key] = Monitor()
                continue
            failed = monitor.failed + 1
            fired_at = monitor.fired_at
            if fired_at is None and failed >= policy.failures:
                fired_at = now
            monitor = replace(monitor, failed=failed, fired_at=fired_at)
            due = fired_at is not None and now - fired_at >= policy.offline_after
            stays = len(in_service - {view.name})
            if due and not monitor.offlined and stays >= quorum:
                in_service.discard(view.name)
                actions.append(Action(view.name, component, ComponentState.INACTIVE,
                                      f"{failed} local probes of {vdir.path} failed"))
                monitor = replace(monitor, offlined=True)
            after[key] = monitor
    return after, actions
