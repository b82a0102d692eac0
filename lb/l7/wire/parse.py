"""Message heads from bytes: the start line, the fields, and the framing they declare.

Strict by design (RFC 9112; where h11 was stricter, as h11): the head ends at
the first blank line (`\\n\\r?\\n`); the start line is matched by one regex
and every field line by one `findall`, and a head whose field lines are not
all matched is refused, so whitespace before a colon, a name that is not a
token, a NUL or CR in a value and obs-fold (a line starting with SP or HTAB,
which RFC 9112 §5.2 lets a recipient reject) are all a 400. The framing
fields are read in the same pass that counts Host and reads Connection:
Content-Length must be digits and agree with itself (repeats and lists of one
value are folded into one field, so what is forwarded is what was read);
Transfer-Encoding must be one `chunked`.
"""

from __future__ import annotations

import re

from lb.l7.wire.events import Fields, WireError

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
HEAD_END = re.compile(rb"\n\r?\n")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([^\x00\n\r\x0b\x0c]*))?\r?\n")
# A whole field line, anchored at a line start: a line it does not match is missing
# from the findall, which the caller notices by counting lines.
_FIELD_LINE = re.compile(
    rb"^(" + _TOKEN + rb"):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*\r?\n", re.M
)
# Control characters a field value must not hold (RFC 9110 §5.5): HTAB is allowed.
CONTROL_CHARS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A CR followed by anything but LF (one at the very end may be half of a CRLF in flight).
_BARE_CR = re.compile(rb"\r(?=[^\n])")

MAX_LENGTH_DIGITS = 20
CHUNKED = -1
"""`Framing.length` of a chunked body."""
TO_EOF = -2
"""`Framing.length` of a response body that ends when the server closes."""

_FRAMING_OR_CONNECTION = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"connection"}
)


class Framing:
    """What a head's fields say about its body and its connection.

    Attributes:
        length: the Content-Length, CHUNKED, or None when neither field is there.
        hosts: how many Host fields there are.
        close: a Connection field says `close`.
    """

    __slots__ = ("close", "hosts", "length")

    def __init__(self, length: int | None, hosts: int, close: bool) -> None:
        self.length = length
        self.hosts = hosts
        self.close = close


def head_end(buf: bytes | bytearray, pos: int, scanned: int = 0) -> int:
    """The index just past the head that starts at `pos`, or -1 when it is not all here.

    `scanned` is how many bytes from `pos` an earlier call found no end in:
    the search resumes just before them, so a head that arrives a byte at a
    time costs its length once, not its length squared.

    Raises:
        WireError: the head starts with a blank line, or has a bare CR.
    """
    if buf.startswith(b"\n", pos) or buf.startswith(b"\r\n", pos):
        raise WireError("no start line: the head begins with a blank line")
    resume = pos + scanned - 2 if scanned > 2 else pos  # a blank line is at most 3 bytes
    end = HEAD_END.search(buf, resume)
    if end is None:
        if _BARE_CR.search(buf, resume - 1 if resume > pos else pos):
            raise WireError("bare CR in a message head")
        return -1
    return end.end()


def parse_request_head(buf: bytes, pos: int, end: int) -> tuple[bytes, bytes, bytes, Fields]:
    """(method, target, version, fields) of the request head in buf[pos:end]."""
    line = _REQUEST_LINE.match(buf, pos, end)
    if line is None:
        raise WireError("malformed request line")
    return line[1], line[2], line[3], parse_fields(buf, line.end(), end)


def parse_response_head(buf: bytes, pos: int, end: int) -> tuple[bytes, int, bytes, Fields]:
    """(version, status, reason, fields) of the response head in buf[pos:end]."""
    line = _STATUS_LINE.match(buf, pos, end)
    if line is None:
        raise WireError("malformed status line")
    return line[1], int(line[2]), line[3] or b"", parse_fields(buf, line.end(), end)


def parse_fields(buf: bytes, pos: int, end: int) -> Fields:
    """The field lines in buf[pos:end] (which ends with the blank line), names lowercased.

    Raises:
        WireError: a line is not a field (obs-fold included).
    """
    stop = end - 1 if buf[end - 2 : end - 1] != b"\r" else end - 2  # the blank line's start
    fields = _FIELD_LINE.findall(buf, pos, stop)
    if len(fields) != buf.count(b"\n", pos, stop):
        raise WireError("malformed header field line")
    return [(name.lower(), value) for name, value in fields]


def framing_of(fields: Fields) -> tuple[Framing, Fields]:
    """The framing `fields` declare, and the fields with Content-Length folded into one.

    Raises:
        WireError: Content-Length not digits or not agreeing with itself;
            Transfer-Encoding repeated or not `chunked`.
    """
    length: int | None = None
    chunked = False
    hosts = 0
    close = False
    folded: Fields | None = None
    for index, (name, value) in enumerate(fields):
        if name not in _FRAMING_OR_CONNECTION:
            if folded is not None:
                folded.append((name, value))
            continue
        if name == b"host":
            hosts += 1
        elif name == b"connection":
            close = close or b"close" in _tokens(value)
        elif name == b"content-length":
            if value.isdigit() and len(value) <= MAX_LENGTH_DIGITS:
                this, canonical = int(value), value[:1] != b"0" or len(value) == 1
            else:
                this, canonical = _content_length(value), False
            if length is not None and this != length:
                raise WireError("conflicting Content-Length fields")
            if length is not None or not canonical:
                if folded is None:
                    folded = fields[:index]
                if length is None:
                    folded.append((name, b"%d" % this))
            elif folded is not None:
                folded.append((name, value))
            length = this
            continue
        elif name == b"transfer-encoding":
            if chunked:
                raise WireError("repeated Transfer-Encoding")
            if value.lower() != b"chunked":
                raise WireError("Transfer-Encoding other than chunked")
            chunked = True
            if value != b"chunked":
                if folded is None:
                    folded = fields[:index]
                folded.append((name, b"chunked"))
                continue
        if folded is not None:
            folded.append((name, value))
    if folded is not None:
        fields = folded
    framing = Framing(CHUNKED if chunked else length, hosts, close)
    return framing, fields


def _content_length(value: bytes) -> int:
    values = {v.strip() for v in value.split(b",")} if b"," in value else {value}
    if len(values) != 1:
        raise WireError("conflicting Content-Length values")
    digits = values.pop()
    if not digits.isdigit() or len(digits) > MAX_LENGTH_DIGITS:
        raise WireError("malformed Content-Length")
    return int(digits)


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def says_close(fields: Fields) -> bool:
    """Whether a Connection field in `fields` says `close`."""
    return any(name == b"connection" and b"close" in _tokens(value) for name, value in fields)
