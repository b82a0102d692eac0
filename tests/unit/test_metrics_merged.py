"""Worker totals per slot: a replaced worker's counters and its successor's add up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from lb.metrics import Metrics
from lb.workers.merged import WorkerTotals, traffic_families


def _accepted(connections: int) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    for _ in range(connections):
        metrics.frontend_connection_opened("imap")
    return metrics


def test_a_slot_counts_its_retired_worker_and_its_successor() -> None:
    totals = WorkerTotals()
    totals.update(0, traffic_families(_accepted(2).registry))
    totals.retire(0)
    totals.update(0, traffic_families(_accepted(3).registry))
    totals.update(1, traffic_families(_accepted(1).registry))
    assert totals.by_worker("caslb_frontend_connections") == {0: 5.0, 1: 1.0}
