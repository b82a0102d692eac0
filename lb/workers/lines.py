"""Line framing over trio streams: `LineReader` reads lines, `write_lines` sends queued ones."""

from __future__ import annotations

import trio

from lb.workers.messages import LineSplitter


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
