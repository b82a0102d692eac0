"""Which outcomes a worker sends up its pipe, so healthy traffic costs (almost) no line.

Passive health needs failures and the first success after one (`ReportFilter`).
Outlier detection needs more: it compares a server's failure rate with the rest
of its pool's, so successes count too, and every failure carries its client.
`OutcomeBatcher` sends each failure at once, a success at once when it ends a
failing run (it resets the server's streak in the supervisor), and other
successes as one counted line per (pool, server, client) each flush
(`METRICS_INTERVAL`): the supervisor's rates are at most that late.
"""

from __future__ import annotations

from lb.workers.messages import OutlierOutcome
from probes.outlier import Outcome


class ReportFilter:
    """Which passive outcomes a worker sends: failures, and the first success after one."""

    def __init__(self) -> None:
        self._failing: set[tuple[str, str]] = set()

    def should_send(self, pool: str, server: str, ok: bool) -> bool:
        """True when this outcome must go to the supervisor."""
        key = (pool, server)
        if not ok:
            self._failing.add(key)
            return True
        if key in self._failing:
            self._failing.discard(key)
            return True
        return False


class OutcomeBatcher:
    """Turns a worker's outlier outcomes into the lines it sends (see the module docstring)."""

    def __init__(self) -> None:
        self._failing: set[tuple[str, str]] = set()
        self._successes: dict[tuple[str, str, str | None], int] = {}

    def add(
        self, pool: str, server: str, outcome: Outcome, client: str | None
    ) -> list[OutlierOutcome]:
        """The lines to send now for this outcome (often none)."""
        key = (pool, server)
        if outcome is Outcome.SUCCESS and key not in self._failing:
            batch = (pool, server, client)
            self._successes[batch] = self._successes.get(batch, 0) + 1
            return []
        # The server's earlier successes go first, so the supervisor sees the order.
        lines = self._take(key)
        if outcome is Outcome.SUCCESS:
            self._failing.discard(key)
        else:
            self._failing.add(key)
        lines.append(OutlierOutcome(pool, server, outcome, client))
        return lines

    def flush(self) -> list[OutlierOutcome]:
        """Every batched success, as one line per (pool, server, client)."""
        lines = [OutlierOutcome(p, s, Outcome.SUCCESS, c, n)
                 for (p, s, c), n in self._successes.items()]
        self._successes.clear()
        return lines

    def _take(self, key: tuple[str, str]) -> list[OutlierOutcome]:
        taken = [b for b in self._successes if b[:2] == key]
        return [OutlierOutcome(p, s, Outcome.SUCCESS, c, self._successes.pop((p, s, c)))
                for p, s, c in taken]
