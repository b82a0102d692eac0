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
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from probes.outlier import Ejection, Outcome, OutlierDetector, OutlierSettings, for_protocol

log = logging.getLogger("caslb.pool")

EjectionListener = Callable[[str, float | None], None]
"""`(server, until)`: a server was ejected until `until`, or (None) readmitted early."""


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

    def subscribe(self, listener: EjectionListener) -> None:
        """Call `listener(server, until)` on every ejection and every early lift."""
        self._listeners.append(listener)

    def record(
        self, server: str, outcome: Outcome, now: float, *, client: str | None
    ) -> Ejection | None:
        """Count one request's outcome; the ejection it triggers, if any.

        Args:
            client: the client's address; None when no client's request could
                have caused the outcome (a connect failure).
        """
        if self._detector is None:
            return None
        ejection = self._detector.record(
            server, outcome, now, pool_size=max(1, self._size()), client=client
        )
        if ejection is not None:
            self._tell(server, ejection.until)
        return ejection

    def is_ejected(self, server: str, now: float) -> bool:
        """Whether `server` is ejected at `now`."""
        return self._detector is not None and self._detector.is_ejected(server, now)

    def ejected(self, now: float) -> frozenset[str]:
        """The servers ejected at `now`."""
        return frozenset() if self._detector is None else self._detector.ejected(now)

    def ejected_until(self, server: str, now: float) -> float | None:
        """When `server`'s ejection ends, None when it is not ejected at `now`."""
        if not self.is_ejected(server, now):
            return None
        assert self._detector is not None
        return self._detector.ejection_end(server)

    def ejection_end(self, server: str) -> float | None:
        """When `server`'s current or last ejection ends, None if it was never ejected."""
        return None if self._detector is None else self._detector.ejection_end(server)

    def lift(self, server: str, why: str) -> bool:
        """Readmit `server` now if it is ejected; whether it was."""
        if self._detector is None or not self._detector.lift(server):
            return False
        log.warning("pool %s: %s readmitted before its ejection ended: %s", self.name, server, why)
        self._tell(server, None)
        return True

    def forget(self, server: str) -> None:
        """Drop a server that left the pool."""
        if self._detector is not None:
            self._detector.forget(server)

    def _tell(self, server: str, until: float | None) -> None:
        for listener in list(self._listeners):
            listener(server, until)
