"""Per-server request and connection counts, read by tests and the perf harness."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class ServerCounts:
    """A snapshot of one server's counters.

    Attributes:
        requests: real requests by vdir name ("owa", "ews", ...), "root" for `/`,
            "other" for paths outside every vdir, and mail sessions by protocol
            ("imap", "pop", "smtp").
        healthchecks: GET healthcheck.htm requests by vdir name.
        connections: accepted connections by listener ("https", "imap", ...).
        errors: connections that ended on an unexpected server-side error.
        faulted: real requests a fault answered, by (fault kind, vdir name).
        idle_closed: keep-alive HTTP connections the server closed for idling
            past its connectionTimeout.
    """

    requests: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    healthchecks: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    connections: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    errors: int = 0
    faulted: MappingProxyType[tuple[str, str], int] = field(
        default_factory=lambda: MappingProxyType({})
    )
    idle_closed: int = 0

    @property
    def total_requests(self) -> int:
        """All real requests and mail sessions, health checks excluded."""
        return sum(self.requests.values())

    def describe(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "requests": dict(self.requests),
            "healthchecks": dict(self.healthchecks),
            "connections": dict(self.connections),
            "errors": self.errors,
            "faulted": [
                {"fault": f, "vdir": v, "requests": n} for (f, v), n in self.faulted.items()
            ],
            "idle_closed": self.idle_closed,
            "total_requests": self.total_requests,
        }


class Counters:
    """The live, mutable counters of one server."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self._requests: Counter[str] = Counter()
        self._healthchecks: Counter[str] = Counter()
        self._connections: Counter[str] = Counter()
        self._errors = 0
        self._faulted: Counter[tuple[str, str]] = Counter()
        self._idle_closed = 0

    def request(self, what: str) -> None:
        """Count one real request (or mail session) of `what`."""
        self._requests[what] += 1

    def healthcheck(self, vdir: str) -> None:
        """Count one health check of `vdir`."""
        self._healthchecks[vdir] += 1

    def connection(self, listener: str) -> None:
        """Count one accepted connection on `listener`."""
        self._connections[listener] += 1

    def error(self) -> None:
        """Count one connection ended by an unexpected server-side error."""
        self._errors += 1

    def faulted(self, fault: str, vdir: str) -> None:
        """Count one real request of `vdir` that the fault `fault` answered."""
        self._faulted[fault, vdir] += 1

    def idle_closed(self) -> None:
        """Count one keep-alive connection closed for idling."""
        self._idle_closed += 1

    def snapshot(self) -> ServerCounts:
        """An immutable copy of the counters."""
        return ServerCounts(
            requests=MappingProxyType(dict(self._requests)),
            healthchecks=MappingProxyType(dict(self._healthchecks)),
            connections=MappingProxyType(dict(self._connections)),
            errors=self._errors,
            faulted=MappingProxyType(dict(self._faulted)),
            idle_closed=self._idle_closed,
        )
