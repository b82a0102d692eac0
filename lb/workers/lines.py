"""Line framing: `LineSplitter` cuts bytes into lines (pure), `LineReader` reads lines from
a trio stream, `write_lines` sends queued ones."""

from __future__ import annotations

import trio

from lb.workers.messages import MAX_LINE_BYTES


class LineReader:
    """Lines from a trio receive stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._splitter = LineSplitter()
        self._ready: list[bytes] = []
        self._next = 0

    async def next(self) -> bytes | None:
        """The next line, or None at end of stream.

        Raises:
            ValueError: a line longer than the splitter's limit.
        """
        while self._next == len(self._ready):
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._ready, self._next = self._splitter.feed(bytes(data)), 0
        line = self._ready[self._next]
        self._next += 1
        return line


async def write_lines(
    stream: trio.abc.SendStream, lines: trio.MemoryReceiveChannel[bytes]
) -> None:
    """Send every line queued on `lines` until the channel is closed."""
    async with lines:
        async for line in lines:
            await stream.send_all(line)


class LineSplitter:
    """Cuts a byte stream into lines.

    The unread tail stays in one bytearray with a read offset: each feed scans
    only the new bytes for newlines, and the consumed head is dropped once it
    is more than half the buffer, so a long line arriving in many reads costs
    linear time, not quadratic.

    Args:
        limit: the longest line accepted, in bytes.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._start = 0  # where the first unfinished line begins

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines `data` ends (without their newline).

        Raises:
            ValueError: a line grew past the limit.
        """
        scan = len(self._buffer)
        self._buffer += data
        lines = []
        while (end := self._buffer.find(b"\n", scan)) >= 0:
            lines.append(bytes(self._buffer[self._start:end]))
            self._start = scan = end + 1
        if self._start > len(self._buffer) // 2:
            del self._buffer[:self._start]
            self._start = 0
        if len(self._buffer) - self._start > self._limit:
            raise ValueError(f"line longer than {self._limit} bytes")
        return lines
