"""Body readers: bytes of a message body in, Data and EndOfMessage out.

Each reader takes the connection's buffer (bytes, or a bytearray while a line
arrives in pieces) and the index where its unread bytes start, and returns
an event (or None when it needs more bytes) and the new index; what it
returns is always bytes. `closed` says the peer has sent EOF: a counted or chunked body cut
short by it is an error, a to-EOF body ends there.
"""

from __future__ import annotations

import re

from lb.l7.wire.events import Data, EndOfMessage, Event, WireError
from lb.l7.wire.parse import CONTROL_CHARS, head_end, parse_fields

MAX_CHUNK = 1 << 48
"""The largest chunk size accepted: no real body has a 256 TiB chunk, and a size
near 2**64 overflows the integers of servers further down."""

# chunk-size [ chunk-ext ] OWS CRLF; the extension is not interpreted (nor forwarded).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*\r\n")

Read = tuple[Event | None, int]
Buffer = bytes | bytearray


class BodyReader:
    """Reads one message body."""

    __slots__ = ()

    def read(self, buf: Buffer, pos: int, closed: bool) -> Read:
        """The next event from buf[pos:], and the index past what it used."""
        raise NotImplementedError


def _take(buf: Buffer, pos: int, most: int) -> bytes:
    """buf[pos:pos + most] as bytes, without a copy when that is all of a bytes `buf`."""
    if type(buf) is bytes:
        return buf if pos == 0 and most >= len(buf) else buf[pos : pos + most]
    return bytes(memoryview(buf)[pos : pos + most])


class NoBody(BodyReader):
    """A message without a body: its end at once."""

    __slots__ = ()

    def read(self, buf: Buffer, pos: int, closed: bool) -> Read:
        return EndOfMessage(), pos


NO_BODY = NoBody()


class LengthReader(BodyReader):
    """A body of Content-Length bytes."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def read(self, buf: Buffer, pos: int, closed: bool) -> Read:
        if self.remaining == 0:
            return EndOfMessage(), pos
        available = len(buf) - pos
        if available == 0:
            if closed:
                raise WireError(f"peer closed with {self.remaining} body bytes still due")
            return None, pos
        data = _take(buf, pos, self.remaining)
        self.remaining -= len(data)
        return Data(data), pos + len(data)


class ToEofReader(BodyReader):
    """A response body that ends when the server closes the connection."""

    __slots__ = ()

    def read(self, buf: Buffer, pos: int, closed: bool) -> Read:
        if pos < len(buf):
            data = _take(buf, pos, len(buf))
            return Data(data), pos + len(data)
        return (EndOfMessage(), pos) if closed else (None, pos)


class ChunkedReader(BodyReader):
    """A chunked body (RFC 9112 §7.1): chunk-size lines end in CRLF, every chunk's
    data is followed by exactly CRLF, and the trailer fields end at a blank line."""

    __slots__ = ("_footer", "_in_chunk", "_last", "_scanned")

    def __init__(self) -> None:
        self._in_chunk = 0  # data bytes of the current chunk still to come
        self._footer = b""  # what is still due of the CRLF after a chunk's data
        self._last = False  # the last (zero-size) chunk was read: trailers next
        self._scanned = 0  # trailer bytes known not to hold their end (as for heads)

    def read(self, buf: Buffer, pos: int, closed: bool) -> Read:
        event, new = self._step(buf, pos)
        while event is None and new != pos:  # a footer or a size line used: go on
            pos = new
            event, new = self._step(buf, pos)
        if event is None and closed:
            raise WireError("peer closed in the middle of a chunked body")
        return event, new

    def _step(self, buf: Buffer, pos: int) -> Read:
        if self._in_chunk:
            if pos == len(buf):
                return None, pos
            data = _take(buf, pos, self._in_chunk)
            self._in_chunk -= len(data)
            if not self._in_chunk:
                self._footer = b"\r\n"
            return Data(data), pos + len(data)
        if self._footer:
            got = buf[pos : pos + len(self._footer)]
            if got != self._footer[: len(got)]:
                raise WireError("chunk data not followed by CRLF")
            self._footer = self._footer[len(got) :]
            return None, pos + len(got)
        if self._last:
            return self._trailers(buf, pos)
        line = _CHUNK_LINE.match(buf, pos)
        if line is None:
            if b"\n" in buf[pos : pos + 1024] or len(buf) - pos > 1024:
                raise WireError("malformed chunk size line")
            return None, pos
        size = int(line[1], 16)
        if size > MAX_CHUNK:
            raise WireError("chunk size over the limit")
        self._in_chunk = size
        self._last = size == 0
        return None, line.end()

    def _trailers(self, buf: Buffer, pos: int) -> Read:
        if buf.startswith(b"\r\n", pos):
            return EndOfMessage(), pos + 2
        if len(buf) - pos < 2:
            if buf.startswith(b"\n", pos):
                raise WireError("bare LF after the last chunk")
            return None, pos
        end = head_end(buf, pos, self._scanned)
        if end < 0:
            self._scanned = len(buf) - pos
            return None, pos
        trailers = parse_fields(bytes(buf[pos:end]), 0, end - pos)
        if any(name in _NOT_TRAILERS for name, _ in trailers):
            raise WireError("a framing or routing field in the trailers")
        if any(CONTROL_CHARS.search(value) for _, value in trailers):
            raise WireError("a control character in a trailer field")  # as lb.l7.heads for heads
        return EndOfMessage(trailers), end


# RFC 9110 §6.5.1: fields that frame, route or authenticate are not trailers.
_NOT_TRAILERS = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"connection", b"authorization"}
)
