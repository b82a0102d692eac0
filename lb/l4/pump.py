"""Move bytes both ways between a client and a server until both are done.

Theory of operation: `relay` runs one flow per direction in a nursery. When both
ends are plain `trio.SocketStream`s each flow splices: socket → pipe → socket
with `os.splice`, so payload never enters Python. Otherwise (TLS streams,
memory streams in tests) each flow copies through `receive_some`/`send_all`.

A splice flow always tries the syscall first and only waits on trio when the
kernel says EAGAIN: readable on the source when the pipe is empty, writable on
the destination when the pipe holds bytes it could not push. Since a flow only
ever waits for readable on its source and writable on its destination, the two
flows of a connection never wait on the same fd for the same event. A pipe is
made once a read fills the copy buffer, and grown to 1 MiB once a flow moved four
pipes' worth, so only bulk flows pay for the ring. A flow asked to park leaves at
its next read wait, where nothing of it is pending (lb/l4/parking.py).

End of stream is forwarded as a half-close (shutdown SHUT_WR, or send_eof), and
the other direction keeps flowing: the relay ends when both directions have
seen EOF. An error on either end (reset, broken pipe) ends the relay at once
and the result names the side that failed, so the caller can reset the other
side rather than fake a clean end. Every transfer touches the optional
`IdleTimer`, which keeps a cancel scope's deadline `idle` seconds ahead.
"""

from __future__ import annotations

import enum
import os
import socket
from dataclasses import dataclass
from typing import Protocol

import trio

from lb.l4.fdio import Pipe, try_splice, write_all
from lb.l4.idle_timer import IdleTimer

COPY_CHUNK = 1 << 16

_CAN_SPLICE = hasattr(os, "splice")
# Errors that mean "this end is gone", as opposed to a bug in the relay.
PEER_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class Side(enum.Enum):
    """One end of a relayed connection."""

    CLIENT = "client"
    SERVER = "server"


class Mode(enum.Enum):
    """How the bytes were moved."""

    SPLICE = "splice"
    COPY = "copy"


@dataclass(frozen=True)
class RelayResult:
    """What a finished relay did.

    Attributes:
        mode: splice or copy.
        upstream_bytes: bytes moved client → server.
        downstream_bytes: bytes moved server → client.
        splice_calls: successful splice(2) calls (0 in copy mode).
        failed: the side whose error ended the relay, or None when both
            directions ended with EOF.
    """

    mode: Mode
    upstream_bytes: int
    downstream_bytes: int
    splice_calls: int
    failed: Side | None


class _Flow:
    """Mutable tally of one direction, owned by the task that runs it."""

    __slots__ = ("at", "bytes", "done", "dst", "failed", "park", "parked", "splices", "src",
                 "waiting")

    def __init__(self, src: Side, dst: Side) -> None:
        self.src = src
        self.dst = dst
        self.at = src  # the side the flow is touching now, blamed if that fails
        self.bytes = 0
        self.splices = 0
        self.failed: Side | None = None
        self.done = False  # saw EOF and passed it on
        self.waiting = False  # in a read wait, with nothing pending: parkable
        self.park = False  # asked to give up its task at its next read wait
        self.parked = False  # gave it up (lb/l4/parked.py resumes it)


class Parking(Exception):
    """A flow asked to park left its read wait; nothing of it is pending."""


async def _wait_readable(flow: _Flow, fd: int) -> None:
    """Wait for `fd` readable, or raise Parking when the flow was asked to park.

    The parker wakes a waiting flow with `notify_closing` (ClosedResourceError); one
    already rescheduled when asked parks too, unread: its readable fd wakes it at once.
    """
    if flow.park:
        raise Parking()
    flow.waiting = True
    try:
        await trio.lowlevel.wait_readable(fd)
    except trio.ClosedResourceError:
        if flow.park:
            raise Parking() from None
        raise
    finally:
        flow.waiting = False
    if flow.park:
        raise Parking()


def can_splice(a: trio.abc.Stream, b: trio.abc.Stream) -> bool:
    """True when both streams are plain sockets that splice(2) can serve."""
    return _CAN_SPLICE and isinstance(a, trio.SocketStream) and isinstance(b, trio.SocketStream)


class Tap(Protocol):
    """Sees every client chunk before it goes upstream, while `active`.

    While a tap is active the upstream flow copies (never splices), so nothing
    bypasses it: the first-flight recorder is a tap.
    """

    active: bool

    def chunk(self, data: bytes) -> None:
        """A chunk about to be sent upstream."""

    def eof(self) -> None:
        """The client half-closed."""


class Link:
    """One client ⇄ server connection whose two flows can be run separately.

    `relay` runs both in a nursery; the frontend runs the upstream flow in a
    task while its own task waits for the server's first bytes and then runs
    the downstream flow, so one connection costs one extra task.

    Args:
        client: the accepted client stream.
        server: the connected upstream stream.
        idle: touched on every transfer; its scope should enclose the flows.
    """

    __slots__ = ("client", "down", "idle", "mode", "server", "up")

    def __init__(
        self, client: trio.abc.Stream, server: trio.abc.Stream, idle: IdleTimer | None = None
    ) -> None:
        self.client, self.server, self.idle = client, server, idle
        self.mode = Mode.SPLICE if can_splice(client, server) else Mode.COPY
        self.up = _Flow(Side.CLIENT, Side.SERVER)
        self.down = _Flow(Side.SERVER, Side.CLIENT)

    async def run_up(self, stop: trio.CancelScope, tap: Tap | None = None) -> None:
        """Client → server until EOF; on a peer error, record the side and cancel `stop`."""
        await self._run(self.up, self.client, self.server, stop, tap)

    async def run_down(self, stop: trio.CancelScope, first: bytes = b"") -> None:
        """Server → client (after `first`, bytes already read from the server) until EOF.

        On a peer error, record the side and cancel `stop`.
        """
        await self._run(self.down, self.server, self.client, stop, None, first)

    def result(self) -> RelayResult:
        """What the flows did so far."""
        return RelayResult(
            mode=self.mode,
            upstream_bytes=self.up.bytes,
            downstream_bytes=self.down.bytes,
            splice_calls=self.up.splices + self.down.splices,
            failed=self.up.failed or self.down.failed,
        )

    async def _run(
        self,
        flow: _Flow,
        src: trio.abc.Stream,
        dst: trio.abc.Stream,
        stop: trio.CancelScope,
        tap: Tap | None,
        first: bytes = b"",
    ) -> None:
        try:
            if self.mode is Mode.SPLICE:
                assert isinstance(src, trio.SocketStream) and isinstance(dst, trio.SocketStream)
                await _splice_flow(flow, src, dst, self.idle, tap, first)
            else:
                if first:
                    flow.at = flow.dst
                    await dst.send_all(first)
                    flow.bytes += len(first)
                await _copy_flow(flow, src, dst, self.idle, tap)
            flow.done = True
        except Parking:
            flow.parked = True
        except PEER_ERRORS:
            flow.failed = flow.at
            stop.cancel()


async def relay(
    client: trio.abc.Stream,
    server: trio.abc.Stream,
    *,
    idle: IdleTimer | None = None,
) -> RelayResult:
    """Relay both directions until both end or either end fails.

    Neither stream is closed here: the caller decides between a clean close and a
    reset from the result.

    Args:
        client: the accepted client stream.
        server: the connected upstream stream.
        idle: touched on every transfer; its scope should enclose this call.
    """
    link = Link(client, server, idle)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run_up, nursery.cancel_scope)
        nursery.start_soon(link.run_down, nursery.cancel_scope)
    return link.result()


def _tapped(tap: Tap | None, data: bytes) -> None:
    if tap is not None and tap.active:
        if data:
            tap.chunk(data)
        else:
            tap.eof()


async def _copy_flow(
    flow: _Flow,
    src: trio.abc.Stream,
    dst: trio.abc.Stream,
    idle: IdleTimer | None,
    tap: Tap | None,
) -> None:
    """receive_some → send_all until EOF, then half-close dst when it can."""
    while True:
        flow.at = flow.src
        data = bytes(await src.receive_some(COPY_CHUNK))
        _tapped(tap, data)
        if not data:
            break
        flow.at = flow.dst
        await dst.send_all(data)
        flow.bytes += len(data)
        if idle is not None:
            idle.touch()
    flow.at = flow.dst
    await send_eof(dst)


async def send_eof(stream: trio.abc.Stream) -> None:
    """Half-close a stream if it can be half-closed."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()


async def _splice_flow(
    flow: _Flow,
    src: trio.SocketStream,
    dst: trio.SocketStream,
    idle: IdleTimer | None,
    tap: Tap | None,
    first: bytes,
) -> None:
    """`first` written, small reads are copied; from the first full read on, splice(2).

    Short exchanges (banners, handshakes, one request) never pay for a pipe; a
    read that fills the copy buffer marks a bulk flow, which moves to the pipe.
    The fds are written directly: trio's `send_all` costs 60 Python calls a call.
    """
    src_fd, dst_fd = src.socket.fileno(), dst.socket.fileno()
    if first:
        flow.at = flow.dst
        await write_all(dst_fd, first)
        flow.bytes += len(first)
    if await _copy_until_bulk(flow, src_fd, dst_fd, idle, tap):
        pipe = Pipe()
        try:
            await _splice_loop(flow, pipe, src_fd, dst_fd, idle)
        finally:
            pipe.close()
    flow.at = flow.dst
    dst.socket.shutdown(socket.SHUT_WR)


async def _copy_until_bulk(
    flow: _Flow, src_fd: int, dst_fd: int, idle: IdleTimer | None, tap: Tap | None
) -> bool:
    """read/write on the fds until EOF (False) or a read fills the buffer (True)."""
    unyielded = 0  # rounds since the last trio checkpoint
    while True:
        flow.at = flow.src
        try:
            data: bytes | None = os.read(src_fd, COPY_CHUNK)
        except BlockingIOError:
            data = None  # waited below: awaiting in here keeps the exception alive while idle
        if data is None:
            unyielded = 0
            await _wait_readable(flow, src_fd)
            continue
        _tapped(tap, data)
        if not data:
            return False
        flow.at = flow.dst
        await write_all(dst_fd, data)
        flow.bytes += len(data)
        if idle is not None:
            idle.touch()
        if len(data) == COPY_CHUNK and not (tap is not None and tap.active):
            return True
        unyielded += 1
        if unyielded >= 8:  # a source that never blocks must still let others run
            unyielded = 0
            await trio.lowlevel.checkpoint()


async def _splice_loop(
    flow: _Flow, pipe: Pipe, src_fd: int, dst_fd: int, idle: IdleTimer | None
) -> None:
    eof = False
    grow_after = 4 * pipe.size  # a flow that moved this much is bulk: give it the big pipe
    while not (eof and pipe.held == 0):
        moved = False
        if not eof and pipe.held < pipe.size:
            flow.at = flow.src
            n = try_splice(src_fd, pipe.write_fd, pipe.size - pipe.held)
            if n == 0:
                eof = True
            elif n > 0:
                pipe.held += n
                moved = True
        if pipe.held:
            flow.at = flow.dst
            n = try_splice(pipe.read_fd, dst_fd, pipe.held)
            if n > 0:
                pipe.held -= n
                flow.bytes += n
                flow.splices += 1
                moved = True
        if moved:
            if flow.bytes >= grow_after > 0:
                pipe.grow()
                grow_after = 0
            if idle is not None:
                idle.touch()
            await trio.lowlevel.checkpoint()
        elif pipe.held:
            await trio.lowlevel.wait_writable(dst_fd)
        elif not eof:
            await _wait_readable(flow, src_fd)
