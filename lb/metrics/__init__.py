"""Prometheus metrics for caslb: events recorded as they happen, state read from its owners.

Theory of operation:

Two kinds of numbers leave the balancer, and they are kept apart on purpose.

* **Events** (a connection accepted, bytes relayed, a connect error, a check
  result, a 5xx) are counted the moment they happen by calling a method on
  `Metrics`. Frontends, connectors and the health wiring hold a `Metrics` (or
  anything with the same methods: each of them declares the `typing.Protocol`
  it needs) and never touch prometheus_client themselves. Every series comes
  from one declarative table, lb/metrics/series.py.
* **State** (server and check status, pool gauges) is never copied into
  Metrics: `lb.metrics.collectors.PoolCollector` reads it at scrape time from
  the sources given at construction, the pools and the health wiring's last
  check results.

Who calls what: `lb.l4.events.L4Events` is `frontend_connection_opened/closed`,
`refused`, `bytes_relayed`, `server_connected`, `connect_failed`, `retried`,
`redispatched`, `first_response_timeout`, `replayed`; `lb.l7.events.L7Events`
is `request_finished`, `retried`, `ejected`, `tls_handshake_failed`; the health
wiring's subscriber is `on_probe`. Both Protocols are checked against this
class in tests/unit/test_metrics.py.

Everything hangs off the `CollectorRegistry` chosen at construction: two
`Metrics` objects never share a series, so tests build their own and nothing
is global. What the admin API's /metrics serves is `exposed`, the same
registry unless another was given at construction (the supervisor of
`caslb run --workers N` exposes its own series with its workers' added).
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Callable, Iterable

import trio
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)

from lb.l7.events import RequestRecord, Termination
from lb.metrics.collectors import (
    SERVER_STATES,
    LastCheckLookup,
    PoolCollector,
    PoolSource,
    no_check_results,
    pools_clock,
    server_state,
)
from lb.metrics.series import INTERNAL_ERROR_PLACES, PREFIX, build_series
from lb.seams import ProbeKey
from probes.catalog import protocol_for_path
from probes.checks import CheckResult
from probes.outlier import EJECTION_RULES, Ejection
from probes.state import CheckState, Transition

__all__ = [
    "PREFIX", "SERVER_STATES", "LastCheckLookup", "Metrics", "PoolCollector", "PoolSource",
    "code_class", "server_state",
]


@functools.lru_cache(maxsize=4096)
def _protocol_label(path: str) -> str:
    """The `protocol` label of a request path (memoised: most paths repeat)."""
    found = protocol_for_path(path)
    return found.name if found else "other"


def code_class(status: int) -> str:
    """HAProxy's `code` label: `1xx`..`5xx`, or `other` for anything outside 100-599."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def _version() -> str:
    try:
        return importlib.metadata.version("caslb")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


_FRONTEND_COUNTERS = ("fe_connections", "fe_bytes_in", "fe_bytes_out", "fe_tls_failures")
_SERVER_COUNTERS = ("srv_bytes_in", "srv_bytes_out", "srv_connect_errors", "srv_retries",
                    "srv_redispatches", "srv_first_response_timeouts", "srv_replays", "srv_reuses")
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


class Metrics:
    """Every caslb event series, and the state collector, on one registry.

    Args:
        registry: where every series is registered; never the global one, and
            never replaced afterwards.
        exposed: what /metrics serves (`registry` by default); a registry
            whose collectors read `registry`, never one holding its series.
        pools: returns the live pools by name, read at every scrape (none by default).
        last_check: `(pool, server)` → the last check result, read at every
            scrape (lb.health.HealthWiring.last_result; none by default).
        now: the clock for check timing and the ejections read at scrape time
            (`trio.current_time` by default, so a mock clock drives detection
            latency in tests).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        exposed: CollectorRegistry | None = None,
        pools: PoolSource = dict,
        last_check: LastCheckLookup = no_check_results,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self.exposed = registry if exposed is None else exposed
        self._now = now or _trio_now
        self._first_failure: dict[ProbeKey, float] = {}
        self._frontend_current: dict[str, int] = {}
        registry.register(PoolCollector(pools, last_check, now or pools_clock))
        series = build_series(registry)
        self._counters, self._histograms = series.counters, series.histograms
        self._fe_current = series.gauges["fe_current"]
        self._srv_idle = series.gauges["srv_idle"]
        for where in INTERNAL_ERROR_PLACES:
            self._counters["internal_errors"].labels(where)
        # `_created` samples appear only once a child exists and double the
        # scrape; Prometheus ignores them unless asked (as HAProxy exports none).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
        build = Gauge(PREFIX + "build_info", "caslb's version and Python's; always 1.",
                      ["version", "python"], registry=registry)
        build.labels(_version(), platform.python_version()).set(1)

    def declare(
        self,
        frontends: Iterable[str],
        members: Iterable[tuple[str, str]],
        routes: Iterable[tuple[str, str]] = (),
        refusals: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Export at 0 every series the config makes known: a labelled counter is
        absent until its first event otherwise, and `rate()` panels and alerts
        over it say "no data" instead of 0 (and never see the first event: a
        series born at 1 has no increase).

        Args:
            frontends: frontend names.
            members: (pool, server) pairs.
            routes: (frontend, pool) pairs, each pool a frontend can send to.
            refusals: (frontend, reason) pairs refused before any pool (an L4
                frontend's "limit", an SNI frontend's "no_route").
        """
        for fe in frontends:
            self._fe_current.labels(fe)
            for key in _FRONTEND_COUNTERS:
                self._counters[key].labels(fe)
        for fe, pool in routes:
            self._counters["fe_refused"].labels(fe, pool, "no_server")
        for fe, reason in refusals:
            self._counters["fe_refused"].labels(fe, "", reason)
        for pool, server in members:
            for key in _SERVER_COUNTERS:
                self._counters[key].labels(pool, server)
            self._srv_idle.labels(pool, server)
            for code in _STATUS_CLASSES:
                self._counters["srv_responses"].labels(pool, server, code)
            for rule in EJECTION_RULES:
                self._counters["srv_ejections"].labels(pool, server, rule)
            self._histograms["srv_connect_time"].labels(pool, server)
            for key in ("check_up_down", "check_inconclusive"):
                self._counters[key].labels(server, pool)
            for key in ("check_duration", "detection_latency"):
                self._histograms[key].labels(server, pool)

    def frontend_connections(self) -> dict[str, int]:
        """Current connections per frontend, as counted from the events."""
        return dict(self._frontend_current)

    # -- frontend events ------------------------------------------------------

    def internal_error(self, where: str) -> None:
        """A unit of work at `where` (see INTERNAL_ERROR_PLACES) ended on an unexpected error."""
        self._counters["internal_errors"].labels(where).inc()

    def accept_paused(self, listener: str, reason: str) -> None:
        """`listener` paused accepting (lb/listeners.py): out of fds or buffers, or the
        fd reserve reached."""
        self._counters["accept_paused"].labels(listener, reason).inc()

    def frontend_connection_opened(self, frontend: str) -> None:
        """A client connection was accepted on `frontend`."""
        self._frontend_current[frontend] = self._frontend_current.get(frontend, 0) + 1
        self._fe_current.labels(frontend).inc()
        self._counters["fe_connections"].labels(frontend).inc()

    def frontend_connection_closed(self, frontend: str) -> None:
        """A client connection on `frontend` ended (whatever the cause)."""
        left = max(0, self._frontend_current.get(frontend, 0) - 1)
        self._frontend_current[frontend] = left
        self._fe_current.labels(frontend).set(left)

    def tls_handshake_failed(self, frontend: str, reason: str = "") -> None:
        """A client's TLS handshake on `frontend` failed or stalled (`reason` is for logs)."""
        self._counters["fe_tls_failures"].labels(frontend).inc()

    def refused(self, frontend: str, pool: str, reason: str) -> None:
        """A client was turned away: `reason` is `no_server` or `limit`."""
        self._counters["fe_refused"].labels(frontend, pool, reason).inc()

    def bytes_relayed(
        self, frontend: str, pool: str, server: str, *, to_server: int, to_client: int
    ) -> None:
        """Count relayed bytes: `to_server` is request direction (HAProxy's `bytes_in`)."""
        if to_server:
            self._counters["fe_bytes_in"].labels(frontend).inc(to_server)
            self._counters["srv_bytes_in"].labels(pool, server).inc(to_server)
        if to_client:
            self._counters["fe_bytes_out"].labels(frontend).inc(to_client)
            self._counters["srv_bytes_out"].labels(pool, server).inc(to_client)

    def request_finished(self, record: RequestRecord) -> None:
        """An HTTP request ended (`lb.l7.events.RequestRecord`): count it everywhere.

        The `protocol` label comes from the request path through the Exchange
        catalog (`/EWS/...` → `ews`), `other` when no virtual directory matches.
        """
        frontend, pool, server = record.frontend, record.pool or "", record.server or ""
        protocol = _protocol_label(record.path)
        code = code_class(record.status) if record.status is not None else "other"
        termination = record.termination.name.lower()
        self._counters["fe_requests"].labels(frontend, protocol, termination).inc()
        if record.status is not None:
            self._counters["fe_responses"].labels(frontend, protocol, code).inc()
            if server:
                self._counters["srv_responses"].labels(pool, server, code).inc()
        self._histograms["request_duration"].labels(frontend, protocol).observe(record.duration)
        if record.termination is Termination.NO_SERVER:
            self.refused(frontend, pool, "no_server")
        if server:
            self.bytes_relayed(
                frontend, pool, server, to_server=record.bytes_in, to_client=record.bytes_out
            )
        else:
            self._counters["fe_bytes_in"].labels(frontend).inc(record.bytes_in)
            self._counters["fe_bytes_out"].labels(frontend).inc(record.bytes_out)

    # -- server events --------------------------------------------------------

    def server_connected(self, pool: str, server: str, seconds: float) -> None:
        """An upstream connection to `server` opened after `seconds`."""
        self._histograms["srv_connect_time"].labels(pool, server).observe(seconds)

    def connect_failed(self, pool: str, server: str) -> None:
        """An upstream connect to `server` failed (refused, reset, timeout, TLS)."""
        self._counters["srv_connect_errors"].labels(pool, server).inc()

    def connection_reused(self, pool: str, server: str) -> None:
        """A request took an idle upstream connection to `server` another client left."""
        self._counters["srv_reuses"].labels(pool, server).inc()

    def idle_changed(self, pool: str, server: str, delta: int) -> None:
        """The parked upstream connections to `server` changed by `delta`."""
        self._srv_idle.labels(pool, server).inc(delta)

    def retried(self, pool: str, server: str, reason: str = "") -> None:
        """An attempt on `server` failed (`reason`: connect, upstream_error, ...) and is retried."""
        self._counters["srv_retries"].labels(pool, server).inc()

    def redispatched(self, pool: str, server: str) -> None:
        """A connection that failed on `server` was sent to another server."""
        self._counters["srv_redispatches"].labels(pool, server).inc()

    def first_response_timeout(self, pool: str, server: str) -> None:
        """`server` stayed silent past the first-response timeout (L4)."""
        self._counters["srv_first_response_timeouts"].labels(pool, server).inc()

    def replayed(self, pool: str, server: str) -> None:
        """The client's first flight was replayed onto `server` (L4)."""
        self._counters["srv_replays"].labels(pool, server).inc()

    def ejected(self, pool: str, ejection: Ejection) -> None:
        """Outlier detection ejected a server from `pool` (`probes.outlier.Ejection`)."""
        self._counters["srv_ejections"].labels(pool, ejection.server, ejection.reason).inc()

    # -- probe events ---------------------------------------------------------

    def on_probe(
        self, key: ProbeKey, result: CheckResult | None, transition: Transition | None
    ) -> None:
        """Subscriber for `HealthWiring.subscribe`: a check result and/or a transition.

        The check series are labelled `server` and `protocol`, the latter the
        name of the pool the probe checks for (`ProbeKey.pool`). Detection
        latency runs from the start of the first failed check after a success
        to the transition to DOWN, so it includes the check timeout a
        black-holed server costs.
        """
        if result is not None:
            self._record_result(key, result)
        if transition is not None:
            self._record_transition(key, transition)

    def check_inconclusive(self, key: ProbeKey) -> None:
        """A check of `key` timed out only because the balancer was late (probes.lag)."""
        self._counters["check_inconclusive"].labels(key.server, key.pool).inc()

    def _record_result(self, key: ProbeKey, result: CheckResult) -> None:
        labels = (key.server, key.pool)
        self._histograms["check_duration"].labels(*labels).observe(result.duration)
        self._counters["check_results"].labels(*labels, result.reason.name).inc()
        if result.ok:
            self._first_failure.pop(key, None)
        else:
            self._first_failure.setdefault(key, self._now() - result.duration)

    def _record_transition(self, key: ProbeKey, transition: Transition) -> None:
        if transition.new is not CheckState.DOWN:
            return
        labels = (key.server, key.pool)
        if transition.old is CheckState.UP:
            self._counters["check_up_down"].labels(*labels).inc()
        started = self._first_failure.pop(key, None)
        if started is not None:
            latency = max(0.0, float(transition.at) - started)
            self._histograms["detection_latency"].labels(*labels).observe(latency)


def _trio_now() -> float:
    return trio.current_time()
