"""Parking idle relays: an idle connection holds no trio task until either end stirs.

Theory of operation: a relaying connection costs its own task and one per
flow, each with its chain of coroutine frames and cancel scopes; even one task
parked in a wait is about 5 KiB, three times what HAProxy spends on a whole idle
connection. Most proxied connections (a mail client's IMAP IDLE, an Outlook
connection between requests) sit idle for minutes. The `Parker` of a frontend
takes such a connection off every task: what is left is a small record (lb/l4/
parked.py `Relay`) that the parker holds, its fds in the parker's epoll object
and its deadline in the parker's heap.

- A committed splice relay is *watched* while its flows run. Every
  `sweep_every` seconds the parker's sweep looks at the watched relays: one
  whose flows are all in a read wait (or done) and that moved no byte since
  the previous sweep is asked to park. Each waiting flow is woken with
  `trio.lowlevel.notify_closing` on its source fd, which reaches only a task
  that is blocked on it (and drops trio's registration of the fd, which stays
  open and is registered again at its next wait); a flow rescheduled in the
  same batch sees the request as its wait returns. Either way the flow leaves
  with nothing pending (a read wait is the only place it parks), and its task
  ends.
- Once every flow parked or ended, the task that ran them hands the relay to
  the parker (`hold`) and returns, leaving every scope it was in. From then on
  the parker owns the relay: one parker task waits for the epoll's fd to turn
  readable (trio waits on an epoll fd like on a socket) and starts a fresh task
  in the parker's nursery for a relay whose fd is readable or hung up
  (`Sleeper.resume`: the flows run again, inside fresh scopes, and may park
  again); another sleeps until the earliest deadline in the heap and ends the
  relays whose deadline passed (`Sleeper.expire`: the idle timeout, a drain's
  grace, or a lease the pool cancelled, which the pool tells the relay of and
  the relay the parker, with `retime`). When the parker stops (shutdown), it
  ends the relays it still holds (`Sleeper.shut`).

The parker knows fds, deadlines and tasks; what a relay does when it wakes,
expires or is shut is lb/l4/parked.py's. Every call into a relay is inside a
failure boundary: a bug ends that relay (logged once, counted), nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import math
import select
from collections.abc import Callable
from typing import Protocol

import trio

from lb.boundary import log_internal_error
from lb.l4.events import L4Events
from lb.l4.pump import Link, Mode

log = logging.getLogger("caslb.l4")

SWEEP_EVERY = 0.25
"""Seconds between sweeps: a relay idle for one to two of them is parked (see
TcpFrontendSettings.park_sweep for the trade)."""

_WAKE_EVENTS = select.EPOLLIN | select.EPOLLRDHUP


class Sleeper(Protocol):
    """What the parker holds: a relay without a task (lb/l4/parked.py `Relay`)."""

    def fds(self) -> tuple[int, ...]:
        """The fds whose readiness wakes it."""

    def due(self) -> float:
        """When it must end if nothing wakes it (-inf: now)."""

    async def resume(self) -> None:
        """Run again, in a fresh task; the parker has let go of it already."""

    def expire(self, now: float) -> None:
        """End it: its deadline passed while parked. The parker has let go of it."""

    def shut(self) -> None:
        """End it: the parker stops. The parker has let go of it."""


class Parker:
    """One frontend's parked relays: an epoll object, a deadline heap, a sweep (`run`).

    Args:
        events: counters; a bug in the parker's own loop is counted there.
        sweep_every: seconds between sweeps for idle relays.
    """

    def __init__(self, events: L4Events, sweep_every: float = SWEEP_EVERY) -> None:
        if not 0 < sweep_every < math.inf:
            raise ValueError(f"sweep interval {sweep_every!r} must be positive")
        self.sweep_every = sweep_every
        self._events = events
        self._epoll: select.epoll | None = None
        self._nursery: trio.Nursery | None = None
        self._by_fd: dict[int, Sleeper] = {}
        self._held: dict[Sleeper, float] = {}  # parked relay → its deadline in the heap
        self._heap: list[tuple[float, int, Sleeper]] = []  # stale entries skipped on pop
        self._order = itertools.count()  # ties in the heap never compare relays
        self._timer: trio.CancelScope | None = None  # the deadline loop's sleep
        self._watched: dict[Link, int] = {}  # relay → bytes it had moved at the last sweep
        # The sweep sleeps here while nothing is watched: an idle frontend (the mail
        # listeners of an L7 farm, mostly) then costs no timer wake twice a second.
        self._nothing_watched = trio.lowlevel.ParkingLot()

    @property
    def running(self) -> bool:
        """True while `run` serves parked relays (parking is off otherwise)."""
        return self._nursery is not None

    @property
    def parked(self) -> int:
        """Relays parked now."""
        return len(self._held)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake, time and sweep parked relays until cancelled; then end those still parked."""
        if self._epoll is not None:
            raise RuntimeError("the parker is already running")
        epoll = select.epoll()
        self._epoll = epoll
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep_loop)
                nursery.start_soon(self._deadline_loop)
                self._nursery = nursery
                task_status.started()
                await self._wake_loop(epoll)
        finally:
            self._nursery = None
            for sleeper in list(self._held):
                self._end(sleeper, "stopping", sleeper.shut)
            self._epoll = None
            epoll.close()

    def hold(self, sleeper: Sleeper) -> bool:
        """Take `sleeper` until an fd of it turns readable or its deadline passes.

        False (and nothing held) when the parker is not running.
        """
        epoll = self._epoll
        if self._nursery is None or epoll is None:
            return False
        if sleeper in self._held:  # its fds are registered: a second try would drop them
            raise RuntimeError("the relay is parked already")
        fds = sleeper.fds()
        try:
            for fd in fds:
                epoll.register(fd, _WAKE_EVENTS)
                self._by_fd[fd] = sleeper
        except BaseException:
            self._unregister(fds)
            raise
        self._held[sleeper] = math.nan  # not in the heap yet: retime pushes it
        self.retime(sleeper)
        return True

    def retime(self, sleeper: Sleeper) -> None:
        """`sleeper.due()` may have changed: keep the heap and the timer in step with it.

        Called by the relay when the pool changed its lease; cheap and never
        ending anything itself, since the pool calls it while it walks its leases.
        """
        queued = self._held.get(sleeper)
        if queued is None:
            return  # not parked: a running relay's scopes see the change themselves
        due = sleeper.due()
        if due == queued:
            return
        self._held[sleeper] = due
        heapq.heappush(self._heap, (due, next(self._order), sleeper))
        if len(self._heap) > 2 * len(self._held) + 64:
            # A relay that parks every few seconds leaves an entry per park, each
            # stale until its idle deadline (minutes away): rebuilding from the
            # live ones keeps the heap within twice the parked relays.
            self._heap = [(d, next(self._order), s) for s, d in self._held.items()]
            heapq.heapify(self._heap)
        if self._timer is not None and due < self._timer.deadline:
            self._timer.deadline = due

    def _let_go(self, sleeper: Sleeper) -> bool:
        """Stop holding `sleeper` (False: it was not held). Its heap entry goes stale."""
        if self._held.pop(sleeper, None) is None:
            return False
        self._unregister(sleeper.fds())
        return True

    def _unregister(self, fds: tuple[int, ...]) -> None:
        for fd in fds:
            self._by_fd.pop(fd, None)
            if self._epoll is not None:
                # Gone already when a relay's socket was closed while it was parked.
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)

    def _end(self, sleeper: Sleeper, what: str, end: Callable[[], object]) -> None:
        """Let go of `sleeper` and call `end` (one of its methods), inside the boundary."""
        try:
            if self._let_go(sleeper):
                end()
        except Exception as exc:  # that relay alone ends; the parker goes on
            log_internal_error(log, f"the L4 parker {what} a relay", exc)
            self._events.internal_error("l4")
            with contextlib.suppress(Exception):
                sleeper.shut()  # closes what the failure left open; a second end does nothing

    async def _wake_loop(self, epoll: select.epoll) -> None:
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0):
                sleeper = self._by_fd.get(fd)
                if sleeper is not None:
                    self._end(sleeper, "waking", functools.partial(self._start, sleeper))

    def _start(self, sleeper: Sleeper) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._resumed, sleeper)

    async def _resumed(self, sleeper: Sleeper) -> None:
        # The relay keeps its own failure boundary; this one catches a bug in how it
        # ends, which would otherwise end the parker's nursery and every relay in it.
        try:
            await sleeper.resume()
        except Exception as exc:
            log_internal_error(log, "the L4 parker resuming a relay", exc)
            self._events.internal_error("l4")
            with contextlib.suppress(Exception):
                sleeper.shut()

    async def _deadline_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._next_due()) as timer:
                self._timer = timer
                await trio.sleep_forever()
            self._timer = None
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                due, _, sleeper = heapq.heappop(self._heap)
                if self._held.get(sleeper) == due:  # else moved since, or no longer parked
                    self._end(sleeper, "expiring", functools.partial(sleeper.expire, now))

    def _next_due(self) -> float:
        while self._heap and self._held.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale: keep the timer from waking for nothing
        return self._heap[0][0] if self._heap else math.inf

    def watch(self, link: Link) -> None:
        """Consider `link` for parking while its flows run (splice relays only)."""
        if self._nursery is not None and link.mode is Mode.SPLICE:
            if not self._watched:
                self._nothing_watched.unpark_all()
            self._watched[link] = -1

    def forget(self, link: Link) -> None:
        """Stop considering `link` (its flows ended or parked)."""
        self._watched.pop(link, None)

    async def _sweep_loop(self) -> None:
        while True:
            if not self._watched:
                await self._nothing_watched.park()
            await trio.sleep(self.sweep_every)
            try:
                self._sweep()
            except Exception as exc:  # a bug here must not end the frontend's connections
                log_internal_error(log, "the L4 parker's sweep", exc)
                self._events.internal_error("l4")

    def _sweep(self) -> None:
        for link, seen in list(self._watched.items()):
            moved = link.up.bytes + link.down.bytes
            if moved == seen and parkable(link):
                del self._watched[link]
                _ask_to_park(link)
            else:
                self._watched[link] = moved


def parkable(link: Link) -> bool:
    """True when every flow of `link` is in a read wait or done, and one still runs."""
    flows = (link.up, link.down)
    if any(f.failed is not None or f.park for f in flows):
        return False
    return all(f.done or f.waiting for f in flows) and not all(f.done for f in flows)


def _ask_to_park(link: Link) -> None:
    for flow, stream in ((link.up, link.client), (link.down, link.server)):
        if not flow.done:
            flow.park = True
            if flow.waiting and isinstance(stream, trio.SocketStream):
                trio.lowlevel.notify_closing(stream.socket)


def all_parked(link: Link) -> bool:
    """True when the flows of `link` stopped to park (none failed, one or both parked)."""
    up, down = link.up, link.down  # spelled out: this runs once per connection
    return ((up.parked or down.parked) and (up.done or up.parked) and (down.done or down.parked)
            and up.failed is None and down.failed is None)


async def run_again(link: Link, parker: Parker) -> None:
    """Run the parked flows of `link` again, until they end or all park once more."""
    for flow in (link.up, link.down):
        flow.park = flow.parked = False
    try:
        async with trio.open_nursery() as nursery:
            parker.watch(link)
            if not link.up.done:
                nursery.start_soon(link.run_up, nursery.cancel_scope)
            if not link.down.done:
                await link.run_down(nursery.cancel_scope)
    finally:
        parker.forget(link)


def parked_fds(link: Link) -> tuple[int, ...]:
    """The fds of the flows of `link` that parked: readable, they have work again."""
    fds = []
    for flow, stream in ((link.up, link.client), (link.down, link.server)):
        if flow.parked and isinstance(stream, trio.SocketStream):
            fds.append(stream.socket.fileno())
    return tuple(fds)
