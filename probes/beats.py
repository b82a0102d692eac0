"""Due times shared by the checks of one server, so that they run together.

Why. A check spread out on its own, with other work between it and the
next, runs with its code and data out of the CPU caches: measured on the
2-core machine, a kept healthcheck GET cost 0.23 ms of CPU back to back and
about 1 ms 33 ms apart, an IMAPS check 1.4 ms and 2.6 ms (docs/benchmarks.md,
"a check runs cold"). Run in batches, the same checks cost about half.

How. Every check still has its own schedule: the state machine's next due
time and the jitter around it. A server's `Beats` holds the due times its
checks have already planned; a check whose window holds one of them takes
it instead of a time of its own, so the checks of one server fall due at the
same instant, while each server's beats keep their own random phase. The
window is the check's jitter band, widened on the early side by as much
again: a check may run a little early to join its server's batch (checking
sooner never delays a verdict), never later than its own schedule allows.
"""

from __future__ import annotations

__all__ = ["Beats"]


class Beats:
    """The due times the checks of one server have planned."""

    def __init__(self) -> None:
        self._planned: list[float] = []

    def due(self, earliest: float, latest: float, drawn: float, now: float) -> float:
        """When a check that may run in [`earliest`, `latest`] runs: a planned
        time in that window, else `drawn` (its own), which is planned from then on."""
        planned = [t for t in self._planned if t > now]
        for t in planned:
            if earliest <= t <= latest:
                self._planned = planned
                return t
        planned.append(drawn)
        self._planned = planned
        return drawn

    def __len__(self) -> int:
        return len(self._planned)
