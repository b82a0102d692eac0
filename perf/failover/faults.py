"""The faults of the matrix, each as the farm commands that inject and clear it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perf.failover.farm import Farm


@dataclass(frozen=True)
class FaultPlan:
    """One fault: how to inject it into a server and how to clear it.

    Attributes:
        name: short name for the command line and results.
        summary: what happens on the wire (docs/exchange.md §6).
        inject: the farm command, without the server.
        clear: the farm command undoing it, without the server.
    """

    name: str
    summary: str
    inject: dict[str, Any]
    clear: dict[str, Any] = field(default_factory=dict)

    async def apply(self, farm: Farm, server: str) -> None:
        """Inject into `server`."""
        await farm.command(server=server, **self.inject)

    async def undo(self, farm: Farm, server: str) -> None:
        """Clear from `server`."""
        await farm.command(server=server, **self.clear)


def _farm_fault(name: str, summary: str, **params: Any) -> FaultPlan:
    return FaultPlan(
        name,
        summary,
        {"op": "inject", "fault": name, "params": params},
        {"op": "clear", "fault": name},
    )


def _component(name: str, summary: str, component: str, requester: str) -> FaultPlan:
    base = {"op": "set_component", "component": component, "requester": requester}
    return FaultPlan(name, summary, {**base, "state": "Inactive"}, {**base, "state": "Active"})


def fault_plans(slow_seconds: float) -> dict[str, FaultPlan]:
    """Every fault of the matrix, by name, in the order the report shows them."""
    plans = (
        _farm_fault("crash", "process gone: connects refused, flows reset (§6 #1)"),
        _farm_fault("blackhole", "host silent: connects time out, flows stall (§6 #2)"),
        _farm_fault("hang", "accepts, never answers (§6 #3)"),
        _farm_fault(
            "hang_tls",
            "accepts, never answers the TLS ClientHello nor sends a banner (§6 #3)",
        ),
        _component(
            "ews_inactive", "EwsProxy Inactive (HealthApi): only EWS checks fail (§6 #5)",
            "EwsProxy", "HealthApi",
        ),
        _component(
            "maintenance", "ServerWideOffline Inactive: every check fails (§6 #7)",
            "ServerWideOffline", "Maintenance",
        ),
        _farm_fault("slow", f"every answer {slow_seconds:g} s late (§6 #4)", seconds=slow_seconds),
        _farm_fault("errors", "5xx on real requests behind a green probe (§6 #11)"),
        _farm_fault(
            "app_pool_stopped", "EWS's application pool stopped: its vdir 503s, health too",
            vdir="ews",
        ),
    )
    return {p.name: p for p in plans}
