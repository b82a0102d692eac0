"""Healthcheck connections kept open from one check to the next.

Why. Each vdir of each server is checked every interval on its own, so a
3-server farm with ten HTTP vdirs needs thirty GETs a second. Opening a TLS
connection for each costs about 1.4 ms of CPU here (OpenSSL 3, client side),
ten times the GET it carries, and as much again on the server. The vdirs of
one server share its address, port and certificate, so the connection one
check opened can carry the next GET, whichever vdir it is for.

What that costs, and how it is bounded. A fault that only a new connection
meets (a TLS accept that hangs, a certificate that changed, a listener that
refuses) is met only by the check that opens one. So a connection carries
checks for at most `reuse_for` seconds after it was opened (the runner passes
the check interval): after that every check needs a new one, and such a fault
is seen at most one interval later than with a connection per check. Every
other fault (a crash, a reset, a hang, a 503, a wrong body) shows on the kept
connection at once. A kept connection that the server closed while it sat
idle (an idle timeout, a recycled app pool) proves nothing about the server:
the check runs again on a new connection, as HTTP clients retry an idempotent
request (probes.checks).

Only a connection whose check passed and whose exchange ended cleanly on a
keep-alive response comes back here; one idle connection is kept per
endpoint (the newest), and the rest are closed.

Checks of one server that fall due together (the runner aligns them, so
they run warm) take turns on its connection: `borrow` waits for the one in
use, but only for `patience` (a tenth of the check's timeout, probes.checks).
A vdir that hangs holds its connection; the checks behind it then open their
own, so a hung vdir delays another vdir's verdict by that much at most.
"""

from __future__ import annotations

import trio

from probes.wire import Session

# (id of the TLS context or 0 for plain, server name, address, port)
EndpointKey = tuple[int, str, str, int]
_SWEEP_EVERY = 10.0  # seconds between sweeps for connections nobody asks for any more


class KeptConnections:
    """Idle healthcheck connections, one per endpoint, owned by one ProbeRunner."""

    def __init__(self) -> None:
        self._idle: dict[EndpointKey, tuple[Session, float]] = {}
        self._next_sweep = 0.0
        # checks on their way with a connection to the endpoint, and who waits for one
        self._holders: dict[EndpointKey, int] = {}
        self._waiting: dict[EndpointKey, trio.lowlevel.ParkingLot] = {}

    async def borrow(self, key: EndpointKey, patience: float) -> Session | None:
        """The idle connection to `key`, waiting up to `patience` seconds for the
        one a check is using; None: open a new one. Either way the caller holds
        the endpoint's turn until it calls `give` or `release`."""
        give_up = trio.current_time() + patience
        while True:
            session = self.take(key)
            if session is not None or not self._holders.get(key) or (
                trio.current_time() >= give_up
            ):
                self._holders[key] = self._holders.get(key, 0) + 1
                return session
            lot = self._waiting.setdefault(key, trio.lowlevel.ParkingLot())
            with trio.move_on_at(give_up):
                await lot.park()

    def release(self, key: EndpointKey) -> None:
        """The borrower's check is over and left no connection to keep."""
        holders = self._holders.get(key, 0) - 1
        if holders > 0:
            self._holders[key] = holders
        else:
            self._holders.pop(key, None)
        lot = self._waiting.get(key)
        if lot is not None:
            lot.unpark()  # the next in line takes the connection, or opens one
            if not lot:
                del self._waiting[key]

    def take(self, key: EndpointKey) -> Session | None:
        """The idle connection to `key`, if one is still young enough to carry a check."""
        now = trio.current_time()
        self._sweep(now)
        kept = self._idle.pop(key, None)
        if kept is None:
            return None
        session, expires = kept
        if now >= expires:
            session.close_now()
            return None
        return session

    def give(self, key: EndpointKey, session: Session, reuse_for: float) -> None:
        """Keep `session` (its check passed on a clean keep-alive exchange) for the
        next check to `key`, until `reuse_for` seconds after it was opened."""
        expires = session.opened_at + reuse_for
        older = self._idle.get(key)
        if older is not None and older[1] >= expires:
            session.close_now()
        else:
            if older is not None:
                older[0].close_now()
            self._idle[key] = (session, expires)
        self.release(key)

    def close_all(self) -> None:
        """Close every idle connection (the runner is stopping)."""
        for session, _ in self._idle.values():
            session.close_now()
        self._idle.clear()

    def __len__(self) -> int:
        return len(self._idle)

    def _sweep(self, now: float) -> None:
        # A server removed by a reload is never asked for again; its connection
        # must not hold an fd for ever.
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY
        for key in [k for k, (_, expires) in self._idle.items() if now >= expires]:
            self._idle.pop(key)[0].close_now()
