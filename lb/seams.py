"""The app's two seams: where member check states come from, where traffic outcomes go.

Theory of operation
-------------------
A balancer decides nothing about health itself. It hands its pools to a
`StateSource`, which keeps their members' check states current, and hands
every live-traffic outcome its frontends see to an `OutcomeSink`. Two pairs
exist:

- one process (`caslb run`, and the supervisor of `caslb run --workers N`):
  `lb.health.OwnProbes` is both; its probes move the check states and the
  outcomes count towards them (HAProxy's `observe layer4`);
- a worker: `lb.workers.feed.SupervisorFeed` copies the states the
  supervisor sends, and `lb.workers.pipe.SupervisorPipe` carries outcomes to
  the supervisor, whose own probes count them.

The app starts the source before any frontend accepts and waits for it to
report started, so a worker never serves from pools it has not yet copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from probes.checks import CheckResult
from probes.state import CheckProgress, Transition

if TYPE_CHECKING:
    from lb.pool import Pool



@dataclass(frozen=True)
class ProbeKey:
    """Names one probe: a server as checked for one pool.

    The check series of lb/metrics are labelled `server` and `protocol`, the
    latter the pool's name.
    """

    server: str
    pool: str

class ProbeEvents(Protocol):
    """What a state source tells the metrics (`lb.metrics.Metrics` is one)."""

    def on_probe(
        self, key: ProbeKey, result: CheckResult | None, transition: Transition | None
    ) -> None:
        """A check result and/or transition."""

    def internal_error(self, where: str) -> None:
        """A unit of work at `where` ended on an unexpected error."""

    def check_inconclusive(self, key: ProbeKey) -> None:
        """A check timed out only because the balancer itself was late."""


class StateSource(Protocol):
    """Keeps the check states of the app's pools current."""

    def last_result(self, pool: str, server: str) -> CheckResult | None:
        """The last check result for a member, None before one (or with no probes here)."""

    def check_progress(self, pool: str, server: str) -> CheckProgress | None:
        """A member's health counter on its way UP or DOWN, None with no probe here."""

    def pools_changed(self) -> None:
        """The app added, removed or reconfigured pools (a reload)."""

    async def run(
        self,
        pools: Mapping[str, Pool],
        events: ProbeEvents,
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None:
        """Keep `pools` current until cancelled; started once they can be served from."""


class OutcomeSink(Protocol):
    """Takes the outcomes of live traffic from the frontends."""

    def report(self, pool: str, server: str, ok: bool, reason: str) -> None:
        """A connection or request to `server` of `pool` succeeded or failed (and why)."""
