"""A strict HTTP/1.1 request reader for the hostile suite's own backends.

It is deliberately not h11 and not lenient: it reads exactly RFC 9112's
grammar (CRLF line ends only, no obs-fold, token field names with no
whitespace before the colon, no control characters in values, one framing)
so that anything the balancer forwards that a stricter or differently lenient
server could read another way shows up as a `Violation` instead of being
quietly accepted. The balancer must never make a backend raise one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import trio

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
REQUEST_LINE = re.compile(
    rb"(?P<method>[!#$%&'*+\-.^_`|~0-9A-Za-z]+) (?P<target>[\x21-\x7e]+) HTTP/(?P<version>1\.[01])"
)
# A field value after OWS is trimmed: visible characters, SP, HTAB, obs-text (RFC 9110 §5.5).
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
CHUNK_LINE = re.compile(rb"(?P<size>[0-9A-Fa-f]{1,16})(?P<ext>(;[\t\x20-\x7e\x80-\xff]*)?)")
MAX_HEAD = 1024 * 1024

Field = tuple[bytes, bytes]


class Violation(Exception):
    """What a backend received is not a well-formed HTTP/1.1 request."""


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as a backend read it.

    Attributes:
        connection: which upstream connection carried it (0, 1, … per backend).
        method: the method, as sent.
        target: the request target, byte for byte.
        version: b"1.1" or b"1.0".
        fields: (name, value) as sent: name in its original case, value without OWS.
        body: the decoded body.
        framing: "none", "length" or "chunked": how the body was delimited.
        complete: False when the connection ended before the body did.
    """

    connection: int
    method: bytes
    target: bytes
    version: bytes
    fields: tuple[Field, ...]
    body: bytes
    framing: str
    complete: bool = True

    def values(self, name: bytes) -> list[bytes]:
        """Every value of field `name` (case-insensitive)."""
        wanted = name.lower()
        return [v for n, v in self.fields if n.lower() == wanted]


class StrictReader:
    """Reads requests from one stream; keeps what was read past the last request."""

    def __init__(self, stream: trio.abc.ReceiveStream, connection: int) -> None:
        self.stream = stream
        self.connection = connection
        self.buffer = bytearray()
        self.eof = False

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def _line(self, limit: int) -> bytes | None:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > limit:
                raise Violation("line over the limit")
            if not await self._fill():
                return None
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        if b"\r" in line or b"\n" in line:
            raise Violation(f"bare CR or LF in {line[:80]!r}")
        return line

    async def _exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not await self._fill():
                return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def next_request(self) -> ReceivedRequest | None:
        """The next request; None at a clean EOF between requests.

        A request whose body the connection cut short comes back with
        `complete=False` (and the next call returns None).

        Raises:
            Violation: for anything outside RFC 9112's request grammar.
        """
        request_line = await self._line(MAX_HEAD)
        if request_line is None:
            if self.buffer:
                raise Violation(
                    f"connection ended inside a request head: {bytes(self.buffer[:80])!r}"
                )
            return None
        match = REQUEST_LINE.fullmatch(request_line)
        if match is None:
            raise Violation(f"bad request line {request_line[:120]!r}")
        fields = await self._fields()
        framing, length = _framing(fields)
        head = (match["method"], match["target"], match["version"], tuple(fields))
        if framing == "length":
            body = await self._exactly(length)
            if body is None:
                return self._cut(head, framing, bytes(self.buffer))
        elif framing == "chunked":
            body, complete = await self._chunked()
            if not complete:
                return self._cut(head, framing, body)
        else:
            body = b""
        return ReceivedRequest(self.connection, *head, body=body, framing=framing)

    def _cut(
        self, head: tuple[bytes, bytes, bytes, tuple[Field, ...]], framing: str, body: bytes
    ) -> ReceivedRequest:
        self.buffer.clear()
        return ReceivedRequest(self.connection, *head, body=body, framing=framing, complete=False)

    async def _fields(self) -> list[Field]:
        fields: list[Field] = []
        size = 0
        while True:
            line = await self._line(MAX_HEAD)
            if line is None:
                raise Violation("connection ended inside the header fields")
            if line == b"":
                return fields
            size += len(line)
            if size > MAX_HEAD:
                raise Violation("request head over 1 MiB")
            if line[:1] in (b" ", b"\t"):
                raise Violation(f"obs-fold forwarded: {line[:80]!r}")
            name, colon, value = line.partition(b":")
            if not colon or TOKEN.fullmatch(name) is None:
                raise Violation(f"bad field name in {line[:80]!r}")
            value = value.strip(b" \t")
            if FIELD_VALUE.fullmatch(value) is None:
                raise Violation(f"control character in field {name!r}: {value[:80]!r}")
            fields.append((name, value))

    async def _chunked(self) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            line = await self._line(4096)
            if line is None:
                return bytes(body), False
            match = CHUNK_LINE.fullmatch(line)
            if match is None:
                raise Violation(f"bad chunk line {line[:80]!r}")
            size = int(match["size"], 16)
            if size == 0:
                break
            data = await self._exactly(size + 2)
            if data is None:
                return bytes(body) + bytes(self.buffer), False
            if data[-2:] != b"\r\n":
                raise Violation("chunk data not followed by CRLF")
            body += data[:-2]
        await self._fields()  # the trailer section, as strict as the head
        return bytes(body), True


def _framing(fields: list[Field]) -> tuple[str, int]:
    """How a request body is delimited (RFC 9112 §6.3), refusing every ambiguity."""
    te = [v for n, v in fields if n.lower() == b"transfer-encoding"]
    cl = [v for n, v in fields if n.lower() == b"content-length"]
    if te and cl:
        raise Violation("both Content-Length and Transfer-Encoding")
    if te:
        if len(te) != 1 or te[0].lower() != b"chunked":
            raise Violation(f"Transfer-Encoding other than one chunked: {te!r}")
        return "chunked", 0
    if cl:
        if len(cl) != 1 or not cl[0].isdigit():
            raise Violation(f"bad Content-Length {cl!r}")
        length = int(cl[0])
        return ("length", length) if length else ("none", 0)
    return "none", 0
