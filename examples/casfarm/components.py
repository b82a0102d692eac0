"""Exchange server component states, as a pure model.

Theory of operation (docs/exchange.md §2.4): each server keeps one timestamped entry
per (component, requester). A requester's newest entry wins over its older ones;
the effective state of a component is Inactive if any requester says Inactive,
else Draining if any says Draining, else Active (no entries: Active).
ServerWideOffline gates everything: when it is not Active every healthcheck.htm
fails. Draining still counts as online for a health check.

IIS worker processes re-read component state at most every 15 s, so a change
shows on the wire only after a delay. `HealthCache` models that: it remembers
the recent history of states and answers "what did the health responder see at
time t", given the configured delay. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

_E = TypeVar("_E", bound=enum.Enum)


def _parse(kind: type[_E], what: str, value: str | _E) -> _E:
    if isinstance(value, kind):
        return value
    wanted = str(value).lower()
    for member in kind:
        if member.value.lower() == wanted:
            return member
    known = ", ".join(m.value for m in kind)
    raise ValueError(f"unknown {what} {value!r} (known: {known})")


class ComponentState(enum.Enum):
    """The state a requester sets on a component."""

    ACTIVE = "Active"
    INACTIVE = "Inactive"
    DRAINING = "Draining"

    @classmethod
    def parse(cls, value: str | ComponentState) -> ComponentState:
        """Parse a state name case-insensitively.

        Raises:
            ValueError: naming the bad value and the known ones.
        """
        return _parse(cls, "component state", value)


class Requester(enum.Enum):
    """Who set a component state (Set-ServerComponentState -Requester)."""

    HEALTH_API = "HealthApi"
    MAINTENANCE = "Maintenance"
    SIDELINED = "Sidelined"
    FUNCTIONAL = "Functional"
    DEPLOYMENT = "Deployment"

    @classmethod
    def parse(cls, value: str | Requester) -> Requester:
        """Parse a requester name case-insensitively.

        Raises:
            ValueError: naming the bad value and the known ones.
        """
        return _parse(cls, "requester", value)


class Component(enum.Enum):
    """The front-end components the farm simulates."""

    OWA_PROXY = "OwaProxy"
    ECP_PROXY = "EcpProxy"
    EWS_PROXY = "EwsProxy"
    AUTODISCOVER_PROXY = "AutoDiscoverProxy"
    ACTIVESYNC_PROXY = "ActiveSyncProxy"
    OAB_PROXY = "OabProxy"
    RPC_PROXY = "RpcProxy"
    MAPI_PROXY = "MapiProxy"
    RPS_PROXY = "RpsProxy"
    IMAP_PROXY = "ImapProxy"
    POP_PROXY = "PopProxy"
    FRONTEND_TRANSPORT = "FrontendTransport"
    HUB_TRANSPORT = "HubTransport"
    SERVER_WIDE_OFFLINE = "ServerWideOffline"

    @classmethod
    def parse(cls, value: str | Component) -> Component:
        """Parse a component name case-insensitively.

        Raises:
            ValueError: naming the bad value and the known ones.
        """
        return _parse(cls, "component", value)


@dataclass(frozen=True)
class Entry:
    """One requester's word on one component."""

    state: ComponentState
    timestamp: float


_Key = tuple[Component, Requester]


@dataclass(frozen=True)
class ComponentStates:
    """Every (component, requester) entry of one server; immutable.

    Attributes:
        entries: the newest entry per (component, requester).
    """

    entries: MappingProxyType[_Key, Entry] = field(default_factory=lambda: MappingProxyType({}))

    def set(
        self,
        component: Component,
        state: ComponentState,
        requester: Requester,
        at: float,
    ) -> ComponentStates:
        """A copy with `requester`'s entry for `component` set at time `at`.

        An entry older than the one already stored loses, as in Exchange where
        the newest timestamp per requester wins.
        """
        key = (component, requester)
        old = self.entries.get(key)
        if old is not None and old.timestamp > at:
            return self
        entries = dict(self.entries)
        entries[key] = Entry(state, at)
        return ComponentStates(MappingProxyType(entries))

    def effective(self, component: Component) -> ComponentState:
        """The component's effective state (docs/exchange.md §2.4)."""
        said = {e.state for (c, _), e in self.entries.items() if c is component}
        if ComponentState.INACTIVE in said:
            return ComponentState.INACTIVE
        if ComponentState.DRAINING in said:
            return ComponentState.DRAINING
        return ComponentState.ACTIVE

    def server_online(self) -> bool:
        """True unless ServerWideOffline is Inactive or Draining."""
        return self.effective(Component.SERVER_WIDE_OFFLINE) is ComponentState.ACTIVE

    def healthcheck_passes(self, component: Component) -> bool:
        """Whether healthcheck.htm of a vdir gated by `component` answers 200.

        ServerWideOffline not Active fails every health check; otherwise the
        component passes unless it is Inactive (Draining is still online).
        """
        if not self.server_online():
            return False
        return self.effective(component) is not ComponentState.INACTIVE

    def accepts_sessions(self, component: Component) -> bool:
        """Whether a mail service (IMAP, POP, SMTP) takes new work.

        Mail services stop when their component or ServerWideOffline is Inactive.
        """
        inactive = ComponentState.INACTIVE
        return (
            self.effective(Component.SERVER_WIDE_OFFLINE) is not inactive
            and self.effective(component) is not inactive
        )

    def accepts_mail(self) -> bool:
        """Whether SMTP takes a new transaction (MAIL FROM).

        Besides FrontendTransport and ServerWideOffline, transport must not be
        draining: maintenance drains HubTransport first (docs/exchange.md §2.5),
        and a server whose transport drains takes no new messages.
        """
        return (
            self.accepts_sessions(Component.FRONTEND_TRANSPORT)
            and self.effective(Component.HUB_TRANSPORT) is ComponentState.ACTIVE
        )

    def describe(self) -> dict[str, dict[str, object]]:
        """A JSON-ready view: effective state and requesters of every component."""
        out: dict[str, dict[str, object]] = {}
        for component in Component:
            requesters = {
                r.value: e.state.value for (c, r), e in self.entries.items() if c is component
            }
            out[component.value] = {
                "state": self.effective(component).value,
                "requesters": requesters,
            }
        return out


@dataclass(frozen=True)
class HealthCache:
    """What a health responder sees when it re-reads states only every `delay` s.

    The cache keeps the states recorded in the last `delay` seconds plus the one
    in force just before them, so `visible(now)` can answer for any `now` not
    earlier than the newest record.

    Attributes:
        delay: seconds before a change shows (0: at once).
        history: (time, states) records, oldest first.
    """

    delay: float = 0.0
    history: tuple[tuple[float, ComponentStates], ...] = ((float("-inf"), ComponentStates()),)

    def __post_init__(self) -> None:
        if not self.delay >= 0.0:
            raise ValueError(f"health cache delay must be >= 0, got {self.delay!r}")

    def record(self, states: ComponentStates, now: float) -> HealthCache:
        """A copy that knows `states` took effect at `now`, history pruned."""
        horizon = now - self.delay
        kept = [h for h in self.history if h[0] > horizon]
        older = [h for h in self.history if h[0] <= horizon]
        if older:
            kept.insert(0, older[-1])
        kept.append((now, states))
        return HealthCache(self.delay, tuple(kept))

    def visible(self, now: float) -> ComponentStates:
        """The states the health responder acts on at time `now`."""
        horizon = now - self.delay
        seen = self.history[0][1]
        for at, states in self.history:
            if at <= horizon:
                seen = states
        return seen

    @property
    def current(self) -> ComponentStates:
        """The newest recorded states, before any delay."""
        return self.history[-1][1]
