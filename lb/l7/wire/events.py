"""What the codec reads and writes: message heads, body pieces, ends, and its errors.

Field names are lowercase; every value is bytes. Plain slotted classes: a
request makes half a dozen of them, so they are built without validation
(the parser has checked what it builds; `lb.l7.heads.forwarded_request`
checks what caslb adds itself).
"""

from __future__ import annotations

import enum

Fields = list[tuple[bytes, bytes]]

UNREAD = -3
"""The `length` of a head caslb built: the writer reads its framing from its fields."""


class Event:
    """Anything `WireConnection.next_event` returns that is not a sentinel."""

    __slots__ = ()


class Request(Event):
    """A request head (the method as sent, the target as sent, the version "1.0" or "1.1").

    `length` is the framing its fields declare, as the parser read it
    (lb.l7.wire.parse: a Content-Length, CHUNKED, or None for neither), so
    that a head forwarded with the same framing fields is not read twice;
    UNREAD for a head whose fields the writer must read.
    """

    __slots__ = ("headers", "http_version", "length", "method", "target")

    def __init__(
        self, method: bytes, target: bytes, headers: Fields, http_version: bytes = b"1.1",
        length: int | None = UNREAD,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version
        self.length = length

    def __repr__(self) -> str:
        return f"<Request {self.method!r} {self.target!r} HTTP/{self.http_version.decode()}>"


class Response(Event):
    """A final response head (status 200..599); `length` as for a Request, and a
    parsed one says no `Connection: close` (the parser has taken that in)."""

    __slots__ = ("headers", "http_version", "length", "reason", "status_code")

    def __init__(
        self, status_code: int, headers: Fields, reason: bytes = b"", http_version: bytes = b"1.1",
        length: int | None = UNREAD,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.reason = reason
        self.http_version = http_version
        self.length = length

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code}>"


class InformationalResponse(Response):
    """A 1xx response head: no body, and the final response is still to come."""

    __slots__ = ()


class Data(Event):
    """A piece of a message body, as it arrived (chunked framing removed)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)} bytes>"


class EndOfMessage(Event):
    """The end of a message, with the trailer fields of a chunked one."""

    __slots__ = ("headers",)

    def __init__(self, headers: Fields | None = None) -> None:
        self.headers: Fields = headers or []

    def __repr__(self) -> str:
        return "<EndOfMessage>"


class ConnectionClosed(Event):
    """The peer closed its side where a message may end (between messages, or a to-EOF body)."""

    __slots__ = ()


class Sentinel(enum.Enum):
    """What `next_event` returns when it has no event."""

    NEED_DATA = "need data"  # more bytes are needed for the next event
    PAUSED = "paused"  # the message is done: bytes past it wait for `start_next_cycle`


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


class State(enum.Enum):
    """Where one side of a connection is in its current message."""

    IDLE = "idle"  # no message started
    BODY = "body"  # the head is done, the body is not
    DONE = "done"  # the message is complete
    ERROR = "error"  # the side broke the protocol (or was cut short): never reused


IDLE, BODY, DONE, ERROR = State.IDLE, State.BODY, State.DONE, State.ERROR


class WireError(Exception):
    """The peer broke HTTP/1.1 (or caslb was asked to send what it must not).

    Attributes:
        status: the status a server answers it with (400, or 431 for a head too big).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LocalWireError(WireError):
    """caslb itself was about to send something HTTP/1.1 does not allow."""
