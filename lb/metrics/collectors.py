"""State read live at scrape time from its owners (prometheus custom collectors).

State (is a server UP, DOWN, DRAIN or MAINT; is it ejected by outlier
detection; how many members of a pool are healthy; is the pool panicking; the
last check's reason) is never copied into gauges. `PoolCollector` reads the
pools, and the health wiring's last check results, when Prometheus scrapes, so
a scrape can never show a state its owner no longer has, and a reload that
swaps the pools needs no bookkeeping here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import trio
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from lb.metrics.series import PREFIX
from lb.pool import Member, Pool
from probes.checks import CheckResult
from probes.state import AdminState, CheckState

SERVER_STATES: tuple[str, ...] = ("UP", "DOWN", "DRAIN", "MAINT")
"""The values of the one-hot `state` label of `caslb_server_status`."""

PoolSource = Callable[[], Mapping[str, Pool]]
"""Returns the live pools by name; called at every scrape."""

LastCheckLookup = Callable[[str, str], CheckResult | None]
"""`(pool, server)` → the last `CheckResult` of the check that pool uses, or None."""


def no_check_results(pool: str, server: str) -> CheckResult | None:
    """A `LastCheckLookup` for a balancer that runs no checks of its own."""
    return None


def server_state(member: Member) -> str:
    """The one `state` of `caslb_server_status` that is 1 for `member`.

    Admin state wins over health, as in HAProxy: a server in maintenance reads
    MAINT whatever its checks say, a drained one DRAIN.
    """
    if member.admin is not AdminState.READY:
        return member.admin.name
    state: CheckState = member.check_state
    return state.name


def pools_clock() -> float | None:
    """trio's clock, which the pools keep time by; None outside a run (no ejection to read)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


class PoolCollector:
    """Reads pool and member state at scrape time (a prometheus custom collector).

    Args:
        pools: returns the current pools by name.
        last_check: `(pool, server)` → the last result of the check that pool runs
            on that server, or None when unknown (lb.health.HealthWiring.last_result).
        now: the pools' clock, for ejections (read at each scrape).
    """

    def __init__(
        self,
        pools: PoolSource,
        last_check: LastCheckLookup,
        now: Callable[[], float | None] = pools_clock,
    ) -> None:
        self._pools = pools
        self._last_check = last_check
        self._now = now

    def describe(self) -> Iterable[Metric]:
        """The families this collector owns, without samples (for collision checks)."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        """One consistent read of every pool."""
        status, check, weight, eligible, active, total = self._server_families()
        ejected = self._ejected_family()
        pool_active, pool_servers, panic = self._pool_families()
        now = self._now()
        for pool in self._pools().values():
            n_eligible = 0
            out = frozenset() if now is None else pool.ejections.ejected(now)
            for m in pool.members:
                labels = [pool.name, m.name]
                current = server_state(m)
                for s in SERVER_STATES:
                    status.add_metric([*labels, s], 1.0 if s == current else 0.0)
                ejected.add_metric(labels, 1.0 if m.name in out else 0.0)
                self._add_check_status(check, pool.name, m.name)
                weight.add_metric(labels, float(m.weight))
                eligible.add_metric(labels, 1.0 if m.eligible else 0.0)
                active.add_metric(labels, float(m.active))
                total.add_metric(labels, float(m.total))
                n_eligible += 1 if m.eligible else 0
            pool_active.add_metric([pool.name], float(n_eligible))
            pool_servers.add_metric([pool.name], float(len(pool.members)))
            panic.add_metric([pool.name], 1.0 if pool.panicking else 0.0)
        yield from (status, check, weight, eligible, active, total, ejected)
        yield from (pool_active, pool_servers, panic)

    def _add_check_status(self, family: GaugeMetricFamily, pool: str, server: str) -> None:
        result = self._last_check(pool, server)
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
        yield self._ejected_family()
        yield from self._pool_families()

    @staticmethod
    def _ejected_family() -> GaugeMetricFamily:
        # Apart from caslb_server_status: an ejected server is still UP to its
        # check, and dashboards that sum the one-hot states must keep working.
        return GaugeMetricFamily(
            PREFIX + "server_ejected",
            "1 while outlier detection keeps the server out of the pool.",
            labels=["pool", "server"],
        )

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
