"""One HTTP/1.1 connection's state, in either role: bytes in, events out, and back.

`WireConnection(server=True)` is caslb toward a client: it reads requests and
writes responses; `server=False` is caslb toward a server. Each side (`ours`,
`theirs`) is IDLE, in its BODY, DONE or (theirs only) in ERROR; the next
cycle starts only once both are DONE and nothing said the connection ends
(HTTP/1.0, or `Connection: close` either way), which `ready_for_next_cycle`
answers. Bytes past a message's end wait for the next cycle, never read as
part of this one. An error is kept: every later read raises it again.
"""

from __future__ import annotations

from lb.l7.wire import write
from lb.l7.wire.bodies import NO_BODY, BodyReader, ChunkedReader, LengthReader, ToEofReader
from lb.l7.wire.events import (
    BODY,
    DONE,
    ERROR,
    IDLE,
    NEED_DATA,
    PAUSED,
    UNREAD,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Fields,
    InformationalResponse,
    LocalWireError,
    Request,
    Response,
    Sentinel,
    WireError,
)
from lb.l7.wire.parse import (
    CHUNKED,
    TO_EOF,
    framing_of,
    head_end,
    parse_request_head,
    parse_response_head,
)
from lb.l7.wire.response_framing import framed_response

DEFAULT_MAX_HEAD = 16 * 1024


class WireConnection:
    """The codec's state for one connection.

    Args:
        server: caslb serves requests on it (else it sends them).
        max_head_bytes: the most bytes an incomplete head (or chunk line) may
            hold before it is refused with 431.
    """

    def __init__(self, *, server: bool, max_head_bytes: int = DEFAULT_MAX_HEAD) -> None:
        self.server = server
        self.max_head_bytes = max_head_bytes
        self.our_state = IDLE
        self.their_state = IDLE
        self.keep_alive = True
        self.request_method: bytes | None = None  # this cycle's (HEAD has no response body)
        self.client_version: bytes | None = None  # server role: the request's version
        # What was received and not yet used, from `_pos`: the bytes of the last
        # read as they are when it brought whole messages, a bytearray that
        # grows in place while a head (or a chunk line) arrives in pieces.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scanned = 0  # bytes from `_pos` known not to hold the head's end
        self._closed = False  # the peer sent EOF
        self._reader: BodyReader = NO_BODY
        self._writer: write.BodyWriter = write.LengthWriter(0)
        self._error: WireError | None = None

    def __repr__(self) -> str:
        role = "server" if self.server else "client"
        ours, theirs = self.our_state.value, self.their_state.value
        return f"<WireConnection {role} ours={ours} theirs={theirs}>"

    # -- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; b"" is its EOF."""
        buf = self._buf
        if not data:
            self._closed = True
        elif self._pos >= len(buf):
            self._buf, self._pos, self._scanned = data, 0, 0
        elif self._pos == 0 and type(buf) is bytearray:
            buf += data
        else:
            grown = bytearray(memoryview(buf)[self._pos :])
            grown += data
            self._buf, self._pos = grown, 0

    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return len(self._buf) - self._pos

    @property
    def peer_closed(self) -> bool:
        """Whether the peer's EOF has arrived."""
        return self._closed

    def next_event(self) -> Event | Sentinel:
        """The next event from the bytes received, NEED_DATA, or PAUSED (see the module).

        Raises:
            WireError: the peer broke HTTP/1.1 (431 for a head over the limit).
        """
        if self._error is not None:
            raise self._error
        try:
            event = self._next()
            if event is None:
                if self.buffered() > self.max_head_bytes:
                    raise WireError("message head over the size limit", 431)
                if self._closed:
                    raise WireError("peer closed in the middle of a message head")
                return NEED_DATA
        except WireError as exc:
            self.their_state = ERROR
            self._error = exc
            raise
        return event

    def _next(self) -> Event | Sentinel | None:
        state = self.their_state
        if state is BODY:
            event, self._pos = self._reader.read(self._buf, self._pos, self._closed)
            if type(event) is EndOfMessage:
                self.their_state = DONE
                if type(self._reader) is ToEofReader:
                    self.keep_alive = False
            return event
        if state is IDLE:
            if self._pos == len(self._buf):
                return ConnectionClosed() if self._closed else None
            end = head_end(self._buf, self._pos, self._scanned)
            if end < 0:
                self._scanned = len(self._buf) - self._pos
                return None
            head = self._request(end) if self.server else self._response(end)
            self._pos, self._scanned = end, 0
            return head
        if self._pos < len(self._buf):
            return PAUSED
        return ConnectionClosed() if self._closed else None

    def _head(self, end: int) -> tuple[bytes, int, int]:
        """The buffer, start and end of the head ending at `end`, as bytes."""
        buf, pos = self._buf, self._pos
        if type(buf) is bytes:
            return buf, pos, end
        return bytes(memoryview(buf)[pos:end]), 0, end - pos  # it came in pieces: one copy

    def _request(self, end: int) -> Request:
        method, target, version, fields = parse_request_head(*self._head(end))
        framing, fields = framing_of(fields)
        if framing.hosts > 1 or (framing.hosts == 0 and version == b"1.1"):
            raise WireError("no Host field" if not framing.hosts else "more than one Host field")
        self.request_method = method
        self.client_version = version
        if framing.close or version != b"1.1":
            self.keep_alive = False
        self._reader = _reader_for(framing.length or 0)
        self.their_state = BODY
        return Request(method, target, fields, version, framing.length)

    def _response(self, end: int) -> Response:
        if self.request_method is None:
            raise WireError("a response to no request")
        version, status, reason, fields = parse_response_head(*self._head(end))
        framing, fields = framing_of(fields)
        if status < 200:
            return InformationalResponse(status, fields, reason, version)
        if framing.close or version != b"1.1":
            self.keep_alive = False
        length = framing.length
        head = Response(status, fields, reason, version, length)
        if framing.close:
            head.length = UNREAD  # were it sent on as it is, its close must be read again
        if status in (204, 304) or self.request_method == b"HEAD":
            length = 0
        elif length is None:
            length = TO_EOF
        self._reader = _reader_for(length)
        self.their_state = BODY
        return head

    # -- sending -----------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """The bytes that carry `event` to the peer; our side's state advances.

        Raises:
            LocalWireError: the event does not fit where our side is.
        """
        kind = type(event)
        if kind is Data:
            assert isinstance(event, Data)
            return self._writer.data(event.data)
        if kind is EndOfMessage:
            assert isinstance(event, EndOfMessage)
            if self.our_state is not BODY:
                raise LocalWireError("end of a message that was not started")
            out = self._writer.end(event.headers)
            if type(self._writer) is write.RawWriter:
                self.keep_alive = False
            self.our_state = DONE
            return out
        if self.our_state is not IDLE:
            raise LocalWireError(f"a head while our side is {self.our_state.value}")
        if kind is Request and not self.server:
            assert isinstance(event, Request)
            return self._send_request(event)
        if kind is InformationalResponse and self.server:
            assert isinstance(event, InformationalResponse)
            return write.response_head(event.status_code, event.reason, event.headers)
        if kind is Response and self.server:
            assert isinstance(event, Response)
            return self._send_response(event)
        raise LocalWireError(f"a {kind.__name__} cannot be sent in this role")

    def _send_request(self, request: Request) -> bytes:
        length = request.length
        if length == UNREAD:
            framing, _ = framing_of(request.headers)
            if framing.close:
                self.keep_alive = False
            length = framing.length
        length = length or 0
        self._writer = write.ChunkedWriter() if length == CHUNKED else write.LengthWriter(length)
        self.request_method = request.method
        self.our_state = BODY
        return write.request_head(request.method, request.target, request.headers)

    def _send_response(self, response: Response) -> bytes:
        fields, self._writer, close = framed_response(
            response, self.request_method, self.client_version, self.keep_alive
        )
        if close:
            self.keep_alive = False
        self.our_state = BODY
        return write.response_head(response.status_code, response.reason, fields)

    # -- cycles ------------------------------------------------------------------------

    def ready_for_next_cycle(self) -> bool:
        """Whether both messages are complete and the connection may carry another."""
        return self.keep_alive and self.our_state is DONE and self.their_state is DONE

    def start_next_cycle(self) -> None:
        """Start the next request and response on the connection.

        Raises:
            LocalWireError: `ready_for_next_cycle` is False.
        """
        if not self.ready_for_next_cycle():
            raise LocalWireError("the connection cannot carry another request")
        self.our_state = self.their_state = IDLE
        self.request_method = None
        self._reader = NO_BODY


def _reader_for(length: int) -> BodyReader:
    if length == 0:
        return NO_BODY
    if length == CHUNKED:
        return ChunkedReader()
    if length == TO_EOF:
        return ToEofReader()
    return LengthReader(length)


def send_all(conn: WireConnection, events: tuple[Event, ...]) -> bytes:
    """The bytes of several events, in order."""
    return b"".join([conn.send(event) for event in events])


__all__ = ["Fields", "WireConnection", "send_all"]
