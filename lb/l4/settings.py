"""The settings an L4 frontend takes: its own, and one policy per pool it sends to.

lb/l4 never reads lb.config: lb/build.py maps the config tree onto these.
"""

from __future__ import annotations

from dataclasses import dataclass

from lb.retry import RetryPolicy, RetryTo

FIRST_FLIGHT_LIMIT = 16 * 1024


@dataclass(frozen=True)
class TcpFrontendSettings:
    """One L4 frontend (plain TCP or TLS passthrough, optionally SNI-routed).

    Attributes:
        name: the frontend's name (a metrics label).
        idle_timeout: seconds a connection may stay silent both ways, unless
            its pool's policy sets its own.
        max_connections: concurrent client connections; more are accepted and
            closed at once, and counted.
        sni_timeout: seconds an SNI frontend waits for the ClientHello before
            routing to its default pool.
        first_flight_limit: bytes of client data kept for replay before the
            server's first byte; past it the connection commits to its server.
        park_sweep: seconds between the parker's sweeps: a relay idle for one
            to two of them gives up its tasks (lb/l4/parking.py). Until then
            a relay costs its three tasks, so a burst of new connections peaks
            at that many times the sweep's length; a shorter sweep costs more
            wakes while relays run, and parks relays with shorter pauses.
    """

    name: str
    idle_timeout: float = 1800.0
    max_connections: int = 10_000
    sni_timeout: float = 5.0
    first_flight_limit: int = FIRST_FLIGHT_LIMIT
    park_sweep: float = 0.25

    def __post_init__(self) -> None:
        _positive("idle_timeout", self.idle_timeout)
        _positive("park_sweep", self.park_sweep)
        _positive("sni_timeout", self.sni_timeout)
        if self.max_connections < 1:
            raise ValueError(f"max_connections {self.max_connections!r} must be at least 1")
        if self.first_flight_limit < 1:
            raise ValueError(f"first_flight_limit {self.first_flight_limit!r} must be positive")


@dataclass(frozen=True)
class UpstreamPolicy:
    """How an L4 frontend treats one pool's servers.

    Attributes:
        connect_timeout: seconds to open one upstream connection.
        retries: further servers to try after a failed attempt (connect failure,
            silence past the first-response timeout, close before answering).
        first_response_timeout: seconds a server may stay silent after the
            connection opens (server_speaks_first) or after the client's latest
            first-flight bytes were forwarded; None for no bound.
        server_speaks_first: True for banner protocols (IMAP, POP, SMTP in clear).
        proxy_protocol: PROXY protocol version to send (1 or 2), 0 for none.
        idle_timeout: overrides the frontend's idle timeout when set.
        retry_to: which server a retry goes to (another, the same, or off).
        transparent: connect from the client's address (lb/dial.py).
    """

    connect_timeout: float = 2.0
    retries: int = 3
    first_response_timeout: float | None = None
    server_speaks_first: bool = False
    proxy_protocol: int = 0
    idle_timeout: float | None = None
    retry_to: RetryTo = RetryTo.ANOTHER
    transparent: bool = False

    @property
    def retry(self) -> RetryPolicy:
        """Its retries and where they go."""
        return RetryPolicy(self.retries, self.retry_to)

    def __post_init__(self) -> None:
        _positive("connect_timeout", self.connect_timeout)
        if self.first_response_timeout is not None:
            _positive("first_response_timeout", self.first_response_timeout)
        if self.idle_timeout is not None:
            _positive("idle_timeout", self.idle_timeout)
        if self.retries < 0:
            raise ValueError(f"retries {self.retries!r} must not be negative")
        if self.proxy_protocol not in (0, 1, 2):
            raise ValueError(f"proxy_protocol {self.proxy_protocol!r} is not 0, 1 or 2")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} {value!r} must be positive")
