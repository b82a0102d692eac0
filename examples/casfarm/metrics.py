"""The farm's own view in Prometheus text: what each server served and suffered.

Served at `GET /metrics` on the control port, so a lab graphs the farm's counts
beside the balancer's: a request the balancer counts against cas2 should show
here on cas2. Everything is read from the servers' counters and fault sets at
scrape time (a collector, no second copy of the counts). `reset-counts` zeroes
the counters, which Prometheus sees as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from casfarm.faults import FaultKind
from casfarm.vdirs import VDIRS

if TYPE_CHECKING:
    from casfarm.farm import Farm

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Every server exports these at 0 from the start, so rate() works before the first request.
_HTTP = tuple(v.name for v in VDIRS)
_SERVED = (*_HTTP, "imap", "pop", "smtp")


class FarmCollector(Collector):
    """Reads every server's counters and faults when Prometheus scrapes.

    Args:
        farm: the running farm.
    """

    def __init__(self, farm: Farm) -> None:
        self.farm = farm

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The farm's series, one sample per server and vdir (or fault)."""
        requests = CounterMetricFamily(
            "casfarm_requests", "Real requests and mail sessions served, health checks excluded",
            labels=["server", "vdir"])
        checks = CounterMetricFamily(
            "casfarm_healthchecks", "GET /<vdir>/healthcheck.htm answered",
            labels=["server", "vdir"])
        faulted = CounterMetricFamily(
            "casfarm_faulted_requests", "Real requests a fault answered (errors: 5xx; "
            "app_pool_stopped: HTTP.sys 503)", labels=["server", "vdir", "fault"])
        connections = CounterMetricFamily(
            "casfarm_connections", "Connections accepted, by listener",
            labels=["server", "listener"])
        active = GaugeMetricFamily(
            "casfarm_fault_active", "1 while a fault of this kind is in force on the server",
            labels=["server", "fault"])
        for info in self.farm.servers:
            runtime = self.farm.runtime(info.name)
            counts = runtime.counters.snapshot()
            for vdir, n in ({v: 0 for v in _SERVED} | dict(counts.requests)).items():
                requests.add_metric([info.name, vdir], n)
            for vdir, n in ({v: 0 for v in _HTTP} | dict(counts.healthchecks)).items():
                checks.add_metric([info.name, vdir], n)
            zero = {(FaultKind.ERRORS.value, v): 0 for v in _HTTP}
            for (fault, vdir), n in (zero | dict(counts.faulted)).items():
                faulted.add_metric([info.name, vdir, fault], n)
            for listener, n in counts.connections.items():
                connections.add_metric([info.name, listener], n)
            for kind in FaultKind:
                active.add_metric([info.name, kind.value], float(runtime.faults.has(kind)))
        yield from (requests, checks, faulted, connections, active)


def farm_registry(farm: Farm) -> CollectorRegistry:
    """A registry holding only the farm's collector (no process series of the test runner)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(farm))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's samples in Prometheus text format."""
    return generate_latest(registry)
