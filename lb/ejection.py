"""A pool's outlier ejections: one state that every frontend using the pool shares.

Theory of operation. `probes.outlier.OutlierDetector` decides, purely, when a
server's real requests fail enough to eject it. The pool owns one detector
(through `PoolEjections`), so every L7 frontend routing to the pool reports to
it and asks it who is out; an ejection is a property of the server in that
pool, like its check state, and shows wherever that does (/status, the status
page, `caslb_server_ejected`). It lives as long as the pool: a reload that
keeps the pool (`Pool.reconfigure`) keeps it, with the new settings applied.

The active check overrules it the other way only: a server the check saw come
back UP after a DOWN (a crash or hang, now over) is readmitted at once rather
than after the rest of its ejection (`Pool.set_check_state` calls `lift`).

What counts as a server fault depends on the protocol
(`probes.outlier.for_protocol`): for EWS a plain 500 is often a SOAP fault one
client's request caused, so it needs failures from two clients even in a pool
that has seen only one.

With `caslb run --workers N` the supervisor's pools decide and the workers'
follow (`follow`): a worker forwards every outcome up its pipe and applies the
ejections the supervisor sends back (`apply`), so N workers count as one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from probes.outlier import Ejection, Outcome, OutlierDetector, OutlierSettings, for_protocol

log = logging.getLogger("caslb.pool")

EjectionListener = Callable[[str, float | None], None]
"""`(server, until)`: a server was ejected until `until`, or (None) readmitted early."""

OutcomeForward = Callable[[str, str, Outcome, str | None], None]
"""`(pool, server, outcome, client)`: where a follower sends outcomes for its leader."""


class PoolEjections:
    """The outlier ejections of one pool.

    Args:
        name: the pool's name (for logs).
        settings: the detector's settings, None for detection off.
        protocol: the pool's protocol, which decides what a server fault is.
        size: how many servers the pool has now (for max_ejection_percent).
    """

    def __init__(
        self,
        name: str,
        settings: OutlierSettings | None,
        protocol: str | None,
        size: Callable[[], int],
    ) -> None:
        self.name = name
        self._size = size
        self._detector: OutlierDetector | None = None
        self._listeners: list[EjectionListener] = []
        # Following another process's decisions: server → end of its ejection.
        self._forward: OutcomeForward | None = None
        self._followed: dict[str, float] = {}
        self.configure(settings, protocol)

    def __repr__(self) -> str:
        return f"<PoolEjections {self.name} {self._detector!r}>"

    @property
    def enabled(self) -> bool:
        """Whether outlier detection runs for this pool."""
        return self._detector is not None

    def configure(self, settings: OutlierSettings | None, protocol: str | None) -> None:
        """Apply (reloaded) settings; turning detection off forgets every ejection."""
        if settings is None:
            self._detector = None
            return
        effective = for_protocol(settings, protocol)
        if self._detector is None:
            self._detector = OutlierDetector(effective)
        else:
            self._detector.settings = effective

    def follow(self, forward: OutcomeForward) -> None:
        """Let another process decide: outcomes go to `forward`, decisions come to `apply`."""
        self._forward = forward

    def apply(self, server: str, until: float | None) -> None:
        """Take the leader's decision: `server` is out until `until`, or (None) not out."""
        if until is None:
            self._followed.pop(server, None)
        else:
            self._followed[server] = until

    def subscribe(self, listener: EjectionListener) -> None:
        """Call `listener(server, until)` on every ejection and every early lift."""
        self._listeners.append(listener)

    def record(
        self, server: str, outcome: Outcome, now: float, *, client: str | None, count: int = 1
    ) -> Ejection | None:
        """Count one request's outcome; the ejection it triggers, if any.

        Args:
            client: the client's address; None when no client's request could
                have caused the outcome (a connect failure).
            count: a batch of that many successes (from a worker).
        """
        if self._detector is None:
            return None
        if self._forward is not None:
            self._forward(self.name, server, outcome, client)
            return None
        ejection = self._detector.record(
            server, outcome, now, pool_size=max(1, self._size()), client=client, count=count
        )
        if ejection is not None:
            self._tell(server, ejection.until)
        return ejection

    def is_ejected(self, server: str, now: float) -> bool:
        """Whether `server` is ejected at `now`."""
        if self._detector is None:
            return False
        if self._forward is not None:
            return now < self._followed.get(server, -math.inf)
        return self._detector.is_ejected(server, now)

    def ejected(self, now: float) -> frozenset[str]:
        """The servers ejected at `now`."""
        if self._detector is None:
            return frozenset()
        if self._forward is not None:
            return frozenset(s for s, until in self._followed.items() if now < until)
        return self._detector.ejected(now)

    def ejections(self, now: float) -> dict[str, float]:
        """Every server ejected at `now` → when its ejection ends."""
        ends = {s: self.ejection_end(s) for s in self.ejected(now)}
        return {s: end for s, end in ends.items() if end is not None}

    def ejected_until(self, server: str, now: float) -> float | None:
        """When `server`'s ejection ends, None when it is not ejected at `now`."""
        return self.ejection_end(server) if self.is_ejected(server, now) else None

    def ejection_end(self, server: str) -> float | None:
        """When `server`'s current or last ejection ends, None if it was never ejected."""
        if self._detector is None:
            return None
        if self._forward is not None:
            return self._followed.get(server)
        return self._detector.ejection_end(server)

    def lift(self, server: str, why: str) -> bool:
        """Readmit `server` now if it is ejected; whether it was."""
        if self._detector is None:
            return False
        if self._forward is not None:
            # The leader lifts it too, on the same check transition it sent here.
            return self._followed.pop(server, None) is not None
        if not self._detector.lift(server):
            return False
        log.warning("pool %s: %s readmitted before its ejection ended: %s", self.name, server, why)
        self._tell(server, None)
        return True

    def forget(self, server: str) -> None:
        """Drop a server that left the pool."""
        self._followed.pop(server, None)
        if self._detector is not None:
            self._detector.forget(server)

    def _tell(self, server: str, until: float | None) -> None:
        for listener in list(self._listeners):
            listener(server, until)
