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
4. A burst: after an accept, connections already queued in the backlog are
   taken too, up to `ACCEPT_BURST`, without a scheduler turn between them
   (HAProxy's `tune.maxaccept`), each under steps 1 and 2. trio's accept
   yields after every connection, and a scheduler turn lasts as long as every
   busy connection's work, so one accept per turn left the 64th client of a
   busy frontend waiting 1.5 s for its first byte.

The fd reserve itself (how it counts, what it keeps) is lb/fdreserve.py's.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from lb.fdreserve import FdReserve
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
ACCEPT_BURST = 64
"""Connections taken from the backlog per scheduler turn, at most."""

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
        _accept_burst(listener, handler, nursery, limiter, reserve)


def _accept_burst(
    listener: trio.abc.Listener[Any], handler: Handler, nursery: trio.Nursery,
    limiter: trio.CapacityLimiter | None, reserve: FdReserve | None,
) -> None:
    """Take what is already queued behind an accept, within the limit and the reserve."""
    for _ in range(ACCEPT_BURST - 1):
        token = object()
        if limiter is not None:
            try:
                limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                return
        stream = None
        if reserve is None or reserve.take():
            stream = accept_queued(listener)
        if stream is None:
            if limiter is not None:
                limiter.release_on_behalf_of(token)
            return
        nursery.start_soon(_run_handler, handler, stream, limiter, token)


def accept_queued(listener: trio.abc.Listener[Any]) -> trio.abc.Stream | None:
    """A connection already waiting in `listener`'s backlog, taken without a
    scheduler turn; None when there is none, or the listener cannot say.

    Listeners that wrap another (the app's reload gates) offer
    `accept_queued()` themselves.
    """
    if isinstance(listener, trio.SocketListener):
        return _accept_from_backlog(listener.socket)
    take = getattr(listener, "accept_queued", None)
    return take() if callable(take) else None


def _accept_from_backlog(sock: trio.socket.SocketType) -> trio.SocketStream | None:
    # trio's own accept always ends in a checkpoint; the stdlib call on the
    # same non-blocking fd does not. The borrowed socket object is detached so
    # that it never closes the listener's fd. Family, type and protocol are
    # given so that the stdlib does not ask the kernel for them (getsockname and
    # two getsockopt calls per try, most tries finding the backlog empty).
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    try:
        conn, _ = raw.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return None  # out of fds or similar: the next trio accept reports it
    finally:
        raw.detach()
    return trio.SocketStream(trio.socket.from_stdlib_socket(conn))


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
