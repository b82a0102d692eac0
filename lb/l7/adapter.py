"""A trio stream with an h11 connection on top: receive events, send batches of events.

Reads are bounded: bytes are pulled from the stream only when h11 needs them,
`receive_size` at a time, so a peer that sends faster than the other side
reads fills socket buffers, not memory. Sends join several events into one
write (a response head with the body that is already at hand goes out in one
socket call: Nagle-free and syscall-light).
"""

from __future__ import annotations

import math

import h11
import trio

Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]

DEFAULT_RECEIVE_SIZE = 64 * 1024


class HeaderTimeout(Exception):
    """The peer started a request head but did not finish it in time."""


class IdleTimeout(Exception):
    """The peer sent nothing within the idle timeout."""


class H11Stream:
    """One side of the proxy: a stream and its h11 state machine.

    Args:
        stream: the transport (TCP, TLS or an in-memory stream).
        conn: the h11 connection (h11.SERVER toward clients, h11.CLIENT upstream).
        receive_size: the most bytes read from the stream at once.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
    ) -> None:
        self.stream = stream
        self.conn = conn
        self.receive_size = receive_size
        self.bytes_received = 0
        self.bytes_sent = 0

    def __repr__(self) -> str:
        c = self.conn
        return f"<H11Stream {c.our_role} ours={c.our_state} theirs={c.their_state}>"

    def buffered(self) -> int:
        """Bytes received but not yet turned into events (bounded by h11's limit)."""
        return len(self.conn.trailing_data[0])

    def ready_event(self) -> Event:
        """The next event if it is already parsed from buffered bytes, else NEED_DATA."""
        return self.conn.next_event()

    async def next_event(self) -> h11.Event:
        """The next event, reading from the stream as needed.

        EOF shows up as h11.ConnectionClosed (or a RemoteProtocolError mid-message).

        Raises:
            h11.RemoteProtocolError: when the peer breaks HTTP/1.1.
            trio.BrokenResourceError: when the transport fails.
        """
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
            elif event is h11.PAUSED:
                raise RuntimeError("h11 paused: start_next_cycle was not called")
            else:
                return event  # type: ignore[return-value]

    async def next_request(self, idle_deadline: float, header_timeout: float) -> h11.Event:
        """The next event of a new request, under the idle and header timeouts.

        The idle deadline bounds the wait for the first byte; once a byte is at
        hand the head must be complete within `header_timeout` of it.

        Raises:
            IdleTimeout: nothing arrived before `idle_deadline`.
            HeaderTimeout: a head was started but not finished in time.
        """
        started = self.buffered() > 0
        deadline = trio.current_time() + header_timeout if started else idle_deadline
        with trio.CancelScope(deadline=deadline) as scope:
            while True:
                event = self.conn.next_event()
                if event is not h11.NEED_DATA:
                    return event  # type: ignore[return-value]
                await self._receive()
                if not started and self.buffered() > 0:
                    started = True
                    scope.deadline = min(scope.deadline, trio.current_time() + header_timeout)
        if started:
            raise HeaderTimeout(f"request head incomplete after {header_timeout:g}s")
        raise IdleTimeout("no request before the idle timeout")

    async def _receive(self) -> None:
        data = await self.stream.receive_some(self.receive_size)
        if not isinstance(data, bytes):
            data = bytes(data)
        self.bytes_received += len(data)
        self.conn.receive_data(data)

    def encode(self, *events: h11.Event) -> bytes:
        """The bytes h11 produces for `events` (state advances; nothing is written)."""
        out = bytearray()
        for event in events:
            chunk = self.conn.send(event)
            if chunk:
                out += chunk
        return bytes(out)

    async def send(self, *events: h11.Event) -> None:
        """Send `events` in one write."""
        await self.write(self.encode(*events))

    async def write(self, data: bytes) -> None:
        """Write bytes already encoded by `encode`."""
        if data:
            await self.stream.send_all(data)
            self.bytes_sent += len(data)


def deadline_after(seconds: float | None) -> float:
    """The absolute trio deadline `seconds` from now (infinity for None)."""
    return math.inf if seconds is None else trio.current_time() + seconds
