"""Find the SNI server name in the first bytes a TLS client sends.

Theory of operation: an SNI-routing frontend reads the client's first flight
without decrypting anything and calls `parse_client_hello` on everything read so
far, again after every read, until the answer is final. The function is pure and
total: it never raises, whatever the bytes, and answers one of

- NEED_MORE: a prefix of a plausible ClientHello; read more (bounded by the caller);
- NOT_TLS: the first byte is not a TLS handshake record;
- MALFORMED: TLS framing that breaks a rule (lengths that do not add up, a
  non-handshake record before the hello ends, a name that is not a host name);
- NO_SNI: a complete, well-formed ClientHello without a server_name extension;
- FOUND: the lowercased host name.

A ClientHello may be split over several TLS records (RFC 8446 §5.1 allows any
fragmentation of handshake messages), so records are unwrapped first and their
fragments concatenated; only then is the handshake message parsed. Parsing is a
chain of small readers over a memoryview that raise a private `_Short` or
`_Bad` internally; the public function maps those onto results.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

_RECORD_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_NAME_TYPE_HOST = 0
_RECORD_HEADER = 5
_MAX_RECORD = 16384 + 2048  # TLSCiphertext bound, generous for plaintext
_MAX_HOST_NAME = 253


class HelloStatus(enum.Enum):
    """Where parsing a client's first bytes got to."""

    NEED_MORE = "need_more"
    NOT_TLS = "not_tls"
    MALFORMED = "malformed"
    NO_SNI = "no_sni"
    FOUND = "found"

    @property
    def final(self) -> bool:
        """True when reading more bytes cannot change the answer."""
        return self is not HelloStatus.NEED_MORE


@dataclass(frozen=True)
class HelloResult:
    """The outcome of parsing a (possibly partial) ClientHello.

    Attributes:
        status: what was found.
        server_name: the lowercased SNI host name when status is FOUND.
        detail: why, for MALFORMED and NOT_TLS; empty otherwise.
    """

    status: HelloStatus
    server_name: str | None = None
    detail: str = ""


class _Short(Exception):
    """The bytes end before the structure does."""


class _Bad(Exception):
    """The bytes break a framing rule."""


class _Reader:
    """A cursor over bytes that raises _Short past the end."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> memoryview:
        if self.remaining() < n:
            raise _Short
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def peek(self, n: int) -> memoryview:
        return self._data[self._pos : self._pos + n]

    def take_rest(self) -> memoryview:
        return self.take(self.remaining())

    def vector(self, len_size: int) -> _Reader:
        return _Reader(self.take(self.uint(len_size)))


def parse_client_hello(data: bytes | bytearray | memoryview) -> HelloResult:
    """Parse what a client sent so far, looking for the SNI host name.

    Args:
        data: every byte received from the client, from the first one.

    Returns:
        A HelloResult; never raises.
    """
    try:
        message = _handshake_message(bytes(data))
        return _client_hello(message)
    except _Short:
        return HelloResult(HelloStatus.NEED_MORE)
    except _NotTls as exc:
        return HelloResult(HelloStatus.NOT_TLS, detail=str(exc))
    except _Bad as exc:
        return HelloResult(HelloStatus.MALFORMED, detail=str(exc))


class _NotTls(Exception):
    """The first byte does not start a TLS handshake record."""


def _handshake_message(data: bytes) -> memoryview:
    """Unwrap records until one whole handshake message is assembled."""
    if data and data[0] != _RECORD_HANDSHAKE:
        raise _NotTls(f"first byte 0x{data[0]:02x} is not a tls handshake record")
    records = _Reader(data)
    payload = bytearray()
    while True:
        _record_into(records, payload)
        if payload[0] != _HANDSHAKE_CLIENT_HELLO:
            raise _Bad(f"handshake type {payload[0]} is not a client hello")
        if len(payload) >= 4:
            length = int.from_bytes(payload[1:4], "big")
            if len(payload) >= 4 + length:
                return memoryview(bytes(payload[4 : 4 + length]))


def _record_into(records: _Reader, payload: bytearray) -> None:
    """Append the next record's fragment to payload, checking its header."""
    # Judge the header bytes already here before asking for the rest of them.
    header = records.peek(_RECORD_HEADER)
    if len(header) >= 1 and header[0] != _RECORD_HANDSHAKE:
        raise _Bad(f"record type {header[0]} inside the client hello")
    if len(header) >= 2 and header[1] != 3:
        raise _Bad(f"record version major {header[1]} is not 3")
    header = records.take(_RECORD_HEADER)
    length = int.from_bytes(header[3:5], "big")
    if length == 0 or length > _MAX_RECORD:
        raise _Bad(f"record length {length} out of range")
    payload += records.take(length)


def _client_hello(message: memoryview) -> HelloResult:
    """Walk a complete ClientHello body to its extensions."""
    hello = _Reader(message)
    try:
        version_major = hello.uint(1)
        hello.take(1 + 32)  # minor version, random
        if version_major != 3:
            raise _Bad(f"client version major {version_major} is not 3")
        if hello.vector(1).remaining() > 32:
            raise _Bad("session id longer than 32 bytes")
        suites = hello.vector(2).remaining()
        if suites == 0 or suites % 2:
            raise _Bad(f"cipher suites length {suites} is not a positive even number")
        if hello.vector(1).remaining() == 0:
            raise _Bad("no compression methods")
        if hello.remaining() == 0:
            return HelloResult(HelloStatus.NO_SNI)
        extensions = hello.vector(2)
    except _Short:
        # The message is complete, so running short inside it is a framing error.
        raise _Bad("client hello fields overrun the message") from None
    if hello.remaining():
        raise _Bad("bytes after the extensions")
    return _server_name(extensions)


def _server_name(extensions: _Reader) -> HelloResult:
    """Find the server_name extension and its host_name entry."""
    try:
        while extensions.remaining():
            ext_type = extensions.uint(2)
            body = extensions.vector(2)
            if ext_type == _EXT_SERVER_NAME:
                return _host_name(body.vector(2))
    except _Short:
        raise _Bad("extension lengths overrun the extensions block") from None
    return HelloResult(HelloStatus.NO_SNI)


def _host_name(names: _Reader) -> HelloResult:
    """The first host_name entry of a server_name_list, validated."""
    if not names.remaining():
        raise _Bad("empty server name list")
    while names.remaining():
        name_type = names.uint(1)
        name = bytes(names.vector(2).take_rest())
        if name_type == _NAME_TYPE_HOST:
            return HelloResult(HelloStatus.FOUND, server_name=_valid_host(name))
    return HelloResult(HelloStatus.NO_SNI)


def _valid_host(name: bytes) -> str:
    """Lowercase ASCII host name, or _Bad naming what is wrong with it."""
    name = name.rstrip(b".")  # a fully qualified "host." names the same host
    if not name or len(name) > _MAX_HOST_NAME:
        raise _Bad(f"server name length {len(name)} out of range")
    if not all(0x21 <= b < 0x7F for b in name):
        raise _Bad(f"server name {name!r} is not printable ascii")
    return name.decode("ascii").lower()
