"""How a response is framed toward the client that asked for it.

A relayed response keeps its Content-Length; one whose length the server did
not say (chunked, or read to the server's EOF) goes to an HTTP/1.1 client
chunked and to an HTTP/1.0 client close-delimited with `Connection: close`.
`Connection: close` is added whenever the connection ends after it; a
response to HEAD keeps its head and gets no body.
"""

from __future__ import annotations

from lb.l7.wire import write
from lb.l7.wire.events import UNREAD, Fields, Response
from lb.l7.wire.parse import CHUNKED, framing_of

_LENGTH_FIELDS = frozenset({b"content-length", b"transfer-encoding"})


def framed_response(
    response: Response, method: bytes | None, client_version: bytes | None, keep_alive: bool
) -> tuple[Fields, write.BodyWriter, bool]:
    """(fields to send, the body's writer, whether the connection closes after it).

    Args:
        response: the response head to send.
        method: the request's method (None when no request was read).
        client_version: the request's HTTP version (None: assume 1.0).
        keep_alive: the request let the connection go on.
    """
    fields = response.headers
    length, said_close = response.length, False
    if length == UNREAD:
        framing, _ = framing_of(fields)
        length, said_close = framing.length, framing.close
    close = not keep_alive or said_close
    status = response.status_code
    bodyless = status in (204, 304) or 100 <= status < 200
    unknown = not bodyless and (length is None or length == CHUNKED)
    writer: write.BodyWriter
    if unknown:
        fields = [f for f in fields if f[0] not in _LENGTH_FIELDS]
        if client_version == b"1.1":
            fields.append((b"transfer-encoding", b"chunked"))
            writer = write.ChunkedWriter()
        else:
            close = close or method != b"HEAD"
            writer = write.RawWriter()
    else:
        writer = write.LengthWriter(0 if bodyless else length or 0)
    if method == b"HEAD":
        writer = write.LengthWriter(0)
    if close and not said_close:
        fields = [f for f in fields if f[0] != b"connection"]
        fields.append((b"connection", b"close"))
    return fields, writer, close
