"""Worker traffic counters summed into the supervisor's /metrics (pure)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from lb.metrics import PREFIX
from lb.workers.messages import Family, SampleKey

CURRENT_CONNECTIONS = PREFIX + "frontend_current_connections"
SUMMED_GAUGES = frozenset({CURRENT_CONNECTIONS, PREFIX + "server_idle_connections"})
"""Gauges moved by a worker's own traffic: the supervisor adds its workers' up."""
PER_WORKER: Mapping[str, tuple[str, str]] = {
    PREFIX + "frontend_connections": (
        PREFIX + "worker_frontend_connections",
        "Accepted client connections (L4 frontends) per worker process.",
    ),
    PREFIX + "frontend_http_requests": (
        PREFIX + "worker_http_requests", "HTTP requests (L7 frontends) per worker process.",
    ),
}
"""Worker family → (per-worker family, help): how the kernel spread the traffic."""


def traffic_families(registry: CollectorRegistry) -> dict[str, Family]:
    """The samples a worker ships: counters, histograms and `SUMMED_GAUGES`.

    Pool-state gauges are the supervisor's own; `_created` timestamps do not add up.
    """
    families: dict[str, Family] = {}
    for metric in registry.collect():
        if metric.type not in ("counter", "histogram") and metric.name not in SUMMED_GAUGES:
            continue
        if not metric.name.startswith(PREFIX):
            continue  # process_* is each process's own; the supervisor exports its own
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for s in metric.samples if not s.name.endswith("_created")
        }
        if samples:
            families[metric.name] = Family(metric.type, samples)
    return families


def _add(into: dict[str, Family], families: Mapping[str, Family], *, gauges: bool) -> None:
    for name, family in families.items():
        if family.type == "gauge" and not gauges:
            continue
        merged = dict(into[name].samples) if name in into else {}
        for key, value in family.samples.items():
            merged[key] = merged.get(key, 0.0) + value
        into[name] = Family(family.type, merged)


class WorkerTotals:
    """The workers' last metrics, summed; a replaced worker's counters are kept."""

    def __init__(self) -> None:
        self._latest: dict[int, Mapping[str, Family]] = {}
        self._retired: dict[int, dict[str, Family]] = {}

    def update(self, slot: int, families: Mapping[str, Family]) -> None:
        """The latest samples from the worker in `slot`."""
        self._latest[slot] = families

    def retire(self, slot: int) -> None:
        """The worker in `slot` ended: keep its counters, forget its gauges."""
        families = self._latest.pop(slot, None)
        if families is not None:
            _add(self._retired.setdefault(slot, {}), families, gauges=False)

    def summed(self) -> dict[str, Family]:
        """Every family summed over live and retired workers, per label set."""
        total: dict[str, Family] = {}
        for retired in self._retired.values():
            _add(total, retired, gauges=False)
        for latest in self._latest.values():
            _add(total, latest, gauges=True)
        return total

    def by_worker(self, name: str) -> dict[int, float]:
        """The total of counter family `name` per worker slot, over every label set."""
        out: dict[int, float] = {}
        for slot in sorted(set(self._latest) | set(self._retired)):
            count = 0.0
            for families in (self._retired.get(slot, {}), self._latest.get(slot, {})):
                family = families.get(name)
                if family is not None:
                    count += sum(v for (sample, _), v in family.samples.items()
                                 if sample.endswith("_total"))
            out[slot] = count
        return out


class MergedCollector:
    """The supervisor's own series with the workers' samples added (a custom collector).

    Args:
        own: the supervisor's registry (pool state, checks, empty traffic series).
        totals: the workers' samples.
    """

    def __init__(self, own: CollectorRegistry, totals: WorkerTotals) -> None:
        self._own = own
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        """One read of the supervisor's series and the workers' latest samples."""
        summed = self._totals.summed()
        for metric in self._own.collect():
            extra = summed.pop(metric.name, None)
            yield metric if extra is None else _merged(metric, extra)
        for name, family in summed.items():
            yield _merged(Metric(name, "", family.type), family)
        for source, (name, documentation) in PER_WORKER.items():
            per_worker = CounterMetricFamily(name, documentation, labels=["worker"])
            for slot, count in self._totals.by_worker(source).items():
                per_worker.add_metric([str(slot)], count)
            yield per_worker


def _merged(metric: Metric, extra: Family) -> Metric:
    values: dict[SampleKey, float] = {}
    for s in metric.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        values[key] = values.get(key, 0.0) + s.value
    for key, value in extra.samples.items():
        values[key] = values.get(key, 0.0) + value
    merged = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    for (name, labels), value in values.items():
        merged.add_sample(name, dict(labels), value)
    return merged


