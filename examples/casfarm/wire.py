"""Small socket-level helpers shared by the HTTP and mail sides."""

from __future__ import annotations

import contextlib
import socket
import struct

import trio

# SO_LINGER on, timeout 0: close() sends RST instead of FIN, which is what
# HttpResponse.Close() does to an unhealthy health check.
_LINGER_RESET = struct.pack("ii", 1, 0)


class ResetConnection(Exception):
    """Raised by a protocol handler to end its connection with a TCP reset."""


def reset_now(raw: trio.SocketStream) -> None:
    """Close `raw` at once with a TCP reset (no FIN, unread data dropped)."""
    sock = raw.socket
    if sock.fileno() == -1:
        return
    # A socket the peer already tore down refuses the option; closing still works.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class LineTooLong(Exception):
    """A peer sent a line longer than the reader accepts."""


class LineReader:
    """Buffered CRLF line reading over a trio stream, with a length cap.

    Args:
        stream: the stream to read from.
        max_line: longest line accepted, in bytes.
    """

    def __init__(self, stream: trio.abc.Stream, max_line: int = 8192) -> None:
        self.stream = stream
        self.max_line = max_line
        self._buffer = bytearray()

    def replace_stream(self, stream: trio.abc.Stream) -> None:
        """Read from `stream` from now on, dropping anything buffered.

        Used after STARTTLS: bytes pipelined in clear after the command must not
        be taken as if they had come over TLS.
        """
        self.stream = stream
        self._buffer.clear()

    async def line(self) -> bytes | None:
        """The next line without its CRLF, or None at end of stream.

        Raises:
            LineTooLong: when a line exceeds `max_line` bytes.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end]).rstrip(b"\r")
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self.max_line:
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data
