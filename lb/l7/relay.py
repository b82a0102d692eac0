"""Relaying one request over one upstream connection: the I/O, never the decisions.

Theory of operation. Relaying streams both ways at once and never buffers a
body. A request with a body runs two loops concurrently: the request pump
(client → server) and the response reader (server → client). Neither waits
for the other: Outlook's RPC_IN_DATA streams a 1 GB body and never gets a
response while healthy, and a server may answer (an error, a 401) before the
body ends. A request without a body takes a single-task path: head and end go
upstream in one write. Each Data event is forwarded as soon as it is parsed,
so a chunked response (MAPI `PENDING`, EWS streaming) reaches the client chunk
by chunk; a response head and whatever body is already buffered go out in one
write.

State. An `Attempt` has one part per writer: `RequestSide` is written only by
the pump, `ResponseSide` only by the reader, and `cause` (the first failure,
which ends the attempt) is a write-once cell either may fill. The one signal
between the loops is the pump telling the reader that the request has ended
(`_request_ended`): only then does the response timeout start.

Timeouts: the response head of a short request must arrive within the
response timeout after the request ends; long-lived protocols get none. Every
read during an exchange is bounded by the protocol's idle timeout instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from lb.l7.adapter import HttpStream, deadline_after
from lb.l7.events import Termination
from lb.l7.headers import HOP_BY_HOP, forwarded_response_headers
from lb.l7.heads import HeadLimits, response_problem
from lb.l7.policy import head_wait
from lb.l7.rebalance import response_pins
from lb.l7.routing import TimeoutProfile
from lb.l7.upstream import UpstreamConnection, describe_error
from lb.l7.wire.events import (
    DONE,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    InformationalResponse,
    Request,
    Response,
    WireError,
)

PEER_ERRORS = (WireError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass
class RequestSide:
    """What the request pump did (written by the pump only)."""

    bytes_in: int = 0
    done: bool = False
    write_failed: bool = False


@dataclass
class ResponseSide:
    """What the response reader did (written by the reader only)."""

    status: int | None = None
    started: bool = False
    done: bool = False
    bytes_out: int = 0
    head_at: float = 0.0  # trio time the response head arrived
    pins: bool = False  # a 401 offering NTLM or Negotiate (lb.l7.rebalance)


@dataclass
class Attempt:
    """One attempt to relay a request: both sides, and the first failure."""

    request: RequestSide = field(default_factory=RequestSide)
    response: ResponseSide = field(default_factory=ResponseSide)
    termination: Termination | None = None
    detail: str = ""

    def fail(self, termination: Termination, detail: str) -> None:
        """Record a failure; the first one is the cause and later ones are ignored."""
        if self.termination is None:
            self.termination = termination
            self.detail = detail


class Relay:
    """Relays one request head (and body) over `upstream` and its response back.

    Args:
        client: the client side of the connection.
        upstream: the upstream connection chosen for this attempt.
        profile: the request's timeouts.
        limits: the response head limits.
    """

    def __init__(
        self,
        client: HttpStream,
        upstream: UpstreamConnection,
        profile: TimeoutProfile,
        limits: HeadLimits,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.profile = profile
        self.limits = limits
        self.attempt = Attempt()
        self._head_wait: trio.CancelScope | None = None  # the reader's

    async def run(self, head: Request, has_body: bool) -> Attempt:
        """Relay the exchange to its end (or its first failure)."""
        attempt = self.attempt
        if not has_body:
            await self._relay_bodiless(head)
            return attempt
        try:
            await self.upstream.io.send(head)
        except PEER_ERRORS as exc:
            attempt.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
            return attempt
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_request, nursery.cancel_scope)
            await self._relay_response(nursery.cancel_scope)
            # The response is over: stop pumping. If the body was not finished, the
            # codec's states forbid reuse of either connection, so both get closed.
            nursery.cancel_scope.cancel()
        return attempt

    async def _relay_bodiless(self, head: Request) -> None:
        attempt = self.attempt
        end: Event = EndOfMessage()
        if self.client.conn.their_state is not DONE:  # not consumed by an earlier attempt
            try:
                end = await self.client.next_event()  # parsed already: no body to wait for
            except PEER_ERRORS as exc:
                attempt.fail(Termination.CLIENT_ABORT, describe_error(exc))
                return
        if not isinstance(end, EndOfMessage):
            attempt.fail(
                Termination.BAD_REQUEST, f"unexpected {type(end).__name__} after request head"
            )
            return
        try:
            await self.upstream.io.send(head, end)
        except PEER_ERRORS as exc:
            attempt.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
            return
        attempt.request.done = True
        await self._relay_response(None)

    # -- the request pump ---------------------------------------------------------------

    async def _pump_request(self, cancel: trio.CancelScope) -> None:
        """Client → server body pump; runs beside the response reader."""
        attempt, side = self.attempt, self.attempt.request
        while True:
            with trio.move_on_after(self.profile.idle_timeout) as idle:
                try:
                    event = await self.client.next_event()
                except WireError as exc:
                    # A body cut short by the client leaving is an abort; anything
                    # else (bad chunk framing) is a bad request.
                    left = self.client.peer_closed
                    attempt.fail(
                        Termination.CLIENT_ABORT if left else Termination.BAD_REQUEST,
                        describe_error(exc),
                    )
                    cancel.cancel()
                    return
                except PEER_ERRORS as exc:
                    attempt.fail(Termination.CLIENT_ABORT, describe_error(exc))
                    cancel.cancel()
                    return
            if idle.cancelled_caught:
                attempt.fail(Termination.IDLE_TIMEOUT, "request body stalled")
                cancel.cancel()
                return
            if isinstance(event, ConnectionClosed):
                attempt.fail(Termination.CLIENT_ABORT, "client closed mid-body")
                cancel.cancel()
                return
            batch = [event]
            take_ready(self.client, batch)
            side.bytes_in += sum(len(e.data) for e in batch if isinstance(e, Data))
            finished = isinstance(batch[-1], EndOfMessage)
            try:
                await self.upstream.io.send(*batch)
            except PEER_ERRORS:
                # The reader may still get the server's answer (e.g. an RPC 503): let it.
                side.write_failed = True
                self._request_ended()
                return
            if finished:
                side.done = True
                self._request_ended()
                return

    def _request_ended(self) -> None:
        """Start the response timeout (the pump's one signal to the reader)."""
        if self._head_wait is not None and not self.attempt.response.started:
            self._head_wait.deadline = trio.current_time() + head_wait(self.profile)

    # -- the response reader ------------------------------------------------------------

    async def _relay_response(self, cancel: trio.CancelScope | None) -> None:
        """Server → client: the response head, then each body event as it arrives."""
        attempt, side = self.attempt, self.attempt.response
        response = await self._read_head()
        problem = None if response is None else response_problem(response, self.limits)
        if problem is not None:
            # Never relayed, and the upstream is dropped: its next bytes cannot be trusted.
            attempt.fail(Termination.UPSTREAM_ERROR, problem)
        if response is None or problem is not None:
            if cancel is not None:
                cancel.cancel()
            return
        side.status = response.status_code
        side.pins = response_pins(response.status_code, response.headers)
        side.started = True
        side.head_at = trio.current_time()
        head = response
        # The codec writes every head as HTTP/1.1: an HTTP/1.0 server's response
        # goes out as 1.1, as an intermediary sends its own version (RFC 9110 §6.2).
        if any(name in HOP_BY_HOP for name, _ in response.headers):
            head = Response(
                response.status_code, forwarded_response_headers(response.headers),
                response.reason,
            )
        # else the parsed head is relayed as it is: nothing in it is hop-by-hop.
        batch: list[Event] = [head]
        idle_timeout = self.profile.idle_timeout
        while True:
            take_ready(self.upstream.io, batch)
            data, ends = self._encode(batch)
            try:
                await self.client.write(data)
            except PEER_ERRORS as exc:
                attempt.fail(Termination.CLIENT_ABORT, describe_error(exc))
                return
            if ends:
                # Done only once the last bytes are written: a response the client
                # never got must not let its next pipelined request through.
                side.done = True
                return
            with trio.move_on_after(idle_timeout) as idle:
                try:
                    event = await self.upstream.io.next_event()
                except PEER_ERRORS as exc:
                    attempt.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
                    return
            if idle.cancelled_caught:
                attempt.fail(Termination.IDLE_TIMEOUT, "response body stalled")
                return
            if isinstance(event, ConnectionClosed):
                attempt.fail(Termination.UPSTREAM_ERROR, "server closed mid-response")
                return
            batch = [event]

    def _encode(self, batch: list[Event]) -> tuple[bytes, bool]:
        """Encode response events for the client, counting body bytes; (bytes, ends)."""
        side = self.attempt.response
        ends = False
        for event in batch:
            if isinstance(event, Data):
                side.bytes_out += len(event.data)
            elif isinstance(event, EndOfMessage):
                ends = True
        return self.client.encode(*batch), ends

    async def _read_head(self) -> Response | None:
        attempt = self.attempt
        event: Event | None = None
        if attempt.request.done:
            # The answer to a short request is often here already: no deadline
            # needs arming to read it.
            try:
                ready = await self.upstream.io.event_now()
            except PEER_ERRORS as exc:
                attempt.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
                return None
            if type(ready) is Response:
                assert isinstance(ready, Response)
                return ready
            if isinstance(ready, Event):
                event = ready
        # Until the request ends the pump arms this wait (`_request_ended`).
        wait = head_wait(self.profile) if attempt.request.done else None
        with trio.CancelScope(deadline=deadline_after(wait)) as scope:
            self._head_wait = scope
            while True:
                try:
                    if event is None:
                        event = await self.upstream.io.next_event()
                except PEER_ERRORS as exc:
                    attempt.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
                    return None
                if isinstance(event, InformationalResponse):
                    if not await self._forward_informational(event):
                        return None
                    event = None
                    continue
                if isinstance(event, Response):
                    return event
                attempt.fail(Termination.UPSTREAM_ERROR, "server closed before responding")
                return None
        self._head_wait = None
        if attempt.request.write_failed:
            attempt.fail(Termination.UPSTREAM_ERROR, "server stopped reading the request")
        else:
            seconds = head_wait(self.profile)
            attempt.fail(Termination.UPSTREAM_TIMEOUT, f"no response within {seconds:g}s")
        return None

    async def _forward_informational(self, event: InformationalResponse) -> bool:
        if event.status_code == 101:
            self.attempt.fail(Termination.UPSTREAM_ERROR, "unrequested protocol switch")
            return False
        info = InformationalResponse(
            event.status_code, forwarded_response_headers(event.headers), event.reason
        )
        try:
            await self.client.send(info)
        except PEER_ERRORS as exc:
            self.attempt.fail(Termination.CLIENT_ABORT, describe_error(exc))
            return False
        return True


def take_ready(io: HttpStream, batch: list[Event]) -> None:
    """Append the body events `io` has already parsed, up to the end of the message."""
    if batch and isinstance(batch[-1], EndOfMessage):
        return
    while True:
        try:
            event = io.ready_event()
        except WireError:
            return  # kept by the codec: the caller's next read raises it where it is handled
        if not isinstance(event, Data | EndOfMessage):
            return
        batch.append(event)
        if isinstance(event, EndOfMessage):
            return
