"""The balancer's own lateness, so that a check never blames a server for it.

Why. A check that times out says "the server did not answer in time", but on
a busy balancer the answer may have sat in a socket while the event loop was
running other work: loopback checks of a healthy farm were measured taking
400-1000 ms on a saturated 2-core machine, and every server went DOWN with a
1 s timeout. HAProxy has the same blind spot. caslb measures it.

How. `LagMeter` runs one task that, while any check is in flight, asks to
wake every `period` seconds and records how late each wake came: that
lateness is time the loop could not give to anyone, checks included. Summed
over a check's life it estimates how much of the check's timeout the balancer
stole (`stolen`). With no check in flight it sleeps, so an idle balancer pays
nothing and a test clock is free to jump.

A check's timeout then counts only the time the balancer could run
(`budget`): the deadline moves out by the stolen time, up to one extra
timeout, so a hung server is still failed within twice its timeout. When even
that is not enough (the balancer stole more than the timeout), the check is
inconclusive: neither a success nor a failure, it is not fed to the state
machine, and the overload is reported instead (`overloaded`).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import trio

T = TypeVar("T")

DEFAULT_PERIOD = 0.05
# How many wakes are remembered: at the default period, about 25 s, longer than any check.
_WINDOW = 512


class LagMeter:
    """Measures how late the event loop runs timers.

    Args:
        period: seconds between wakes (the resolution of the measure).
    """

    def __init__(self, period: float = DEFAULT_PERIOD) -> None:
        self.period = period
        self._wakes: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WINDOW)
        self.worst = 0.0  # the worst lateness since start, for the overload gauge
        self._in_flight = 0
        self._busy = trio.Event()

    async def run(self) -> None:
        """While checks are in flight, wake every period and record the lateness."""
        while True:
            if not self._in_flight:
                self._busy = trio.Event()
                await self._busy.wait()
            due = trio.current_time() + self.period
            await trio.sleep_until(due)
            self.record(trio.current_time(), trio.current_time() - due)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Keep the meter awake while the body (a check) runs."""
        self._in_flight += 1
        self._busy.set()
        try:
            yield
        finally:
            self._in_flight -= 1

    def record(self, woke_at: float, lateness: float) -> None:
        """Note one wake that came `lateness` seconds late."""
        self._wakes.append((woke_at, lateness))
        self.worst = max(self.worst, lateness)

    def stolen(self, start: float, end: float) -> float:
        """Seconds of the interval [start, end] the loop spent late.

        A wake at `w` that came `l` late stands for the loop being away from
        `w - l` to `w`; overlapping spans count once.
        """
        spans = sorted(
            (max(start, woke_at - lateness), min(end, woke_at))
            for woke_at, lateness in self._wakes
            if woke_at >= start and lateness > 0
        )
        total, reach = 0.0, start
        for away_from, back_at in spans:
            away_from = max(away_from, reach)
            if back_at > away_from:
                total += back_at - away_from
                reach = back_at
        return total

    def latest(self) -> float:
        """The lateness of the most recent wake (0 before the first)."""
        return self._wakes[-1][1] if self._wakes else 0.0


def budget(timeout: float, stolen: float) -> float:
    """How long a check may take: its timeout plus what the balancer stole, at most twice it."""
    return timeout + min(max(stolen, 0.0), timeout)


def overloaded(timeout: float, stolen: float, elapsed: float) -> bool:
    """Whether a check that ran out of time never had its timeout's worth of the balancer.

    The deadline moves out until the time the balancer could run reaches the
    timeout, so a timed-out check normally had all of it, and the server is to
    blame. Only at the cap (twice the timeout) can the available time fall
    short: then the balancer, not the server, was the slow party.
    """
    return elapsed - stolen < timeout * 0.99


async def run_within(
    meter: LagMeter | None, timeout: float, fn: Callable[[], Awaitable[T]]
) -> T | None:
    """`fn()`'s result, or None if it ran out of time.

    Without a meter the deadline is `timeout`; with one it moves out by the
    time the balancer stole meanwhile (`budget`). Exceptions from `fn` propagate
    as themselves, not wrapped in a group.
    """
    if meter is None:
        with trio.move_on_after(timeout):
            return await fn()
        return None
    started = trio.current_time()
    results: list[T] = []
    errors: list[Exception] = []
    async with trio.open_nursery() as nursery:

        async def work() -> None:
            try:
                results.append(await fn())
            except Exception as exc:  # re-raised below, outside the nursery's group
                errors.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(work)
        deadline = started + timeout
        while True:
            await trio.sleep_until(deadline)
            # After a stall every expired timer is runnable at once: let the work
            # finish and the meter record the stall before deciding.
            await trio.lowlevel.checkpoint()
            now = trio.current_time()
            meter.record(now, now - deadline)
            stretched = started + budget(timeout, meter.stolen(started, now))
            if stretched <= now:
                break
            deadline = stretched
        nursery.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return results[0] if results else None
