"""Every event series caslb records, declared in one table, built on one registry.

Each row names a series by what it counts; `build_series` registers them all
on the registry it is given (never the global one) and wraps each in a
`Series`, which keeps the child per label values so the data paths skip
prometheus_client's validation and lock after the first use.

Names follow HAProxy's exporter with the `caslb_` prefix: `frontend`, `pool`
and `server` levels, `code` as a status class, base units, and histograms
with buckets chosen for what they time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "caslb_"

CHECK_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
CONNECT_TIME_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
# Long polls (EAS Ping, MAPI NotificationWait, EWS streaming) are normal traffic,
# so the request histogram reaches an hour instead of stopping at 10 s.
REQUEST_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0, 900.0, 3600.0,
)
DETECTION_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

INTERNAL_ERROR_PLACES = ("l4", "l7", "admin", "probe", "task")
"""Where an unexpected error can end a unit of work: each is exported at 0 from the start."""

FE = ("frontend",)
SRV = ("pool", "server")
CHK = ("server", "protocol")


@dataclass(frozen=True)
class SeriesSpec:
    """One series: its name after the prefix, help text, labels, and buckets if a histogram."""

    name: str
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


COUNTERS: Mapping[str, SeriesSpec] = {
    "fe_connections": SeriesSpec("frontend_connections", "Accepted client connections.", FE),
    "fe_bytes_in": SeriesSpec("frontend_bytes_in", "Bytes received from clients.", FE),
    "fe_bytes_out": SeriesSpec("frontend_bytes_out", "Bytes sent to clients.", FE),
    "fe_tls_failures": SeriesSpec(
        "frontend_tls_handshake_failures", "Failed client TLS handshakes.", FE),
    "fe_refused": SeriesSpec(
        "frontend_refused_connections", "Clients turned away (reason: no_server, limit).",
        (*FE, "pool", "reason")),
    "fe_requests": SeriesSpec(
        "frontend_http_requests",
        "HTTP requests by how they ended (complete, client_abort, no_server, ...).",
        (*FE, "protocol", "termination")),
    "fe_responses": SeriesSpec(
        "frontend_http_responses", "HTTP responses sent to clients by status class.",
        (*FE, "protocol", "code")),
    "srv_bytes_in": SeriesSpec("server_bytes_in", "Bytes relayed to the server.", SRV),
    "srv_bytes_out": SeriesSpec("server_bytes_out", "Bytes relayed from the server.", SRV),
    "srv_connect_errors": SeriesSpec(
        "server_connection_errors", "Failed upstream connects.", SRV),
    "srv_retries": SeriesSpec("server_retries", "Attempts retried after failing here.", SRV),
    "srv_redispatches": SeriesSpec(
        "server_redispatches", "Connections moved elsewhere.", SRV),
    "srv_first_response_timeouts": SeriesSpec(
        "server_first_response_timeouts", "Attempts abandoned for silence (L4).", SRV),
    "srv_reuses": SeriesSpec(
        "server_connection_reuses",
        "Requests that took an idle upstream connection another client connection left (L7).",
        SRV),
    "srv_replays": SeriesSpec(
        "server_replays", "First flights replayed onto this server (L4).", SRV),
    "srv_ejections": SeriesSpec(
        "server_ejections", "Ejections by outlier detection, by rule.", (*SRV, "reason")),
    "srv_responses": SeriesSpec(
        "server_http_responses", "HTTP responses from the server by status class.",
        (*SRV, "code")),
    "check_results": SeriesSpec(
        "server_check_results", "Health check results by reason.", (*CHK, "reason")),
    "check_up_down": SeriesSpec("server_check_up_down", "Transitions from UP to DOWN.", CHK),
    "check_inconclusive": SeriesSpec(
        "server_check_inconclusive",
        "Checks that timed out while caslb itself was too late to judge (not held against"
        " the server).", CHK),
    "internal_errors": SeriesSpec(
        "internal_errors",
        "Units of work (a connection, a probe, a task) ended by an error caslb did not expect.",
        ("where",)),
    "accept_paused": SeriesSpec(
        "accept_paused",
        "Times a listener paused accepting for lack of resources (emfile, enfile, enobufs, "
        "enomem) or to keep the fd reserve (fd_reserve).", ("listener", "reason")),
}
"""Counters: key → series (prometheus_client adds `_total`)."""

HISTOGRAMS: Mapping[str, SeriesSpec] = {
    "request_duration": SeriesSpec(
        "http_request_duration_seconds", "Time from request head to end of response.",
        (*FE, "protocol"), REQUEST_DURATION_BUCKETS),
    "srv_connect_time": SeriesSpec(
        "server_connect_time_seconds",
        "Time to open an upstream connection (TCP, and TLS if any).", SRV, CONNECT_TIME_BUCKETS),
    "check_duration": SeriesSpec(
        "server_check_duration_seconds", "Duration of health checks.", CHK,
        CHECK_DURATION_BUCKETS),
    "detection_latency": SeriesSpec(
        "server_detection_latency_seconds",
        "Time from the start of the first failed check to DOWN.", CHK,
        DETECTION_LATENCY_BUCKETS),
}
"""Histograms: key → series."""

GAUGES: Mapping[str, SeriesSpec] = {
    # Opened minus closed, counted as the events happen: a worker process ships
    # it with its counters, and the supervisor adds the workers' up.
    "fe_current": SeriesSpec("frontend_current_connections", "Open client connections.", FE),
    "srv_idle": SeriesSpec(
        "server_idle_connections",
        "Upstream connections parked idle for any client connection (L7).", SRV),
}
"""Gauges moved by events (state read from its owner lives in lb/metrics/collectors.py)."""


_M = TypeVar("_M", Counter, Gauge, Histogram)


class Series(Generic[_M]):
    """A labelled metric whose child per label values is looked up once, then kept.

    prometheus_client's `labels()` validates the values and takes a lock on
    every call (about 1.4 us here); the data paths count several series per
    request or connection, always for the same few frontend/pool/server
    combinations. No series is ever removed, so a kept child never goes stale.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: _M) -> None:
        self.metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def labels(self, *values: str) -> _M:
        """The child for `values` (as `metric.labels(*values)`)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


@dataclass(frozen=True)
class EventSeries:
    """The series of the three tables, registered on one registry."""

    counters: Mapping[str, Series[Counter]]
    histograms: Mapping[str, Series[Histogram]]
    gauges: Mapping[str, Series[Gauge]]


def build_series(registry: CollectorRegistry) -> EventSeries:
    """Register every series of the tables on `registry`."""
    return EventSeries(
        counters={key: Series(Counter(PREFIX + s.name, s.doc, s.labels, registry=registry))
                  for key, s in COUNTERS.items()},
        histograms={key: Series(Histogram(PREFIX + s.name, s.doc, s.labels,
                                          buckets=s.buckets, registry=registry))
                    for key, s in HISTOGRAMS.items()},
        gauges={key: Series(Gauge(PREFIX + s.name, s.doc, s.labels, registry=registry))
                for key, s in GAUGES.items()},
    )
