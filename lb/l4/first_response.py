"""One upstream attempt: replay the first flight, wait for the first response, relay.

Theory of operation: until a server has sent anything, nothing has reached the
client, so an attempt that goes wrong can be abandoned and the connection sent
to another server, provided the other server gets exactly what the first one
got. `FirstFlight` keeps those bytes (and whether the client already sent EOF).

`run_attempt` replays the flight onto a fresh server stream, then runs the
connection's upstream flow (lb/l4/pump.py `Link`) in a task with a tap that
appends every client chunk to the flight, while its own task waits for the
server's first bytes under a timer. Once they arrive the tap is switched off,
the attempt is committed, and the same task goes on as the downstream flow: the
upstream flow never stops, so committing costs nothing and the relay after it
is the plain (splice) pump. Flows that park while idle (lb/l4/parking.py) end
the attempt with the link in `Outcome.parked`, for the frontend to hand over. An
abandoned attempt is simply cancelled: whatever the upstream task was sending
to the abandoned server no longer matters, because the flight recorded it
before sending.

The timer is what tells a hung server from a slow client. It runs from the
connection opening for banner protocols (the server owes the first word), and
otherwise only once client bytes have been forwarded, re-armed after each new
client chunk: a client that is slow to send its ClientHello is not waiting for
the server, so the server's silence means nothing yet.

Outcomes: ANSWERED (relayed to the end), SILENT (the timer fired), CLOSED (the
server reset or closed before answering), CLIENT_GONE, and COMMITTED when the
flight outgrew its bound before any answer: replay is then impossible, so the
attempt is kept without a first-response bound and relayed to the end.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import trio

from lb.l4.connector import failure_reason
from lb.l4.fdio import read_some
from lb.l4.idle_timer import IdleTimer
from lb.l4.parking import Parker, all_parked
from lb.l4.pump import COPY_CHUNK, PEER_ERRORS, Link, RelayResult, Side, send_eof
from lb.l4.sni import HelloStatus, parse_client_hello


class FirstFlight:
    """The client's bytes sent before any server byte, kept (up to a bound) for replay.

    Attributes:
        data: the bytes kept, in order.
        total: every byte received in this phase (equals len(data) unless overflowed).
        eof: True once the client half-closed.
        limit: bytes kept at most.
    """

    __slots__ = ("data", "eof", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0
        self.eof = False

    @property
    def overflowed(self) -> bool:
        """True when more arrived than could be kept, so it can no longer be replayed."""
        return self.total > self.limit

    def add(self, chunk: bytes | bytearray) -> None:
        """Keep a chunk, unless the flight already passed its bound."""
        self.total += len(chunk)
        if not self.overflowed:
            self.data += chunk


async def read_server_name(
    client: trio.abc.Stream, flight: FirstFlight, timeout: float
) -> str | None:
    """Read the flight until its ClientHello's SNI is known (None: none within `timeout`).

    The bytes are kept in `flight`, never read past its limit: they exist only there.
    """
    with trio.move_on_after(timeout):
        while (room := flight.limit - len(flight.data)) > 0:
            chunk = await client.receive_some(min(COPY_CHUNK, room))
            if not chunk:
                flight.eof = True
                break
            flight.add(chunk)
            result = parse_client_hello(flight.data)
            if result.status.final:
                return result.server_name if result.status is HelloStatus.FOUND else None
    return None


class Verdict(enum.Enum):
    """How one attempt ended."""

    ANSWERED = "answered"
    SILENT = "first_response_timeout"
    CLOSED = "closed"
    CLIENT_GONE = "client_gone"
    COMMITTED = "committed"

    @property
    def committed(self) -> bool:
        """True when the connection stayed on this server (no retry possible)."""
        return self in (Verdict.ANSWERED, Verdict.COMMITTED)


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt.

    Attributes:
        verdict: what happened.
        reason: for CLOSED, why (reset, closed, error).
        replayed_bytes: first-flight bytes sent to this server before its flows ran.
        relay: what the flows moved, for committed attempts.
        parked: the link, when its flows parked rather than ended (lb/l4/parked.py
            takes the connection on).
    """

    verdict: Verdict
    reason: str = ""
    replayed_bytes: int = 0
    relay: RelayResult | None = None
    parked: Link | None = None


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


class _Recorder:
    """The tap on the upstream flow before commit: keeps the flight, re-arms the timer."""

    def __init__(self, flight: FirstFlight, timer: _Timer) -> None:
        self.flight = flight
        self.timer = timer
        self.active = True
        self.overflowed = False

    def chunk(self, data: bytes) -> None:
        self.flight.add(data)
        if self.flight.overflowed:
            # Past the bound nothing can be replayed: stop waiting and commit.
            self.active = False
            self.overflowed = True
            self.timer.scope.cancel()
        else:
            self.timer.arm()

    def eof(self) -> None:
        self.flight.eof = True
        self.timer.arm()


async def run_attempt(
    client: trio.abc.Stream,
    server: trio.abc.Stream,
    flight: FirstFlight,
    *,
    preamble: bytes = b"",
    timeout: float | None,
    server_speaks_first: bool,
    idle: IdleTimer | None = None,
    on_commit: Callable[[Verdict], None] = lambda verdict: None,
    parker: Parker | None = None,
) -> Outcome:
    """Replay the flight onto `server`, wait for its first bytes, then relay (see module doc).

    Neither stream is closed here.

    Args:
        client: the client stream; further first-flight bytes are read from it.
        server: a freshly connected upstream stream.
        flight: what the client sent so far; grows as the client sends more.
        preamble: bytes to send before the flight (a PROXY protocol header).
        timeout: the first-response timeout, None for none.
        server_speaks_first: start the timer now rather than after client bytes.
        idle: touched on every transfer.
        on_commit: called once, as soon as the attempt commits (before relaying).
        parker: watches the relay for idleness (lb/l4/parking.py); None: never parks.
    """
    replayed = len(flight.data)
    try:
        if preamble or flight.data:
            await server.send_all(preamble + bytes(flight.data))
        if flight.eof:
            await send_eof(server)
    except PEER_ERRORS as exc:
        return Outcome(Verdict.CLOSED, reason=failure_reason(exc))
    link = Link(client, server, idle)
    link.up.done = flight.eof  # already passed on above
    start_now = server_speaks_first or bool(flight.data) or flight.eof
    first = await _run_flows(link, flight, _Timer(timeout, start_now), on_commit, parker)
    if first is None or not first.verdict.committed:
        return _abandoned(first, link.result(), replayed)
    if parker is not None and all_parked(link):
        flight.data.clear()  # committed: never replayed, so not kept for the relay's life
        return Outcome(first.verdict, replayed_bytes=replayed, relay=link.result(), parked=link)
    return Outcome(first.verdict, replayed_bytes=replayed, relay=link.result())


async def _run_flows(
    link: Link, flight: FirstFlight, timer: _Timer, on_commit: Callable[[Verdict], None],
    parker: Parker | None,
) -> _FirstRead | None:
    """Upstream in a task, the first read here, then downstream here, until they end or park.

    Its own coroutine so that the nursery, the timer and the recorder are gone
    once the flows park.
    """
    recorder = _Recorder(flight, timer)
    first: _FirstRead | None = None
    try:
        async with trio.open_nursery() as nursery:
            if not link.up.done:
                nursery.start_soon(link.run_up, nursery.cancel_scope, recorder)
            first = await _first_read(link.server, flight, timer, recorder)
            if first.verdict.committed:
                recorder.active = False
                on_commit(first.verdict)
                if parker is not None:
                    parker.watch(link)
                await link.run_down(nursery.cancel_scope, first.data)
            else:
                nursery.cancel_scope.cancel()
    finally:
        if parker is not None:
            parker.forget(link)
    return first


def _abandoned(first: _FirstRead | None, result: RelayResult, replayed: int) -> Outcome:
    """The outcome of an attempt that did not commit (the upstream flow may have ended it)."""
    if result.failed is Side.CLIENT:
        return Outcome(Verdict.CLIENT_GONE, replayed_bytes=replayed)
    if result.failed is Side.SERVER:
        return Outcome(Verdict.CLOSED, reason="reset", replayed_bytes=replayed)
    assert first is not None  # without a flow failure the first read always returns
    return Outcome(first.verdict, reason=first.reason, replayed_bytes=replayed)


@dataclass(frozen=True)
class _FirstRead:
    verdict: Verdict
    data: bytes = b""
    reason: str = ""


async def _first_read(
    server: trio.abc.Stream, flight: FirstFlight, timer: _Timer, recorder: _Recorder
) -> _FirstRead:
    with timer.scope:
        try:
            data = await read_some(server, COPY_CHUNK)
        except PEER_ERRORS as exc:
            return _FirstRead(Verdict.CLOSED, reason=failure_reason(exc))
        if data or flight.eof:
            # A server closing after the client's own EOF is an answer, not a failure.
            return _FirstRead(Verdict.ANSWERED, data)
        return _FirstRead(Verdict.CLOSED, reason="closed")
    if recorder.overflowed:
        return _FirstRead(Verdict.COMMITTED)
    return _FirstRead(Verdict.SILENT)
