"""What the L7 proxy tells the outside world: metrics events, passive reports, access log.

The proxy depends only on the `L7Events` protocol; `lb.metrics` (or a test's
`RecordingEvents`) implements it. Passive health reports go through a plain
callback `report(pool, server, ok, reason)` so the probe side can feed its own
state machine without the proxy knowing about it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from probes.outlier import Ejection

access_log = logging.getLogger("caslb.access")

Report = Callable[[str, str, bool, str], None]
"""report(pool, server, ok, reason): one passive observation of a server."""


class Termination(enum.Enum):
    """How a request ended, for the access log and metrics (HAProxy's termination state)."""

    COMPLETE = "complete"
    CLIENT_ABORT = "client_abort"  # the client went away or broke the protocol mid-exchange
    UPSTREAM_ERROR = "upstream_error"  # reset, EOF or protocol error from the server
    UPSTREAM_TIMEOUT = "upstream_timeout"  # no response head within the response timeout
    IDLE_TIMEOUT = "idle_timeout"  # a body stalled past the protocol's idle timeout
    SERVER_RESET = "server_reset"  # the pool reset the lease (server DOWN or drain deadline)
    NO_SERVER = "no_server"
    NO_ROUTE = "no_route"
    BAD_REQUEST = "bad_request"
    HEADER_TIMEOUT = "header_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"


@dataclass(frozen=True)
class RequestLog:
    """The access log's extra view of a request (HAProxy httplog fields).

    Times are seconds; a phase that did not happen is -1, as in HAProxy.

    Attributes:
        client_port: the client's source port.
        accepted: wall-clock time (epoch seconds) the request's wait began.
        t_request: waiting for the request head: from the end of the previous
            exchange, or from the TLS handshake (HAProxy's Ti + TR).
        t_connect: opening the upstream connection (0 when one was reused).
        t_response: from sending the request to the response head.
        version: the HTTP version, e.g. "1.1".
        host: the Host header, or "".
        user_agent: the User-Agent header, or "".
        fe_conn: the frontend's open client connections.
        be_conn: the pool's open upstream connections.
        srv_conn: the server's open upstream connections.
    """

    client_port: int
    accepted: float
    t_request: float
    t_connect: float
    t_response: float
    version: str
    host: str
    user_agent: str
    fe_conn: int
    be_conn: int
    srv_conn: int


@dataclass(frozen=True)
class RequestRecord:
    """One finished request, as logged and counted.

    Attributes:
        frontend: the frontend's name.
        client: the client's address.
        method: the request method.
        path: the request path without its query string.
        pool: the pool it was routed to, if any.
        server: the server that answered, if any.
        status: the status sent to the client, or None if none was.
        bytes_in: request body bytes received from the client.
        bytes_out: response body bytes sent to the client.
        duration: seconds from the request head to the end of the exchange.
        termination: how it ended.
        retries: how many times another server was tried.
        log: what only the access log reads (None for a refusal without a request).
    """

    frontend: str
    client: str
    method: str
    path: str
    pool: str | None
    server: str | None
    status: int | None
    bytes_in: int
    bytes_out: int
    duration: float
    termination: Termination
    retries: int = 0
    log: RequestLog | None = None

    @property
    def status_class(self) -> str:
        """`1xx`..`5xx`, or `other` (HAProxy's `code` label)."""
        if self.status is None or not 100 <= self.status <= 599:
            return "other"
        return f"{self.status // 100}xx"


class L7Events(Protocol):
    """The events the L7 proxy emits; metrics implement this."""

    def request_finished(self, record: RequestRecord) -> None:
        """A request ended (any way); count it by pool, server and status class."""

    def retried(self, pool: str, server: str, reason: str) -> None:
        """A request left `server` for another one because of `reason`."""

    def ejected(self, pool: str, ejection: Ejection) -> None:
        """Outlier detection ejected a server from `pool`."""

    def tls_handshake_failed(self, frontend: str, reason: str) -> None:
        """A client's TLS handshake failed or stalled."""

    def internal_error(self, where: str) -> None:
        """A connection ended on an error caslb did not expect (a bug)."""

    def frontend_connection_opened(self, frontend: str) -> None:
        """A client connection was accepted."""

    def frontend_connection_closed(self, frontend: str) -> None:
        """A client connection ended."""

    def server_connected(self, pool: str, server: str, seconds: float) -> None:
        """An upstream connection opened after `seconds` (TCP, and TLS if any)."""

    def connect_failed(self, pool: str, server: str) -> None:
        """An upstream connect failed."""

    def connection_reused(self, pool: str, server: str) -> None:
        """A request took an idle upstream connection another client connection left."""

    def idle_changed(self, pool: str, server: str, delta: int) -> None:
        """The parked upstream connections to `server` changed by `delta` (lb.l7.sharing)."""


class NullEvents:
    """An `L7Events` that drops everything."""

    def request_finished(self, record: RequestRecord) -> None:
        """Ignore."""

    def retried(self, pool: str, server: str, reason: str) -> None:
        """Ignore."""

    def ejected(self, pool: str, ejection: Ejection) -> None:
        """Ignore."""

    def tls_handshake_failed(self, frontend: str, reason: str) -> None:
        """Ignore."""

    def internal_error(self, where: str) -> None:
        """Ignore."""

    def frontend_connection_opened(self, frontend: str) -> None:
        """Ignore."""

    def frontend_connection_closed(self, frontend: str) -> None:
        """Ignore."""

    def server_connected(self, pool: str, server: str, seconds: float) -> None:
        """Ignore."""

    def connect_failed(self, pool: str, server: str) -> None:
        """Ignore."""

    def connection_reused(self, pool: str, server: str) -> None:
        """Ignore."""

    def idle_changed(self, pool: str, server: str, delta: int) -> None:
        """Ignore."""


@dataclass
class RecordingEvents:
    """An `L7Events` that keeps everything, for tests and debugging."""

    requests: list[RequestRecord] = field(default_factory=list)
    retries: list[tuple[str, str, str]] = field(default_factory=list)
    ejections: list[tuple[str, Ejection]] = field(default_factory=list)
    handshake_failures: list[tuple[str, str]] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)
    connections: list[tuple[str, str]] = field(default_factory=list)
    connects: list[tuple[str, str, bool]] = field(default_factory=list)
    reuses: list[tuple[str, str]] = field(default_factory=list)
    idle: dict[tuple[str, str], int] = field(default_factory=dict)

    def request_finished(self, record: RequestRecord) -> None:
        """Keep the record."""
        self.requests.append(record)

    def retried(self, pool: str, server: str, reason: str) -> None:
        """Keep the retry."""
        self.retries.append((pool, server, reason))

    def ejected(self, pool: str, ejection: Ejection) -> None:
        """Keep the ejection."""
        self.ejections.append((pool, ejection))

    def tls_handshake_failed(self, frontend: str, reason: str) -> None:
        """Keep the failure."""
        self.handshake_failures.append((frontend, reason))

    def internal_error(self, where: str) -> None:
        """Keep where it happened."""
        self.internal_errors.append(where)

    def frontend_connection_opened(self, frontend: str) -> None:
        """Keep ("opened", frontend)."""
        self.connections.append(("opened", frontend))

    def frontend_connection_closed(self, frontend: str) -> None:
        """Keep ("closed", frontend)."""
        self.connections.append(("closed", frontend))

    def server_connected(self, pool: str, server: str, seconds: float) -> None:
        """Keep (pool, server, True)."""
        self.connects.append((pool, server, True))

    def connect_failed(self, pool: str, server: str) -> None:
        """Keep (pool, server, False)."""
        self.connects.append((pool, server, False))

    def connection_reused(self, pool: str, server: str) -> None:
        """Keep (pool, server)."""
        self.reuses.append((pool, server))

    def idle_changed(self, pool: str, server: str, delta: int) -> None:
        """Keep the count per (pool, server)."""
        self.idle[pool, server] = self.idle.get((pool, server), 0) + delta


def access_log_on() -> bool:
    """Whether access log lines are written (else their fields are not gathered)."""
    return access_log.isEnabledFor(logging.INFO)


def write_access(summary: tuple[object, object, object], extra: dict[str, object]) -> None:
    """Write one `caslb.access` line (the formatters of lb.logs render `extra`'s record).

    makeRecord + handle is logger.info without its stack walk to find the caller's
    source line, which no caslb format prints: paid per request and connection.
    """
    access_log.handle(access_log.makeRecord(
        access_log.name, logging.INFO, __file__, 0, "%s %s %s", summary, None, extra=extra))


def log_access(record: RequestRecord) -> None:
    """Write the access log line for `record` (logger `caslb.access`, lb.accesslog's format)."""
    if access_log_on():
        write_access((record.client, record.method, record.path), {"http": record})
