"""Parking idle relays: an idle connection gives up its flow tasks until either end stirs.

Theory of operation: a relaying connection costs two trio tasks, each parked in
a read wait with its chain of coroutine frames, trio's epoll registration and
cancel bookkeeping, about 10 KiB of the 17 an idle connection held. Most
proxied connections (a mail client's IMAP IDLE, an Outlook connection between
requests) sit idle for minutes. The `Parker` of a frontend lets such a
connection wait with one parked task instead of three, and no flow chains.

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
- The connection's own task, once every flow parked or ended, *parks*: the fds
  of the parked flows go into the parker's own epoll object and the task waits
  in `wait_task_rescheduled`. One parker task waits for that epoll's fd to turn
  readable (trio waits on an epoll fd like on a socket) and reschedules the
  task whose fd is readable or hung up; that task runs the flows again, the
  upstream one in a fresh task.
- Every bound still holds, because the parked task is still inside every scope
  it was in: the idle timeout, the lease's reset and drain deadline, shutdown.
  A cancellation aborts the wait, which takes the fds out of the epoll. The
  connection still counts as active, and its end is logged as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import select
from dataclasses import dataclass

import trio

from lb.boundary import log_internal_error
from lb.l4.events import L4Events
from lb.l4.pump import Link, Mode

log = logging.getLogger("caslb.l4")

SWEEP_EVERY = 0.5
"""Seconds between sweeps: a relay idle for one to two of them is parked."""

_WAKE_EVENTS = select.EPOLLIN | select.EPOLLRDHUP


@dataclass(frozen=True, eq=False)
class _Parked:
    """A parked connection's task and the fds that wake it."""

    task: trio.lowlevel.Task
    fds: tuple[int, ...]


class Parker:
    """One frontend's parked connections: an epoll object, a sweep, one task (`run`).

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
        self._parked: dict[int, _Parked] = {}
        self._watched: dict[Link, int] = {}  # relay → bytes it had moved at the last sweep
        # The sweep sleeps here while nothing is watched: an idle frontend (the mail
        # listeners of an L7 farm, mostly) then costs no timer wake twice a second.
        self._nothing_watched = trio.lowlevel.ParkingLot()

    @property
    def running(self) -> bool:
        """True while `run` serves parked connections (parking is off otherwise)."""
        return self._epoll is not None

    @property
    def parked(self) -> int:
        """Connections parked now."""
        return len({id(p) for p in self._parked.values()})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake parked connections and sweep for idle ones until cancelled."""
        if self._epoll is not None:
            raise RuntimeError("the parker is already running")
        epoll = select.epoll()
        self._epoll = epoll
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep_loop)
                task_status.started()
                await self._wake_loop(epoll)
        finally:
            self._epoll = None
            epoll.close()

    def watch(self, link: Link) -> None:
        """Consider `link` for parking while its flows run (splice relays only)."""
        if self._epoll is not None and link.mode is Mode.SPLICE:
            if not self._watched:
                self._nothing_watched.unpark_all()
            self._watched[link] = -1

    def forget(self, link: Link) -> None:
        """Stop considering `link` (its flows ended or parked)."""
        self._watched.pop(link, None)

    async def park(self, fds: tuple[int, ...]) -> None:
        """Wait, without a task per fd, until one of `fds` is readable or hung up.

        With the parker stopped it returns at once. A cancellation (idle
        timeout, lease reset, shutdown) ends the wait and takes the fds out of
        the epoll first.
        """
        epoll = self._epoll
        if epoll is None:  # stopped since the flows were asked: they run again at once
            await trio.lowlevel.checkpoint()
            return
        parked = _Parked(trio.lowlevel.current_task(), fds)
        try:
            for fd in fds:
                epoll.register(fd, _WAKE_EVENTS)
                self._parked[fd] = parked
        except BaseException:
            self._release(parked)
            raise

        # A partial, not a closure: it is held for as long as the connection parks.
        await trio.lowlevel.wait_task_rescheduled(functools.partial(self._abort, parked))

    def _abort(self, parked: _Parked, _: object) -> trio.lowlevel.Abort:
        self._release(parked)
        return trio.lowlevel.Abort.SUCCEEDED

    async def _wake_loop(self, epoll: select.epoll) -> None:
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0):
                parked = self._parked.get(fd)
                if parked is not None:
                    self._wake(parked)

    def _wake(self, parked: _Parked) -> None:
        try:
            self._release(parked)
            trio.lowlevel.reschedule(parked.task)
        except Exception as exc:  # that connection stays parked until its idle timeout
            log_internal_error(log, "the L4 parker waking a connection", exc)
            self._events.internal_error("l4")

    def _release(self, parked: _Parked) -> None:
        for fd in parked.fds:
            if self._parked.get(fd) is parked:
                del self._parked[fd]
                if self._epoll is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self._epoll.unregister(fd)

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


async def relay_parked(link: Link, parker: Parker) -> None:
    """While the flows of `link` park, park the connection, then run them again."""
    while all_parked(link):
        await parker.park(_parked_fds(link))
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


def _parked_fds(link: Link) -> tuple[int, ...]:
    fds = []
    for flow, stream in ((link.up, link.client), (link.down, link.server)):
        if flow.parked and isinstance(stream, trio.SocketStream):
            fds.append(stream.socket.fileno())
    return tuple(fds)
