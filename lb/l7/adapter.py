"""A trio stream with caslb's HTTP/1.1 codec on top: receive events, send batches of events.

Reads are bounded: bytes are pulled from the stream only when the codec needs them,
`receive_size` at a time, so a peer that sends faster than the other side
reads fills socket buffers, not memory. Sends join several events into one
write (a response head with the body that is already at hand goes out in one
socket call: Nagle-free and syscall-light).

On a plain socket (no TLS) reads and writes try the syscall first and wait on
trio only when the kernel says EAGAIN. trio's own socket calls yield to the
scheduler after every successful call, four times per proxied request; here a
call that needs no wait costs no scheduler round trip. Fairness and prompt
cancellation are kept: every call still checks for cancellation, and after
`_YIELD_EVERY` calls in a row without a wait the task yields once, so a peer
that always has bytes ready cannot starve the other connections. For the
same reason a deadline (a trio cancel scope, a few microseconds to arm and
disarm) is armed only around a wait: bytes already on the socket are read
without one, and the deadline is checked after the read. TLS that the
frontend terminates on a real socket (lb.l7.tlsstream) takes the same path:
its reads ask the TLS object and the socket without waiting, and its writes
encrypt and write the fd.
"""

from __future__ import annotations

import math
import os

import trio

from lb.l7.sockio import open_fd, stream_error
from lb.l7.tlsstream import TlsStream
from lb.l7.wire.connection import WireConnection, send_all
from lb.l7.wire.events import NEED_DATA, PAUSED, Event, Sentinel

DEFAULT_RECEIVE_SIZE = 256 * 1024
# The first read after a short one: enough for any head and a small body. Each
# read that fills its buffer doubles the next, up to `receive_size`, so a bulk
# body moves in a few large reads (a quarter of the events and Python steps
# per MiB at 256 KiB) while a small request does not pay for allocating and
# shrinking a large buffer on every read.
FIRST_READ_SIZE = 64 * 1024
_YIELD_EVERY = 8  # socket calls in a row that did not wait before a forced yield
# A TLS call also encrypts or decrypts, so a TLS connection holds the loop longer per
# call; yielding every second call kept its p99 at 64 connections at 2 × p50 (every
# eighth: 2.5 ×) at no cost in CPU per request (docs/benchmarks.md).
_TLS_YIELD_EVERY = 2


class HeaderTimeout(Exception):
    """The peer started a request head but did not finish it in time."""


class IdleTimeout(Exception):
    """The peer sent nothing within the idle timeout."""


class HttpStream:
    """One side of the proxy: a stream and its codec state.

    Args:
        stream: the transport (TCP, TLS or an in-memory stream).
        conn: the codec's connection (server role toward clients, client role upstream).
        receive_size: the most bytes read from the stream at once (the first
            read after a short one asks for at most `FIRST_READ_SIZE`).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: WireConnection,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
    ) -> None:
        self.stream = stream
        self.conn = conn
        self.receive_size = receive_size
        self._read_size = min(FIRST_READ_SIZE, receive_size)
        self.bytes_received = 0
        self.bytes_sent = 0
        # Set once the peer's EOF reached the codec: tells a cut-short message (the peer
        # left) from a malformed one (the peer broke the protocol).
        self.peer_closed = False
        # The trio socket under a plain SocketStream or caslb's own TLS stream: the
        # syscall-first path. trio's SSLStream (upstream re-encryption) and in-memory
        # streams go through their own methods.
        self._tls = stream if isinstance(stream, TlsStream) else None
        self._socket = (stream.socket if isinstance(stream, trio.SocketStream | TlsStream)
                        else None)
        self._unyielded = 0
        self._yield_every = _TLS_YIELD_EVERY if self._tls is not None else _YIELD_EVERY

    def __repr__(self) -> str:
        return f"<HttpStream {self.conn!r}>"

    def buffered(self) -> int:
        """Bytes received but not yet turned into events (bounded by the head limit)."""
        return self.conn.buffered()

    def ready_event(self) -> Event | Sentinel:
        """The next event if it is already parsed from buffered bytes, else NEED_DATA."""
        return self.conn.next_event()

    async def next_event(self) -> Event:
        """The next event, reading from the stream as needed.

        EOF shows up as ConnectionClosed (or a WireError mid-message).

        Raises:
            WireError: when the peer breaks HTTP/1.1.
            trio.BrokenResourceError: when the transport fails.
        """
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                await self._receive()
            elif event is PAUSED:
                raise RuntimeError("message done: start_next_cycle was not called")
            else:
                assert isinstance(event, Event)
                return event

    async def event_now(self) -> Event | Sentinel:
        """The next event from bytes buffered or already on the socket; NEED_DATA
        when it would have to wait for more."""
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA or not await self._receive_now():
                return event

    async def next_request(self, idle_deadline: float, header_timeout: float) -> Event:
        """The next event of a new request, under the idle and header timeouts.

        The idle deadline bounds the wait for the first byte; once a byte is at
        hand the head must be complete within `header_timeout` of it. Bytes the
        socket already holds are read without arming a deadline (most requests
        on a busy keep-alive connection are there before they are asked for);
        only a wait is bounded, and the deadline is checked after every read.

        Raises:
            IdleTimeout: nothing arrived before `idle_deadline`.
            HeaderTimeout: a head was started but not finished in time.
        """
        started = self.buffered() > 0
        deadline = trio.current_time() + header_timeout if started else idle_deadline
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, Event)  # not PAUSED: a new cycle was started
                return event
            if not await self._receive_now():
                with trio.move_on_at(deadline):
                    await self._wait_for_bytes()
            if trio.current_time() >= deadline:
                if started:
                    raise HeaderTimeout(f"request head incomplete after {header_timeout:g}s")
                raise IdleTimeout("no request before the idle timeout")
            if not started and self.buffered() > 0:
                started = True
                deadline = min(deadline, trio.current_time() + header_timeout)

    async def _receive(self) -> None:
        if self._socket is None:
            self._take(bytes(await self.stream.receive_some(self._read_size)))
            return
        while not await self._receive_now():
            await trio.lowlevel.wait_readable(self._socket)
            self._unyielded = 0

    async def _wait_for_bytes(self) -> None:
        """Wait for bytes: a plain socket until readable (the caller reads), else read."""
        if self._socket is None:
            await self._receive()
        else:
            await trio.lowlevel.wait_readable(self._socket)
            self._unyielded = 0

    async def _receive_now(self) -> bool:
        """Read what a plain socket already holds; False when it would wait (or is not one)."""
        if self._socket is None:
            return False
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._tls is not None:
            got = self._tls.receive_now(self._read_size)
            if got is None:
                return False
            self._take(got)
            await self._maybe_yield()
            return True
        # The fd is read afresh before each call: a pool reset closes the
        # socket from another task, and a stale number could be reused.
        fd = open_fd(self._socket)
        try:
            data = os.read(fd, self._read_size)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise stream_error(exc) from exc
        self._take(data)
        await self._maybe_yield()
        return True

    def _take(self, data: bytes) -> None:
        self._read_size = next_read_size(self._read_size, len(data), self.receive_size)
        self.bytes_received += len(data)
        self.peer_closed = not data
        self.conn.receive_data(data)

    def encode(self, *events: Event) -> bytes:
        """The bytes the codec produces for `events` (state advances; nothing is written)."""
        return send_all(self.conn, events)

    async def send(self, *events: Event) -> None:
        """Send `events` in one write."""
        await self.write(self.encode(*events))

    async def write(self, data: bytes) -> None:
        """Write bytes already encoded by `encode`."""
        if data:
            if self._tls is not None:
                if await self._tls.send_unyielded(data):
                    self._unyielded = 0
                await self._maybe_yield()
            elif self._socket is not None:
                await self._socket_send_all(self._socket, data)
            else:
                await self.stream.send_all(data)
            self.bytes_sent += len(data)

    # -- the plain-socket path (see the module docstring) ------------------------------

    async def _socket_send_all(self, sock: trio.socket.SocketType, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            fd = open_fd(sock)
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                self._unyielded = 0
            except OSError as exc:
                raise stream_error(exc) from exc
        await self._maybe_yield()

    async def _maybe_yield(self) -> None:
        self._unyielded += 1
        if self._unyielded >= self._yield_every:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()


def next_read_size(asked: int, got: int, most: int) -> int:
    """The size of the next read: doubled (up to `most`) after a read that filled
    its buffer, kept after one that did not, back to the first size after one
    that a first-size read would have held."""
    if got >= asked:
        return min(asked * 2, most)
    if got < FIRST_READ_SIZE:
        return min(FIRST_READ_SIZE, most)
    return asked


def deadline_after(seconds: float | None) -> float:
    """The absolute trio deadline `seconds` from now (infinity for None)."""
    return math.inf if seconds is None else trio.current_time() + seconds
