"""Bytes from events: heads serialised in one join, bodies framed as their head says.

The body writers check that a counted body gets exactly its count: a
response relayed short or long would frame the next one wrong.
"""

from __future__ import annotations

from lb.l7.wire.events import Fields, LocalWireError


def request_head(method: bytes, target: bytes, fields: Fields) -> bytes:
    """An HTTP/1.1 request head."""
    return b"\r\n".join([b"%s %s HTTP/1.1" % (method, target),
                         *[b"%s: %s" % field for field in fields], b"", b""])


def response_head(status: int, reason: bytes, fields: Fields) -> bytes:
    """An HTTP/1.1 response head (caslb speaks 1.1 whatever the server spoke)."""
    return b"\r\n".join([b"HTTP/1.1 %d %s" % (status, reason),
                         *[b"%s: %s" % field for field in fields], b"", b""])


def chunked_trailers(trailers: Fields) -> bytes:
    """The last chunk and the trailer section of a chunked body."""
    return b"\r\n".join([b"0", *[b"%s: %s" % field for field in trailers], b"", b""])


class BodyWriter:
    """Frames one message body."""

    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        """The bytes that carry `data`."""
        raise NotImplementedError

    def end(self, trailers: Fields) -> bytes:
        """The bytes that end the body."""
        raise NotImplementedError


class LengthWriter(BodyWriter):
    """A body of a declared Content-Length (0 for HEAD, 204, 304)."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def data(self, data: bytes) -> bytes:
        if len(data) > self.remaining:
            raise LocalWireError("more body than the declared Content-Length")
        self.remaining -= len(data)
        return data

    def end(self, trailers: Fields) -> bytes:
        if self.remaining:
            raise LocalWireError(f"body ended {self.remaining} bytes short of its Content-Length")
        return b""  # trailers cannot travel in a counted body: dropped (RFC 9110 §6.5.1)


class ChunkedWriter(BodyWriter):
    """A chunked body: a chunk per Data."""

    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        if not data:
            return b""  # an empty chunk would be the last one
        return b"".join([b"%x\r\n" % len(data), data, b"\r\n"])

    def end(self, trailers: Fields) -> bytes:
        return chunked_trailers(trailers) if trailers else b"0\r\n\r\n"


class RawWriter(BodyWriter):
    """A body delimited by closing the connection (to an HTTP/1.0 client)."""

    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        return data

    def end(self, trailers: Fields) -> bytes:
        return b""
