"""What one scenario records: client requests and samples of the balancer's choice.

Times are seconds since the scenario's load started, on the harness's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The protocol names of the "new connections" load (a TLS handshake and one OWA
# GET per connection) and of the kept-alive OWA clients (one connection for as
# long as it works), and the protocol whose pool the balancer picks for each.
NEW_CONNECTIONS = "owa-new"
KEPT_ALIVE = "owa-kept"
# Outlook-style EWS clients that log on with NTLM once per connection
# (perf.failover.ntlmclient); the farm authenticates EWS when they run.
NTLM_EWS = "ews-ntlm"
CHOSEN_AS = {NEW_CONNECTIONS: "owa", KEPT_ALIVE: "owa", NTLM_EWS: "ews"}


@dataclass(frozen=True)
class RequestRecord:
    """One client request (or mail transaction) and how it ended.

    Attributes:
        protocol: catalog name of the protocol (owa, ews, imap, ...), or
            NEW_CONNECTIONS for the one-GET connections.
        started: when the client began the request (or its connection).
        finished: when the client saw the answer or gave up.
        server: the CAS server that answered (X-FEServer or mail banner), or None.
        error: None on success, else a short kind ("reset", "timeout", "http 503").
    """

    protocol: str
    started: float
    finished: float
    server: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the client got the answer it wanted."""
        return self.error is None


@dataclass(frozen=True)
class AuthAttempt:
    """One request of an authenticating client, with the logons it cost.

    Attributes:
        client: which client (its index in the mix).
        started: when the request began.
        finished: when it was answered or given up.
        served: answered as the user (neither refused nor failed).
        logons: NTLM handshakes run for it (0 on a connection already logged on).
        refused: 401s refusing it or its handshake (a CHALLENGE is not one).
    """

    client: int
    started: float
    finished: float
    served: bool
    logons: int
    refused: int


@dataclass(frozen=True)
class ChoiceSample:
    """One reading of the balancer: is the faulty server still chosen, per protocol.

    Attributes:
        at: when the reading was taken.
        chosen: protocol name -> True while the balancer may pick the faulty server.
    """

    at: float
    chosen: Mapping[str, bool]


@dataclass(frozen=True)
class Timeline:
    """The fixed phases of a scenario.

    Attributes:
        fault_at: when the fault began to be injected.
        clear_at: when the fault was cleared.
        end_at: when the load stopped.
        in_force_at: when the injection had taken effect (a request that started
            between `fault_at` and this may still have been served by the server).
    """

    fault_at: float
    clear_at: float
    end_at: float
    in_force_at: float = -1.0

    def __post_init__(self) -> None:
        if self.in_force_at < 0:
            object.__setattr__(self, "in_force_at", self.fault_at)
        if not 0 <= self.fault_at <= self.in_force_at <= self.clear_at < self.end_at:
            raise ValueError(f"bad timeline {self.fault_at}/{self.clear_at}/{self.end_at}")


@dataclass(frozen=True)
class ScenarioRecord:
    """Everything raw one scenario produced, before any figure is computed.

    Attributes:
        design: design name (dns-rr, haproxy-tcp, caslb-l7, ...).
        fault: fault name (crash, blackhole, ...).
        faulty: the server the fault was injected into.
        servers: every server of the farm.
        timeline: when the fault began and ended.
        requests: every finished client request.
        samples: readings of the balancer's choice (empty without a balancer).
        farm_counts: per server request counts read from the farm at fault,
            clear and end (keys "fault", "clear", "end").
        notes: free-text remarks about how this scenario was run.
        auth: the requests of the authenticating clients, logons counted.
    """

    design: str
    fault: str
    faulty: str
    servers: tuple[str, ...]
    timeline: Timeline
    requests: tuple[RequestRecord, ...]
    samples: tuple[ChoiceSample, ...]
    farm_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    auth: tuple[AuthAttempt, ...] = ()
