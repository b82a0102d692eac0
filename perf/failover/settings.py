"""One run's settings: probe timing shared by every design, phases, client model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from perf.failover.clients import ClientTimeouts, LoadMix
from perf.failover.model import KEPT_ALIVE, NTLM_EWS


@dataclass(frozen=True)
class ProbeSettings:
    """Health-check timing every balancer design gets, in seconds.

    The same numbers go into HAProxy (`inter`, `fastinter`, `downinter`, `rise`,
    `fall`, `timeout check`, `timeout connect`, `retries`) and into caslb's
    config, so differences come from the designs, not their tuning.
    """

    inter: float = 1.0
    fastinter: float = 0.25
    downinter: float = 1.0
    rise: int = 2
    fall: int = 2
    timeout: float = 1.0
    connect_timeout: float = 1.0
    retries: int = 3


@dataclass(frozen=True)
class Phases:
    """How long each phase of a scenario lasts, in seconds."""

    before: float = 8.0
    fault: float = 10.0
    after: float = 8.0

    @property
    def total(self) -> float:
        """The whole load duration."""
        return self.before + self.fault + self.after


FULL_MIX = LoadMix(
    clients={
        "owa": 4,
        KEPT_ALIVE: 9,
        NTLM_EWS: 6,
        "autodiscover": 2,
        "mapi": 2,
        "eas": 2,
        "rpc": 1,
        "imap": 1,
        "pop": 1,
        "smtp": 1,
    },
    long_poll=2.0,
    channel_life=4.0,
    new_connections_per_second=40.0,
)
QUICK_MIX = LoadMix(
    clients={
        "owa": 2, KEPT_ALIVE: 6, NTLM_EWS: 3, "autodiscover": 1, "mapi": 1, "eas": 1, "rpc": 1,
        "imap": 1,
    },
    long_poll=1.0,
    channel_life=2.0,
    new_connections_per_second=40.0,
)


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the designs and faults it covers.

    Attributes:
        probes: shared health-check timing.
        phases: scenario phases.
        mix: the client mix.
        timeouts: the clients' own timeouts; `connect` models the client OS.
        slow_seconds: latency the slow fault adds.
        sample_every: how often the balancer's choice is read.
        quick: True for the CI smoke variant.
        health_cache_delay: seconds before the farm shows a component change
            (Exchange: up to 15; 0 compares the designs' own detection).
    """

    probes: ProbeSettings
    phases: Phases
    mix: LoadMix
    timeouts: ClientTimeouts
    slow_seconds: float = 2.0
    sample_every: float = 0.1
    quick: bool = False
    health_cache_delay: float = 0.0

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view, for the results file."""
        return dataclasses.asdict(self)


FULL = RunSettings(
    probes=ProbeSettings(),
    phases=Phases(before=4.0, fault=10.0, after=6.0),
    mix=FULL_MIX,
    timeouts=ClientTimeouts(connect=21.0, request=10.0, long_poll=5.0, think=0.25, handshake=5.0),
)
# --quick scales the Windows 21 s connect timeout down to 3 s so a scenario
# fits in seconds; the DNS figures it gives are then optimistic by that factor.
# Its 3 s handshake timeout lets a new connection begun during the 4 s fault
# end (answered or timed out) before the load stops.
QUICK = RunSettings(
    probes=ProbeSettings(),
    phases=Phases(before=2.0, fault=4.0, after=3.0),
    mix=QUICK_MIX,
    timeouts=ClientTimeouts(connect=3.0, request=5.0, long_poll=3.0, think=0.25, handshake=3.0),
    quick=True,
)
