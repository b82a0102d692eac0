"""A raw client: send exact bytes, read back what the balancer answers, judge its form.

The answer is read with h11 in client mode, which is strict about response
grammar: a malformed status line, header or framing from the balancer shows
up as `Reply.malformed`. The read is bounded only so that a hang fails the
test with a message instead of stalling the suite; no test asserts how fast
anything happened.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Collection
from dataclasses import dataclass, field

import h11
import trio

from tests.hostile.case import CLOSING_VERDICTS

HANG_BOUND = 3.0  # seconds without an answer or a close before the case is judged hung


@dataclass
class Answer:
    """One response as the client read it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


@dataclass
class Reply:
    """Everything the balancer sent back on one connection.

    Attributes:
        answers: the responses read, in order (1xx not included).
        ending: "eof" (clean close), "reset", "open" (still open when the client
            stopped reading) or "hung" (neither an answer nor a close in time).
        malformed: h11's complaint when the bytes were not a valid response stream.
        raw: every byte received.
    """

    answers: list[Answer] = field(default_factory=list)
    ending: str = "open"
    malformed: str | None = None
    raw: bytes = b""

    @property
    def statuses(self) -> list[int]:
        return [a.status for a in self.answers]

    def describe(self) -> str:
        """One line for assertion messages."""
        parts = [f"statuses={self.statuses}", f"ending={self.ending}"]
        if self.malformed:
            parts.append(f"malformed={self.malformed}")
        if self.answers and not self.answers[-1].complete:
            parts.append("last answer incomplete")
        return " ".join(parts) + f" raw={self.raw[:160]!r}"


class ResponseStream:
    """Parses the balancer's responses, one per request the client sent."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.CLIENT)
        self.reply = Reply()
        self._ask()

    def _ask(self) -> None:
        # h11 parses a response only after its request; the request bytes are discarded.
        self.conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        self.conn.send(h11.EndOfMessage())

    def feed(self, data: bytes) -> None:
        """Parse `data` (b"" for the end of the stream)."""
        self.reply.raw += data
        if self.reply.malformed is not None:
            return
        if not data and self._between_responses():
            return  # a close before the next answer began: a clean close, not a cut response
        self.conn.receive_data(data)
        try:
            self._drain()
        except h11.ProtocolError as exc:
            self.reply.malformed = str(exc) or type(exc).__name__

    def _drain(self) -> None:
        while True:
            event = self.conn.next_event()
            if (
                event is h11.NEED_DATA
                or event is h11.PAUSED
                or isinstance(event, h11.ConnectionClosed)
            ):
                if event is h11.PAUSED and self._next_cycle():
                    continue
                return
            if isinstance(event, h11.Response):
                self.reply.answers.append(Answer(event.status_code, list(event.headers)))
            elif isinstance(event, h11.Data):
                self.reply.answers[-1].body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.reply.answers[-1].complete = True
                if not self._next_cycle():
                    return

    def _between_responses(self) -> bool:
        return self.conn.their_state is h11.SEND_RESPONSE and not self.conn.trailing_data[0]

    def _next_cycle(self) -> bool:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self._ask()
            return True
        return False

    def done(self, answers: int) -> bool:
        """Whether `answers` complete responses have been read."""
        return sum(a.complete for a in self.reply.answers) >= answers


async def send_and_read(
    port: int,
    data: bytes,
    *,
    answers: int = 1,
    close_after: Collection[int] = CLOSING_VERDICTS,
    bound: float = HANG_BOUND,
) -> Reply:
    """Send `data` on a fresh connection and read the answer.

    Reading stops after `answers` complete responses, unless the last one has
    a status in `close_after`: then it goes on until the balancer closes, so
    the reply shows whether it closed and whether anything followed.

    Args:
        port: the frontend's port on 127.0.0.1.
        data: the exact bytes to send.
        answers: how many complete responses end the read.
        close_after: statuses after which the balancer must close.
        bound: seconds of silence after which the reply is judged "hung".
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    parser = ResponseStream()
    try:
        # The balancer may close before reading everything; its answer may still be there.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(data)
        await _read(stream, parser, answers=answers, close_after=close_after, bound=bound)
    finally:
        await trio.aclose_forcefully(stream)
    return parser.reply


async def _read(
    stream: trio.SocketStream,
    parser: ResponseStream,
    *,
    answers: int,
    close_after: Collection[int],
    bound: float,
) -> None:
    while not parser.done(answers) or parser.reply.statuses[-1] in close_after:
        with trio.move_on_after(bound):
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                parser.reply.ending = "reset" if _is_reset(exc) else "eof"
                return
            if not data:
                parser.feed(b"")
                parser.reply.ending = "eof"
                return
            parser.feed(bytes(data))
            continue
        parser.reply.ending = "hung"
        return


def _is_reset(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ECONNRESET, errno.EPIPE):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
