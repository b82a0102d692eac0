"""Prometheus metrics for caslb.

Theory of operation:

Two kinds of numbers leave the balancer, and they are kept apart on purpose.

* **Events** (a connection accepted, bytes relayed, a connect error, a check
  result, a 5xx) are counted the moment they happen by calling a method on
  `Metrics`. Frontends, connectors and the probe runner hold a `Metrics` (or
  anything with the same methods: each of them declares the `typing.Protocol`
  it needs) and never touch prometheus_client themselves.
* **State** (is a server UP, DOWN, DRAIN or MAINT; how many members of a pool
  are healthy; is the pool panicking; the last check's reason) is never copied
  into gauges. A custom collector, `PoolCollector`, reads the pools when
  Prometheus scrapes, so a scrape can never show a state the pool no longer
  has, and a reload that swaps the pools needs no bookkeeping here.

Names follow HAProxy's exporter (`*_server_status{state=...}` one-hot series,
`frontend`/`pool`/`server` levels, `code` as a status class) with the
`caslb_` prefix, base units and real histograms instead of averages.

Who calls what: `lb.l4.frontend.L4Events` is `frontend_connection_opened/closed`,
`refused`, `bytes_relayed`, `server_connected`, `connect_failed`, `retried`,
`redispatched`, `first_response_timeout`, `replayed`; `lb.l7.events.L7Events`
is `request_finished`, `retried`, `ejected`, `tls_handshake_failed`; the probe
runner's subscriber is `on_probe`. Both Protocols are checked against this
class in tests/unit/test_metrics.py.

Everything hangs off an injected `CollectorRegistry`: two `Metrics` objects
never share a series, so tests build their own and nothing is global.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from lb.l7.events import RequestRecord
from lb.pool import Member, Pool
from probes.catalog import protocol_for_path
from probes.checks import CheckResult
from probes.outlier import Ejection
from probes.state import AdminState, Transition

PREFIX = "caslb_"

SERVER_STATES: tuple[str, ...] = ("UP", "DOWN", "DRAIN", "MAINT")
"""The values of the one-hot `state` label of `caslb_server_status`."""

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


PoolSource = Callable[[], Mapping[str, Pool]]
"""Returns the live pools by name; called at every scrape."""

LastCheckLookup = Callable[[str, str], CheckResult | None]
"""`(pool, server)` → the last `CheckResult` of the check that pool uses, or None."""


_M = TypeVar("_M", Counter, Gauge, Histogram)


class _Series(Generic[_M]):
    """A labelled metric whose child per label values is looked up once, then kept.

    prometheus_client's `labels())` validates the values and takes a lock on
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


@functools.lru_cache(maxsize=4096)
def _protocol_label(path: str) -> str:
    """The `protocol` label of a request path (memoised: most paths repeat)."""
    found = protocol_for_path(path)
    return found.name if found else "other"


def code_class(status: int) -> str:
    """HAProxy's `code` label: `1xx`..`5xx`, or `other` for anything outside 100-599."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def server_state(member: Member) -> str:
    """The one `state` of `caslb_server_status` that is 1 for `member`.

    Admin state wins over health, as in HAProxy: a server in maintenance reads
    MAINT whatever its checks say, a drained one DRAIN.
    """
    if member.admin is not AdminState.READY:
        return member.admin.name
    return member.check_state.name


def state_name(value: Any) -> str:
    """The name of an enum member (`CheckState.UP` → `UP`), or `str(value)` upper-cased."""
    return str(value.name) if isinstance(value, enum.Enum) else str(value).upper()


def check_labels(key: Hashable) -> tuple[str, str]:
    """`(server, check)` label values for a probe key.

    Accepts the runner's key as an object with `server` and `protocol` (or
    `check`) attributes, or as a `(server, check)` pair.

    Raises:
        ValueError: naming the key when it has neither shape.
    """
    server = getattr(key, "server", None)
    check = getattr(key, "protocol", None) or getattr(key, "check", None)
    if server is not None and check is not None:
        return str(server), str(getattr(check, "name", check))
    if isinstance(key, tuple) and len(key) == 2:
        return str(key[0]), str(key[1])
    raise ValueError(f"unrecognised probe key {key!r}: want (server, check)")


class PoolCollector:
    """Reads pool and member state at scrape time (a prometheus custom collector).

    Args:
        pools: returns the current pools by name.
        last_check: `(pool, server)` → last check result, or None when unknown.
    """

    def __init__(self, pools: PoolSource, last_check: LastCheckLookup | None = None) -> None:
        self._pools = pools
        self._last_check = last_check

    def describe(self) -> Iterable[Metric]:
        """The families this collector owns, without samples (for collision checks)."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        """One consistent read of every pool."""
        status, check, weight, eligible, active, total = self._server_families()
        pool_active, pool_servers, panic = self._pool_families()
        for pool in self._pools().values():
            n_eligible = 0
            for m in pool.members:
                labels = [pool.name, m.name]
                current = server_state(m)
                for s in SERVER_STATES:
                    status.add_metric([*labels, s], 1.0 if s == current else 0.0)
                self._add_check_status(check, pool.name, m.name)
                weight.add_metric(labels, float(m.weight))
                eligible.add_metric(labels, 1.0 if m.eligible else 0.0)
                active.add_metric(labels, float(m.active))
                total.add_metric(labels, float(m.total))
                n_eligible += 1 if m.eligible else 0
            pool_active.add_metric([pool.name], float(n_eligible))
            pool_servers.add_metric([pool.name], float(len(pool.members)))
            panic.add_metric([pool.name], 1.0 if pool.panicking else 0.0)
        yield from (status, check, weight, eligible, active, total)
        yield from (pool_active, pool_servers, panic)

    def _add_check_status(self, family: GaugeMetricFamily, pool: str, server: str) -> None:
        result = self._last_check(pool, server) if self._last_check else None
        if result is None:
            return
        # One-hot over every value of the result's own Reason enum, so a new
        # reason added in probes shows up here without a change.
        for reason in type(result.reason):
            family.add_metric(
                [pool, server, reason.name], 1.0 if reason is result.reason else 0.0
            )

    def _families(self) -> Iterator[Metric]:
        yield from self._server_families()
        yield from self._pool_families()

    @staticmethod
    def _server_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
                                    GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        labels = ["pool", "server"]
        return (
            GaugeMetricFamily(
                PREFIX + "server_status",
                "Server status, one-hot over state (UP, DOWN, DRAIN, MAINT).",
                labels=[*labels, "state"],
            ),
            GaugeMetricFamily(
                PREFIX + "server_check_status",
                "Reason of the last health check, one-hot over state.",
                labels=[*labels, "state"],
            ),
            GaugeMetricFamily(PREFIX + "server_weight", "Configured weight.", labels=labels),
            GaugeMetricFamily(
                PREFIX + "server_eligible",
                "1 when the server may take new connections.",
                labels=labels,
            ),
            GaugeMetricFamily(
                PREFIX + "server_current_connections",
                "Connections currently open to the server.",
                labels=labels,
            ),
            CounterMetricFamily(
                PREFIX + "server_connections_total",
                "Connections opened to the server.",
                labels=labels,
            ),
        )

    @staticmethod
    def _pool_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                PREFIX + "pool_active_servers",
                "Members of the pool currently eligible for traffic.",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                PREFIX + "pool_servers", "Members configured in the pool.", labels=["pool"]
            ),
            GaugeMetricFamily(
                PREFIX + "pool_panic",
                "1 while the pool routes to all members because too few are healthy.",
                labels=["pool"],
            ),
        )


class Metrics:
    """Every caslb series, on one injected registry.

    Frontends, connectors and the probe runner call the event methods below;
    pool state is read live through `watch_pools`.

    Args:
        registry: where every series is registered; never the global one.
        now: the clock for check timing (`trio.current_time` by default, so a
            mock clock drives detection latency in tests).
    """

    def __init__(
        self, registry: CollectorRegistry, *, now: Callable[[], float] | None = None
    ) -> None:
        self.registry = registry
        self._now = now or _trio_now
        self._pools: PoolSource = dict
        self._first_failure: dict[tuple[str, str], float] = {}
        self._last_results: dict[tuple[str, str], CheckResult] = {}
        self._frontend_current: dict[str, int] = {}
        registry.register(PoolCollector(lambda: self._pools(), self._lookup_last_check))
        self._build_frontend_series(registry)
        self._build_server_series(registry)
        self._build_check_series(registry)

    # -- wiring ---------------------------------------------------------------

    def watch_pools(self, pools: PoolSource) -> None:
        """Read these pools at every scrape (call again after a reload to swap them).

        Args:
            pools: returns the current pools by name.
        """
        self._pools = pools

    def last_result(self, server: str, check: str) -> CheckResult | None:
        """The last check result seen by `on_probe` for `(server, check)`, or None."""
        return self._last_results.get((server, check))

    def frontend_connections(self) -> dict[str, int]:
        """Current connections per frontend, for the status document."""
        return dict(self._frontend_current)

    def _lookup_last_check(self, pool: str, server: str) -> CheckResult | None:
        # lb/health.py keys probes ProbeKey(server, pool): the check is named after the pool.
        return self._last_results.get((server, pool))

    # -- frontend events ------------------------------------------------------

    def frontend_connection_opened(self, frontend: str) -> None:
        """A client connection was accepted on `frontend`."""
        self._frontend_current[frontend] = self._frontend_current.get(frontend, 0) + 1
        self._fe_current.labels(frontend).inc()
        self._fe_total.labels(frontend).inc()

    def frontend_connection_closed(self, frontend: str) -> None:
        """A client connection on `frontend` ended (whatever the cause)."""
        left = max(0, self._frontend_current.get(frontend, 0) - 1)
        self._frontend_current[frontend] = left
        self._fe_current.labels(frontend).set(left)

    def tls_handshake_failed(self, frontend: str, reason: str = "") -> None:
        """A client's TLS handshake on `frontend` failed or stalled (`reason` is for logs)."""
        self._fe_tls_failures.labels(frontend).inc()

    def refused(self, frontend: str, pool: str, reason: str) -> None:
        """A client was turned away: `reason` is `no_server` or `limit`."""
        self._fe_refused.labels(frontend, pool, reason).inc()

    def bytes_relayed(
        self, frontend: str, pool: str, server: str, *, to_server: int, to_client: int
    ) -> None:
        """Count relayed bytes: `to_server` is request direction (HAProxy's `bytes_in`)."""
        if to_server:
            self._fe_bytes_in.labels(frontend).inc(to_server)
            self._srv_bytes_in.labels(pool, server).inc(to_server)
        if to_client:
            self._fe_bytes_out.labels(frontend).inc(to_client)
            self._srv_bytes_out.labels(pool, server).inc(to_client)

    def request_finished(self, record: RequestRecord) -> None:
        """An HTTP request ended (`lb.l7.events.RequestRecord`): count it everywhere.

        The `protocol` label comes from the request path through the Exchange
        catalog (`/EWS/...` → `ews`), `other` when no virtual directory matches.
        """
        frontend, pool, server = record.frontend, record.pool or "", record.server or ""
        protocol = _protocol_label(record.path)
        code = code_class(record.status) if record.status is not None else "other"
        termination = state_name(record.termination).lower()
        self._fe_requests.labels(frontend, protocol, termination).inc()
        if record.status is not None:
            self._fe_responses.labels(frontend, protocol, code).inc()
            if server:
                self._srv_responses.labels(pool, server, code).inc()
        self._request_duration.labels(frontend, protocol).observe(record.duration)
        if termination == "no_server":
            self.refused(frontend, pool, "no_server")
        if server:
            self.bytes_relayed(
                frontend, pool, server, to_server=record.bytes_in, to_client=record.bytes_out
            )
        else:
            self._fe_bytes_in.labels(frontend).inc(record.bytes_in)
            self._fe_bytes_out.labels(frontend).inc(record.bytes_out)

    # -- server events --------------------------------------------------------

    def server_connected(self, pool: str, server: str, seconds: float) -> None:
        """An upstream connection to `server` opened after `seconds`."""
        self._srv_connect_time.labels(pool, server).observe(seconds)

    def connect_failed(self, pool: str, server: str) -> None:
        """An upstream connect to `server` failed (refused, reset, timeout, TLS)."""
        self._srv_connect_errors.labels(pool, server).inc()

    def retried(self, pool: str, server: str, reason: str = "") -> None:
        """An attempt on `server` failed (`reason`: connect, upstream_error, ...) and is retried."""
        self._srv_retries.labels(pool, server).inc()

    def redispatched(self, pool: str, server: str) -> None:
        """A connection that failed on `server` was sent to another server."""
        self._srv_redispatches.labels(pool, server).inc()

    def first_response_timeout(self, pool: str, server: str) -> None:
        """`server` stayed silent past the first-response timeout (L4)."""
        self._srv_first_response_timeouts.labels(pool, server).inc()

    def replayed(self, pool: str, server: str) -> None:
        """The client's first flight was replayed onto `server` (L4)."""
        self._srv_replays.labels(pool, server).inc()

    def ejected(self, pool: str, ejection: Ejection) -> None:
        """Outlier detection ejected a server from `pool` (`probes.outlier.Ejection`)."""
        self._srv_ejections.labels(pool, ejection.server, ejection.reason).inc()

    # -- probe events ---------------------------------------------------------

    def on_probe(
        self, key: Hashable, result: CheckResult | None, transition: Transition | None
    ) -> None:
        """Subscriber for `ProbeRunner.subscribe`: a check result and/or a transition.

        Detection latency runs from the start of the first failed check after
        a success to the transition to DOWN, so it includes the check timeout
        a black-holed server costs.
        """
        server, check = check_labels(key)
        if result is not None:
            self._record_result(server, check, result)
        if transition is not None:
            self._record_transition(server, check, transition)

    def _record_result(self, server: str, check: str, result: CheckResult) -> None:
        self._last_results[(server, check)] = result
        self._check_duration.labels(server, check).observe(result.duration)
        self._check_results.labels(server, check, state_name(result.reason)).inc()
        if result.ok:
            self._first_failure.pop((server, check), None)
        else:
            started = self._now() - result.duration
            self._first_failure.setdefault((server, check), started)

    def _record_transition(self, server: str, check: str, transition: Transition) -> None:
        if state_name(transition.new) != "DOWN":
            return
        if state_name(transition.old) == "UP":
            self._check_up_down.labels(server, check).inc()
        started = self._first_failure.pop((server, check), None)
        if started is not None:
            latency = max(0.0, float(transition.at) - started)
            self._detection_latency.labels(server, check).observe(latency)

    # -- series ---------------------------------------------------------------

    def _build_frontend_series(self, r: CollectorRegistry) -> None:
        fe = ["frontend"]
        self._fe_current = _Series(Gauge(
            PREFIX + "frontend_current_connections", "Open client connections.", fe, registry=r
        ))
        self._fe_total = _Series(Counter(
            PREFIX + "frontend_connections", "Accepted client connections.", fe, registry=r
        ))
        self._fe_bytes_in = _Series(Counter(
            PREFIX + "frontend_bytes_in", "Bytes received from clients.", fe, registry=r
        ))
        self._fe_bytes_out = _Series(Counter(
            PREFIX + "frontend_bytes_out", "Bytes sent to clients.", fe, registry=r
        ))
        self._fe_tls_failures = _Series(Counter(
            PREFIX + "frontend_tls_handshake_failures",
            "Failed client TLS handshakes.", fe, registry=r,
        ))
        self._fe_refused = _Series(Counter(
            PREFIX + "frontend_refused_connections",
            "Clients turned away (reason: no_server, limit).",
            [*fe, "pool", "reason"], registry=r,
        ))
        self._fe_requests = _Series(Counter(
            PREFIX + "frontend_http_requests",
            "HTTP requests by how they ended (complete, client_abort, no_server, ...).",
            [*fe, "protocol", "termination"], registry=r,
        ))
        self._fe_responses = _Series(Counter(
            PREFIX + "frontend_http_responses",
            "HTTP responses sent to clients by status class.",
            [*fe, "protocol", "code"], registry=r,
        ))
        self._request_duration = _Series(Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time from request head to end of response.",
            [*fe, "protocol"], buckets=REQUEST_DURATION_BUCKETS, registry=r,
        ))

    def _build_server_series(self, r: CollectorRegistry) -> None:
        srv = ["pool", "server"]

        def counter(name: str, doc: str) -> _Series[Counter]:
            return _Series(Counter(PREFIX + "server_" + name, doc, srv, registry=r))

        self._srv_bytes_in = counter("bytes_in", "Bytes relayed to the server.")
        self._srv_bytes_out = counter("bytes_out", "Bytes relayed from the server.")
        self._srv_connect_errors = counter("connection_errors", "Failed upstream connects.")
        self._srv_retries = counter("retries", "Attempts retried after failing here.")
        self._srv_redispatches = counter("redispatches", "Connections moved elsewhere.")
        self._srv_first_response_timeouts = counter(
            "first_response_timeouts", "Attempts abandoned for silence (L4)."
        )
        self._srv_replays = counter("replays", "First flights replayed onto this server (L4).")
        self._srv_ejections = _Series(Counter(
            PREFIX + "server_ejections", "Ejections by outlier detection, by rule.",
            [*srv, "reason"], registry=r,
        ))
        self._srv_responses = _Series(Counter(
            PREFIX + "server_http_responses",
            "HTTP responses from the server by status class.",
            [*srv, "code"], registry=r,
        ))
        self._srv_connect_time = _Series(Histogram(
            PREFIX + "server_connect_time_seconds",
            "Time to open an upstream connection (TCP, and TLS if any).",
            srv, buckets=CONNECT_TIME_BUCKETS, registry=r,
        ))

    def _build_check_series(self, r: CollectorRegistry) -> None:
        chk = ["server", "protocol"]
        self._check_duration = _Series(Histogram(
            PREFIX + "server_check_duration_seconds",
            "Duration of health checks.", chk, buckets=CHECK_DURATION_BUCKETS, registry=r,
        ))
        self._check_results = _Series(Counter(
            PREFIX + "server_check_results",
            "Health check results by reason.", [*chk, "reason"], registry=r,
        ))
        self._check_up_down = _Series(Counter(
            PREFIX + "server_check_up_down", "Transitions from UP to DOWN.", chk, registry=r
        ))
        self._detection_latency = _Series(Histogram(
            PREFIX + "server_detection_latency_seconds",
            "Time from the start of the first failed check to DOWN.",
            chk, buckets=DETECTION_LATENCY_BUCKETS, registry=r,
        ))


def _trio_now() -> float:
    return trio.current_time()
