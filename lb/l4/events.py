"""What an L4 connection reports: the counters it feeds and its connection log record.

`L4Events` is the counters' interface (lb.metrics.Metrics implements it). The
frontend owns one `ConnectionRecord` per accepted connection and fills it as
the connection goes (routed, connected, relayed, ended); `log_connection` writes
it once at the end, to the `caslb.access` logger beside the HTTP access log, and
lb/accesslog.py formats it. The termination states are HAProxy's two letters:
who ended the connection (C client, S server, P proxy, K the balancer's own
reset, c/s a timeout on the client or server side) and in which phase
(R before routing, C while connecting, D while relaying).
"""

from __future__ import annotations

import time
from typing import Protocol

import trio

from lb.l7.events import access_log_on, write_access

NORMAL = "--"
NO_ROUTE = "PR"  # no SNI route and no default
NO_SERVER = "SC"  # every server refused, reset or was down
CONNECT_TIMEOUT = "sC"
OUT_OF_RESOURCES = "PC"  # the balancer's own fds or buffers
SERVER_SILENT = "sD"  # silent past the first-response timeout, nothing left to try
RESET_BY_POOL = "KD"  # DOWN with reset, maintenance, or the drain grace
IDLE_TIMEOUT = "cD"
CLIENT_ABORT = "CC"  # gone before the server answered
CLIENT_ERROR = "CD"
INTERNAL_ERROR = "PD"


class L4Events(Protocol):
    """The counters an L4 frontend feeds; lb.metrics.Metrics implements them."""

    def frontend_connection_opened(self, frontend: str) -> None: ...
    def frontend_connection_closed(self, frontend: str) -> None: ...
    def refused(self, frontend: str, pool: str, reason: str) -> None: ...
    def bytes_relayed(
        self, frontend: str, pool: str, server: str, *, to_server: int, to_client: int
    ) -> None: ...
    def server_connected(self, pool: str, server: str, seconds: float) -> None: ...
    def connect_failed(self, pool: str, server: str) -> None: ...
    def retried(self, pool: str, server: str, reason: str = "") -> None: ...
    def redispatched(self, pool: str, server: str) -> None: ...
    def first_response_timeout(self, pool: str, server: str) -> None: ...
    def replayed(self, pool: str, server: str) -> None: ...
    def internal_error(self, where: str) -> None: ...


class ConnectionRecord:
    """One L4 connection, filled in by its frontend and logged when it ends.

    Attributes:
        client, client_port: the client's address ("-" and 0 when unknown).
        accepted: wall-clock time (epoch seconds) of the accept.
        frontend, pool, server: where it went (None: not that far).
        t_connect: seconds to connect to the server that took it (-1: none did).
        t_total: seconds from the accept to the end (set when logged).
        bytes_read: bytes sent to the client (HAProxy's %B).
        termination: one of this module's two-letter states.
        retries: attempts after the first.
        fe_conn, be_conn, srv_conn: the frontend's, pool's and server's
            connections when the server was chosen (the frontend's at the end
            when no server was).
    """

    __slots__ = ("accepted", "be_conn", "bytes_read", "client", "client_port", "fe_conn",
                 "frontend", "pool", "retries", "server", "srv_conn", "started", "t_connect",
                 "t_total", "termination")

    def __init__(self, frontend: str, client: tuple[str, int] | None) -> None:
        self.client, self.client_port = client if client is not None else ("-", 0)
        self.accepted = time.time()
        self.started = trio.current_time()
        self.frontend = frontend
        self.pool: str | None = None
        self.server: str | None = None
        self.t_connect = self.t_total = -1.0
        self.bytes_read = 0
        self.termination = NORMAL
        self.retries = 0
        self.fe_conn = self.be_conn = self.srv_conn = 0



def log_connection(record: ConnectionRecord) -> None:
    """Write the tcplog line for `record` (logger `caslb.access`, lb.accesslog's format)."""
    if access_log_on():
        record.t_total = trio.current_time() - record.started
        write_access((record.client, record.frontend, record.termination), {"tcp": record})
