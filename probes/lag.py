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

The meter's task also keeps the checks' deadlines (`deadline`): it wakes at
the next one due, moves it out by what was stolen or cancels the check. A
check then costs a heap entry and a cancel scope, not a nursery, a task and a
timer loop of its own (about a quarter of a kept healthcheck GET's Python
calls, docs/benchmarks.md).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import trio

T = TypeVar("T")

DEFAULT_PERIOD = 0.05
# How many wakes are remembered: at the default period, about 25 s, longer than any check.
_WINDOW = 512


class _Deadline:
    """One check's deadline, kept by the meter: when it falls due and what it cancels."""

    __slots__ = ("done", "scope", "started", "timeout")

    def __init__(self, started: float, timeout: float) -> None:
        self.started = started
        self.timeout = timeout
        # The hard cap: budget() never grants more than twice the timeout, so the
        # check ends there even if the meter's task is not running.
        self.scope = trio.CancelScope(deadline=started + 2 * timeout)
        self.done = False


class LagMeter:
    """Measures how late the event loop runs timers, and keeps checks' deadlines.

    Args:
        period: seconds between wakes (the resolution of the measure).
    """

    def __init__(self, period: float = DEFAULT_PERIOD) -> None:
        self.period = period
        # (woke_at, lateness) in time order, as `record` is called
        self._wakes: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WINDOW)
        self.worst = 0.0  # the worst lateness since start, for the overload gauge
        self._in_flight = 0
        self._busy = trio.Event()
        self._deadlines: list[tuple[float, int, _Deadline]] = []  # a heap by due time
        self._order = itertools.count()  # ties in the heap never compare deadlines
        self._nap: trio.CancelScope | None = None
        # When the meter's task expects to run next, while checks are in flight
        self._expected: float | None = None

    async def run(self) -> None:
        """While checks are in flight, wake every period (or at the next check's
        deadline, if sooner), record the lateness and cancel the checks whose
        time, stretched by what was stolen, has run out."""
        while True:
            if not self._in_flight:
                self._busy = trio.Event()
                await self._busy.wait()
            due = trio.current_time() + self.period
            if self._deadlines:
                due = min(due, self._deadlines[0][0])
            with trio.CancelScope(deadline=due) as nap:
                self._nap = nap
                await trio.sleep_forever()
            self._nap = None
            woke = self._expected = trio.current_time()
            self.record(woke, woke - nap.deadline)
            # After a stall every expired timer is runnable at once: let the checks
            # whose answer came meanwhile finish before deciding. The loop may be
            # away meanwhile too, and that is lateness as well.
            await trio.lowlevel.checkpoint()
            now = trio.current_time()
            if now > woke:
                self.record(now, now - woke)
            self._expected = None
            self._expire(now)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Keep the meter awake while the body (a check) runs."""
        self._in_flight += 1
        self._busy.set()
        try:
            yield
        finally:
            self._in_flight -= 1

    def deadline(self, timeout: float) -> _Deadline:
        """A deadline of `timeout` of the balancer's own time, from now.

        Enter its `scope` around the check: the meter cancels it once `timeout`
        has passed plus what the balancer stole meanwhile (`budget`), at most
        twice `timeout`. Call `finished` when the check is over. One heap entry
        and one cancel scope per check, where a nursery and a task of its own
        would cost a few hundred Python calls.
        """
        now = trio.current_time()
        entry = _Deadline(now, timeout)
        due = now + timeout
        heapq.heappush(self._deadlines, (due, next(self._order), entry))
        self._in_flight += 1
        self._busy.set()
        if self._nap is not None and due < self._nap.deadline:
            self._nap.deadline = due
        return entry

    def finished(self, entry: _Deadline) -> None:
        """The check under `entry` is over: its deadline no longer counts."""
        entry.done = True
        self._in_flight -= 1
        if entry.scope.cancelled_caught:
            # The cap may have fired after a stall that the meter's task, due to
            # run before it, has not recorded yet: record it now, for the verdict.
            expected = self._nap.deadline if self._nap is not None else self._expected
            now = trio.current_time()
            if expected is not None and now > expected:
                self.record(now, now - expected)
        heap = self._deadlines
        while heap and heap[0][2].done:  # so the meter does not wake for it
            heapq.heappop(heap)

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.done:
                continue
            stretched = entry.started + budget(entry.timeout, self.stolen(entry.started, now))
            if stretched <= now:
                entry.scope.cancel()
            else:
                heapq.heappush(heap, (stretched, next(self._order), entry))

    def record(self, woke_at: float, lateness: float) -> None:
        """Note one wake that came `lateness` seconds late (calls in time order)."""
        self._wakes.append((woke_at, lateness))
        self.worst = max(self.worst, lateness)

    def stolen(self, start: float, end: float) -> float:
        """Seconds of the interval [start, end] the loop spent late.

        A wake at `w` that came `l` late stands for the loop being away from
        `w - l` to `w`; overlapping spans count once.
        """
        spans = []
        for woke_at, lateness in reversed(self._wakes):  # newest first: a check is short
            if woke_at < start:
                break
            if lateness > 0:
                spans.append((max(start, woke_at - lateness), min(end, woke_at)))
        spans.sort()
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
    time the balancer stole meanwhile (`budget`), and the meter's task, which
    must be running, keeps it. Exceptions from `fn` propagate as themselves.
    """
    if meter is None:
        with trio.move_on_after(timeout):
            return await fn()
        return None
    entry = meter.deadline(timeout)
    try:
        with entry.scope:
            return await fn()
    finally:
        meter.finished(entry)
    return None
