"""IMAP, POP and SMTP sessions as the harness's mail clients run them.

Each session is one short dialogue on an open stream, bounded in time by the
caller, and returns the server the banner names. A refusal (IMAP `* BYE`, POP
`-ERR`, SMTP 4xx/5xx) is a ClientError with the protocol's own words as its kind.
"""

from __future__ import annotations

import trio

from perf.failover.connect import ClientError
from perf.failover.recorder import Recorder

MAX_LINE = 8192


class LineReader:
    """Reads CRLF-terminated lines from a stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def line(self) -> str:
        """The next line without its terminator.

        Raises:
            ClientError: "eof" when the server closes first, "protocol" when a
                line grows past MAX_LINE.
        """
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise ClientError("protocol", "line too long")
            data = await self.stream.receive_some(4096)
            if not data:
                raise ClientError("eof", "closed mid-dialogue")
            self._buffer += data
        raw, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return raw.rstrip(b"\r").decode("utf-8", "replace")

    async def send(self, text: str) -> None:
        """Send one command line."""
        await self.stream.send_all(text.encode() + b"\r\n")


async def imap_session(stream: trio.abc.Stream, recorder: Recorder) -> str | None:
    """Banner, LOGIN, NOOP, LOGOUT."""
    io = LineReader(stream)
    banner = await io.line()
    if not banner.startswith("* OK"):
        raise ClientError("imap refused", banner[:40])
    for tag, command in (("a1", "LOGIN user1 pass"), ("a2", "NOOP"), ("a3", "LOGOUT")):
        await io.send(f"{tag} {command}")
        while True:
            reply = await io.line()
            if reply.startswith(f"{tag} "):
                break
        if not reply.startswith(f"{tag} OK"):
            raise ClientError("imap error", reply[:40])
    return recorder.server_named(banner)


async def pop_session(stream: trio.abc.Stream, recorder: Recorder) -> str | None:
    """Banner, USER, PASS, STAT, QUIT."""
    io = LineReader(stream)
    banner = await io.line()
    if not banner.startswith("+OK"):
        raise ClientError("pop refused", banner[:40])
    for command in ("USER user1", "PASS pass", "STAT", "QUIT"):
        await io.send(command)
        reply = await io.line()
        if not reply.startswith("+OK"):
            raise ClientError("pop error", reply[:40])
    return recorder.server_named(banner)


async def _smtp_reply(io: LineReader) -> tuple[int, str]:
    while True:
        line = await io.line()
        if len(line) < 3 or not line[:3].isdigit():
            raise ClientError("protocol", f"bad smtp reply {line[:30]!r}")
        if line[3:4] != "-":
            return int(line[:3]), line


async def smtp_session(stream: trio.abc.Stream, recorder: Recorder) -> str | None:
    """Banner, EHLO, MAIL FROM, RCPT TO, DATA, QUIT: one submitted message."""
    io = LineReader(stream)
    code, banner = await _smtp_reply(io)
    if code != 220:
        raise ClientError(f"smtp {code}", banner[:40])
    steps = (
        ("EHLO perf.lab.local", 250),
        ("MAIL FROM:<perf@lab.local>", 250),
        ("RCPT TO:<user1@lab.local>", 250),
        ("DATA", 354),
        ("Subject: perf\r\n\r\nfailover harness\r\n.", 250),
        ("QUIT", 221),
    )
    for command, expected in steps:
        await io.send(command)
        code, reply = await _smtp_reply(io)
        if code != expected:
            raise ClientError(f"smtp {code}", reply[:40])
    return recorder.server_named(banner)
