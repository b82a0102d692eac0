"""Listening sockets, and the one accept policy every listener follows.

Theory of operation
-------------------
Opening: `open_listeners` binds a frontend's or the admin API's address and,
when that fails, raises a `ListenError` that says in one line what could not
listen where and why ("cannot listen on 127.0.0.1:8443 for frontend https:
address already in use"), instead of trio's nested groups.

Accepting (`accept_loop`, used by the L4 and L7 frontends and the admin API),
in this order for each connection:

1. Connection limit, by back-pressure (HAProxy's maxconn): a token is taken
   from the listener's `CapacityLimiter` *before* accept, so over the limit
   the loop simply stops accepting and new clients wait in the kernel's
   backlog (and get served as soon as a connection ends) rather than being
   accepted and closed. The handler's task returns the token.
2. The fd reserve (frontends only, see `FdReserve`): while the process's open
   fds are within `reserve` of RLIMIT_NOFILE, frontends stop accepting, so
   that the admin API and the probes, which never wait on the reserve, always
   find an fd when clients have taken all the others.
3. accept(); EMFILE, ENFILE, ENOBUFS or ENOMEM from it means "out of
   resources for now", not "listener broken": the loop sleeps a back-off
   that doubles from 10 ms to a 1 s cap (reset by the next accept that
   works), and tells `AcceptGuard.on_pause` each time, and logs through a
   once-per-interval throttle: "accept paused: too many open files (37 times
   in the last 10s)", never a line or a traceback per failure.

Why the reserve is enforced at accept and measured the way it is: clients
are the only unbounded consumer of fds (each accepted connection costs about
two: itself and its upstream), so gating accept bounds them, and a check at
accept costs nothing on the connections already served. Counting open fds
means listing /proc/self/fd, O(open fds), too dear for every accept, so a
count buys a *budget*: (limit - reserve - open) // 2 accepts. The process
recounts when the budget is spent or a quarter second has passed (fds opened
elsewhere, e.g. by L7 connections to a second pool, and fds closed, both show
up then). Where the fd table cannot be read (no /proc) there is no reserve.
The reserve is shared by every frontend of the process (one fd table), and
is `CASLB_FD_RESERVE` fds when set, else a quarter of the limit capped at 64.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from probes.local_resources import (
    RESOURCE_ERRNOS,
    OncePerInterval,
    describe_errno,
    local_resource_errno,
)

log = logging.getLogger("caslb.listeners")

BACKOFF_START = 0.01
BACKOFF_CAP = 1.0
LOG_INTERVAL = 10.0
FDS_PER_CONNECTION = 2
"""A client connection's own fd plus its upstream's."""
RECOUNT_AFTER = 0.25
"""Seconds a count of open fds is trusted for, whatever budget is left."""
RESERVE_CAP = 64
RESERVE_ENV = "CASLB_FD_RESERVE"

PauseHook = Callable[[str, str], None]
"""`(listener, reason)`: told each time a listener pauses; reason is an errno
name in lowercase ("emfile") or "fd_reserve"."""


class ListenError(OSError):
    """An address could not be bound; the message says which, for whom and why."""

    def __str__(self) -> str:
        return str(self.strerror)  # the line itself, without OSError's "[Errno 98]"


def _ignore_pause(listener: str, reason: str) -> None:
    pass


# -- opening --------------------------------------------------------------------------

def listen_failure(host: str, port: int, what: str, exc: OSError) -> ListenError:
    """The one-line error for a failed bind of (host, port) for `what`."""
    number = exc.errno
    if number is None and isinstance(exc.__cause__, OSError):
        number = exc.__cause__.errno
    why = os.strerror(number).lower() if number else str(exc)
    shown = f"[{host}]" if ":" in host else host
    return ListenError(number or 0, f"cannot listen on {shown}:{port} for {what}: {why}")


async def open_reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener on (host, port) with SO_REUSEADDR and SO_REUSEPORT set.

    Raises:
        OSError: the address cannot be resolved or bound.
    """
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                          flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve listen address {host!r}")
    family, kind, proto, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def open_listeners(
    host: str, port: int, *, what: str, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Listeners on (host, port) for `what` (e.g. "frontend https", "the admin API").

    Raises:
        ListenError: naming the address, `what` and the cause.
    """
    try:
        if reuse_port:
            return [await open_reuse_port_listener(host, port)]
        return list(await trio.open_tcp_listeners(port, host=host))
    except OSError as exc:
        raise listen_failure(host, port, what, exc) from exc


# -- the fd reserve -------------------------------------------------------------------

def default_reserve(limit: int) -> int:
    """The fds kept back by default under a soft limit of `limit`."""
    return max(1, min(RESERVE_CAP, limit // 4))


def accept_budget(open_fds: int, limit: int, reserve: int) -> int:
    """How many connections frontends may accept before the reserve is reached."""
    return max(0, (limit - reserve - open_fds) // FDS_PER_CONNECTION)


def count_open_fds() -> int | None:
    """This process's open fds, or None where the fd table cannot be listed."""
    for table in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(table)) - 1  # listing it opened one more
        except OSError:
            continue
    return None


def soft_fd_limit() -> int | None:
    """RLIMIT_NOFILE's soft limit, None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def reserve_from_environment() -> int | None:
    """`CASLB_FD_RESERVE` as a count of fds, None when unset.

    Raises:
        ValueError: the variable is not a whole number >= 0.
    """
    text = os.environ.get(RESERVE_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{RESERVE_ENV}={text!r}: want a whole number of fds (0 disables)")
    return int(text)


class FdReserve:
    """Keeps frontends from taking the process's last fds.

    Args:
        reserve: fds to keep free; None follows `default_reserve` of the limit.
        count_open: counts open fds (None: unknown, no reserve).
        fd_limit: the soft fd limit (None: unlimited, no reserve).
        clock: the time source (trio's by default).
    """

    def __init__(
        self,
        reserve: int | None = None,
        *,
        count_open: Callable[[], int | None] = count_open_fds,
        fd_limit: Callable[[], int | None] = soft_fd_limit,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if reserve is not None and reserve < 0:
            raise ValueError(f"fd reserve must not be negative, not {reserve!r}")
        self.reserve = reserve
        self._count_open, self._fd_limit, self._clock = count_open, fd_limit, clock
        self._budget = 0
        self._counted_at: float | None = None
        self.open_fds: int | None = None
        self.limit: int | None = None

    def kept(self) -> int:
        """The fds this reserve keeps under the current limit."""
        if self.limit is None:
            return 0
        return default_reserve(self.limit) if self.reserve is None else self.reserve

    def take(self) -> bool:
        """Take room for one accept; False while open fds are within the reserve."""
        now = self._clock()
        stale = self._counted_at is None or now - self._counted_at >= RECOUNT_AFTER
        if self._budget <= 0 or stale:
            self._recount(now)
        if self._budget <= 0:
            return False
        self._budget -= 1
        return True

    def _recount(self, now: float) -> None:
        self._counted_at = now
        self.open_fds, self.limit = self._count_open(), self._fd_limit()
        if self.open_fds is None or self.limit is None or self.kept() == 0:
            self._budget = 1 << 30
        else:
            self._budget = accept_budget(self.open_fds, self.limit, self.kept())

    def describe(self) -> str:
        """The state for a log line: "230 of 256 fds open, 64 kept for the admin API and probes"."""
        return (f"{self.open_fds} of {self.limit} fds open, "
                f"{self.kept()} kept for the admin API and probes")


# -- accepting ------------------------------------------------------------------------

@dataclass(eq=False)
class AcceptGuard:
    """What the listeners of one process share.

    Attributes:
        reserve: the fd reserve frontends respect (None: no reserve).
        on_pause: counts pauses (the app's metrics).
    """

    reserve: FdReserve | None = None
    on_pause: PauseHook = _ignore_pause
    _throttles: dict[tuple[str, str], OncePerInterval] = field(default_factory=dict)

    def paused(self, listener: str, reason: str, what: str) -> None:
        """Count one pause of `listener` and log it if a line is due."""
        self.on_pause(listener, reason)
        throttle = self._throttles.setdefault(
            (listener, reason), OncePerInterval(LOG_INTERVAL)
        )
        line = throttle.line(f"{listener}: accept paused: {what}")
        if line is not None:
            log.warning("%s", line)


UNGUARDED = AcceptGuard()
"""A guard with no reserve and no metrics: for listeners built without the app."""


def _reason(number: int) -> str:
    return errno.errorcode.get(number, str(number)).lower()


@dataclass
class Backoff:
    """A sleep that doubles from `start` up to `cap`, and starts over on `reset`."""

    start: float = BACKOFF_START
    cap: float = BACKOFF_CAP
    current: float = 0.0

    def next(self) -> float:
        """The next sleep."""
        self.current = self.start if self.current == 0 else min(self.cap, self.current * 2)
        return self.current

    def reset(self) -> None:
        """Start over after a success."""
        self.current = 0.0


Handler = Callable[[trio.abc.Stream], Awaitable[None]]


async def accept_loop(
    listener: trio.abc.Listener[Any],
    handler: Handler,
    nursery: trio.Nursery,
    *,
    name: str,
    limiter: trio.CapacityLimiter | None = None,
    guard: AcceptGuard = UNGUARDED,
    use_reserve: bool = True,
) -> None:
    """Accept on `listener` until cancelled, running `handler(stream)` in `nursery`.

    Args:
        listener: where to accept.
        handler: serves one connection; it must not raise but Cancelled.
        nursery: where the handlers run.
        name: the listener's name in logs and metrics ("frontend https", "admin").
        limiter: the connection limit, held from before accept to the handler's end.
        guard: the process's fd reserve and pause counter.
        use_reserve: False for the listeners the reserve is kept for (admin).

    Raises:
        OSError: an accept error that is not a lack of resources (listener broken).
    """
    backoff = Backoff()
    reserve = guard.reserve if use_reserve else None
    while True:
        token = object()
        if limiter is not None:
            await limiter.acquire_on_behalf_of(token)
        try:
            while reserve is not None and not reserve.take():
                guard.paused(name, "fd_reserve", reserve.describe())
                await trio.sleep(backoff.next())
            stream = await listener.accept()
        except OSError as exc:
            if limiter is not None:
                limiter.release_on_behalf_of(token)
            number = local_resource_errno(exc)
            if number is None or number not in RESOURCE_ERRNOS:
                raise
            guard.paused(name, _reason(number), describe_errno(number))
            await trio.sleep(backoff.next())
            continue
        except BaseException:
            if limiter is not None:
                limiter.release_on_behalf_of(token)
            raise
        backoff.reset()
        nursery.start_soon(_run_handler, handler, stream, limiter, token)


async def _run_handler(
    handler: Handler, stream: trio.abc.Stream, limiter: trio.CapacityLimiter | None,
    token: object,
) -> None:
    try:
        await handler(stream)
    finally:
        if limiter is not None:
            limiter.release_on_behalf_of(token)


async def serve_listeners(
    listeners: Sequence[trio.abc.Listener[Any]],
    handler: Handler,
    *,
    name: str,
    guard: AcceptGuard = UNGUARDED,
    use_reserve: bool = True,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`trio.serve_listeners` under this module's policy: accept on each until cancelled,
    closing them on the way out."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_serve_one, listener, handler, nursery, name, guard, use_reserve)
        task_status.started(list(listeners))


async def _serve_one(
    listener: trio.abc.Listener[Any], handler: Handler, nursery: trio.Nursery, name: str,
    guard: AcceptGuard, use_reserve: bool,
) -> None:
    async with listener:
        await accept_loop(listener, handler, nursery, name=name, guard=guard,
                          use_reserve=use_reserve)
