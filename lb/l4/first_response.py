"""One upstream attempt up to the server's first byte, keeping the client's first flight.

Theory of operation: until a server has sent anything, nothing has reached the
client, so an attempt that goes wrong can be abandoned and the connection sent
to another server, provided the other server gets exactly what the first one
got. `FirstFlight` keeps those bytes (and whether the client already sent EOF);
`await_first_response` replays them onto a fresh server stream and then races
two things:

- the server's first read, under a timer;
- a reader that forwards further client bytes, appending them to the flight.

The timer is what tells a hung server from a slow client. It runs from the
connection opening for banner protocols (the server owes the first word), and
otherwise only once client bytes have been forwarded, re-armed after each new
client chunk: a client that is slow to send its ClientHello is not waiting for
the server, so the server's silence means nothing yet.

The attempt ends with one `Outcome`: ANSWERED (with the server's first bytes),
SILENT (the timer fired), CLOSED (the server reset or closed first), CLIENT_GONE,
or COMMITTED when the flight outgrew its bound: replay is then impossible, so
the attempt is kept without a first-response bound. The reader is only cancelled
while it waits on the client, never mid-send, so the flight and the server
never disagree about what was sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import trio

from lb.l4.connector import failure_reason
from lb.l4.pump import COPY_CHUNK, IdleTimer

_PEER_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class FirstFlight:
    """The client's bytes sent before any server byte, kept (up to a bound) for replay.

    Attributes:
        data: the bytes kept, in order.
        total: every byte received in this phase (equals len(data) unless overflowed).
        eof: True once the client half-closed.
        limit: bytes kept at most.
    """

    def __init__(self, limit: int, initial: bytes = b"") -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0
        self.eof = False
        self.add(initial)

    @property
    def overflowed(self) -> bool:
        """True when more arrived than could be kept, so it can no longer be replayed."""
        return self.total > self.limit

    def add(self, chunk: bytes | bytearray) -> None:
        """Keep a chunk, unless the flight already passed its bound."""
        self.total += len(chunk)
        if not self.overflowed:
            self.data += chunk


class Verdict(enum.Enum):
    """How one attempt ended."""

    ANSWERED = "answered"
    SILENT = "first_response_timeout"
    CLOSED = "closed"
    CLIENT_GONE = "client_gone"
    COMMITTED = "committed"


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt.

    Attributes:
        verdict: what happened.
        first_bytes: the server's first chunk (ANSWERED); may be empty when the
            server closed after the client's own EOF.
        reason: for CLOSED, why (reset, closed, error).
    """

    verdict: Verdict
    first_bytes: bytes = b""
    reason: str = ""


class _ClientReader:
    """Forwards client bytes to the server until told to stop; never stopped mid-send."""

    def __init__(
        self,
        client: trio.abc.Stream,
        server: trio.abc.Stream,
        flight: FirstFlight,
        timer: _Timer,
        idle: IdleTimer | None,
    ) -> None:
        self.client, self.server, self.flight = client, server, flight
        self.timer, self.idle = timer, idle
        self.scope = trio.CancelScope()
        self.sending = False
        self.done = False
        self.ended: Outcome | None = None  # why the reader stopped the attempt, if it did

    def finish(self) -> None:
        """Stop reading: at once if waiting on the client, else after the current send."""
        self.done = True
        if not self.sending:
            self.scope.cancel()

    async def run(self) -> None:
        with self.scope:
            while not self.done:
                try:
                    data = await self.client.receive_some(COPY_CHUNK)
                except _PEER_ERRORS:
                    return self._stop(Outcome(Verdict.CLIENT_GONE))
                if not await self._forward(data):
                    return
                if not data:
                    return
        return None

    async def _forward(self, data: bytes | bytearray) -> bool:
        """Pass a chunk (or EOF) to the server; False when the attempt must stop."""
        if data:
            self.flight.add(data)
        else:
            self.flight.eof = True
        self.sending = True
        try:
            if data:
                await self.server.send_all(data)
            else:
                await send_eof(self.server)
        except _PEER_ERRORS as exc:
            self._stop(Outcome(Verdict.CLOSED, reason=failure_reason(exc)))
            return False
        finally:
            self.sending = False
        if self.idle is not None:
            self.idle.touch()
        if self.flight.overflowed:
            self._stop(Outcome(Verdict.COMMITTED))
            return False
        self.timer.arm()
        return True

    def _stop(self, outcome: Outcome) -> None:
        if self.done:
            return  # the attempt already ended; the relay will meet any error again
        self.ended = outcome
        self.timer.scope.cancel()


class _Timer:
    """The first-response deadline on the server's first read."""

    def __init__(self, timeout: float | None, start_now: bool) -> None:
        self.timeout = timeout
        self.scope = trio.CancelScope()
        if start_now:
            self.arm()

    def arm(self) -> None:
        if self.timeout is not None:
            self.scope.deadline = trio.current_time() + self.timeout


async def send_eof(stream: trio.abc.Stream) -> None:
    """Half-close a stream if it can be half-closed."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()


async def await_first_response(
    client: trio.abc.Stream,
    server: trio.abc.Stream,
    flight: FirstFlight,
    *,
    preamble: bytes = b"",
    timeout: float | None,
    server_speaks_first: bool,
    idle: IdleTimer | None = None,
) -> Outcome:
    """Replay the flight onto `server` and wait for its first bytes (see module doc).

    Args:
        client: the client stream; further first-flight bytes are read from it.
        server: a freshly connected upstream stream.
        flight: what the client sent so far; grows as the client sends more.
        preamble: bytes to send before the flight (a PROXY protocol header).
        timeout: the first-response timeout, None for none.
        server_speaks_first: start the timer now rather than after client bytes.
        idle: touched on client activity.
    """
    try:
        if preamble or flight.data:
            await server.send_all(preamble + bytes(flight.data))
        if flight.eof:
            await send_eof(server)
    except _PEER_ERRORS as exc:
        return Outcome(Verdict.CLOSED, reason=failure_reason(exc))
    timer = _Timer(timeout, server_speaks_first or bool(flight.data) or flight.eof)
    reader = _ClientReader(client, server, flight, timer, idle)
    async with trio.open_nursery() as nursery:
        if not flight.eof:
            nursery.start_soon(reader.run)
        outcome = await _first_read(server, flight, timer)
        reader.finish()
    ended = reader.ended
    answered = outcome.verdict is Verdict.ANSWERED
    if ended is None or (answered and ended.verdict is Verdict.COMMITTED):
        # An answer that raced the flight's overflow is still an answer: keep its bytes.
        return outcome
    return ended


async def _first_read(server: trio.abc.Stream, flight: FirstFlight, timer: _Timer) -> Outcome:
    with timer.scope:
        try:
            data = await server.receive_some(COPY_CHUNK)
        except _PEER_ERRORS as exc:
            return Outcome(Verdict.CLOSED, reason=failure_reason(exc))
        if data or flight.eof:
            # A server closing after the client's own EOF is an answer, not a failure.
            return Outcome(Verdict.ANSWERED, first_bytes=bytes(data))
        return Outcome(Verdict.CLOSED, reason="closed")
    return Outcome(Verdict.SILENT)
