"""The HTTP/1.1 side of one simulated CAS server: h11 over a trio stream.

Theory of operation: `serve_http` runs one keep-alive connection. It reads a
request head with h11, hands an `HttpExchange` to the traffic handlers, and
starts the next cycle when both sides are done. An exchange writes a whole
response (head, body, end) in one socket send, because a head and body written
apart stall behind Nagle and delayed ACKs; long answers stream through
`start`/`send`/`end`. Reading a body first answers `Expect: 100-continue` with
`100 Continue`, as IIS does. A connection that stays idle between requests
for `idle_close` seconds (IIS's connectionTimeout, 120 s by default) is closed
with a FIN, as IIS closes it; a request in progress, however long, is never
cut by it. A handler that wants the connection reset (an unhealthy
health check) raises `ResetConnection`; a peer that breaks the protocol gets a
400 and a close, never an exception that could reach the listener.
"""

from __future__ import annotations

import email.utils
import http
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence

import h11
import trio

_MAX_HEAD = 32 * 1024
_RECEIVE = 65536
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html; charset=us-ascii\r\n"
    b"Server: Microsoft-HTTPAPI/2.0\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)
_request_ids = itertools.count(1)
IIS_CONNECTION_TIMEOUT = 120.0  # <limits connectionTimeout="00:02:00"> of a site

Header = tuple[str, str]


def reason_phrase(status: int) -> str:
    """IIS's reason phrase for `status` (the standard one), or "" for one it has none for."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


class HttpExchange:
    """One request on a connection and the means to answer it.

    Attributes:
        request: the h11 request head.
        method: the method as text, e.g. "GET", "RPC_IN_DATA".
        target: the request target as text, e.g. "/owa/?ae=Item".
        server_headers: headers every application response carries
            (X-FEServer, Server, ...).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        request: h11.Request,
        server_headers: Sequence[Header],
    ) -> None:
        self._stream = stream
        self._conn = conn
        self.request = request
        self.method = request.method.decode("ascii", "replace")
        self.target = request.target.decode("ascii", "replace")
        self.server_headers = tuple(server_headers)
        self._body_done = False

    def header(self, name: str) -> str | None:
        """The first request header called `name` (case-insensitive), or None."""
        wanted = name.lower().encode("ascii")
        for key, value in self.request.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    async def _event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._conn.receive_data(bytes(await self._stream.receive_some(_RECEIVE)))

    async def _continue(self) -> None:
        # A client that sent `Expect: 100-continue` holds its body until told to go on.
        if self._conn.they_are_waiting_for_100_continue:
            go_on = h11.InformationalResponse(status_code=100, headers=[], reason="Continue")
            await self._stream.send_all(self._conn.send(go_on))

    async def read_body(self, keep: int = 1 << 20) -> bytes:
        """Read the request body to its end, keeping at most `keep` bytes.

        Returns:
            The first `keep` bytes; the rest is consumed and dropped.
        """
        await self._continue()
        kept = bytearray()
        while not self._body_done:
            event = await self._event()
            if isinstance(event, h11.Data):
                if len(kept) < keep:
                    kept += event.data[: keep - len(kept)]
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("client closed before the request body ended")
        return bytes(kept)

    async def consume_body(self) -> int:
        """Read the body until it ends or the client goes away; return bytes read.

        For Outlook Anywhere's IN channel: a huge declared length, streamed for
        as long as the client likes, and never an answer while healthy.
        """
        await self._continue()
        total = 0
        while not self._body_done:
            try:
                event = await self._event()
            except (trio.BrokenResourceError, h11.RemoteProtocolError):
                return total
            if isinstance(event, h11.Data):
                total += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
            elif isinstance(event, h11.ConnectionClosed):
                return total
        return total

    def _head(self, headers: Sequence[Header], app: bool) -> list[tuple[str, str]]:
        out = list(self.server_headers) if app else []
        out.append(("Date", email.utils.formatdate(usegmt=True)))
        out.extend(headers)
        return out

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Sequence[Header] = (),
        *,
        reason: str = "",
        app: bool = True,
        close: bool = False,
    ) -> None:
        """Send a whole response in one write.

        Args:
            status: the status code.
            body: the body (not sent to HEAD, whose Content-Length still says it).
            headers: extra headers; Content-Length is added.
            reason: the reason phrase.
            app: False for answers HTTP.sys gives itself (no X-FEServer).
            close: ask for the connection to close after it.
        """
        all_headers = self._head(headers, app)
        all_headers.append(("Content-Length", str(len(body))))
        if close:
            all_headers.append(("Connection", "close"))
        reason = reason or reason_phrase(status)
        out = self._conn.send(h11.Response(status_code=status, headers=all_headers, reason=reason))
        if body and self.method != "HEAD":
            out += self._conn.send(h11.Data(data=body))
        out += self._conn.send(h11.EndOfMessage())
        await self._stream.send_all(out)

    async def start(self, status: int, headers: Sequence[Header] = (), *, reason: str = "") -> None:
        """Send a response head; the body follows through `send` and `end`.

        Without a Content-Length in `headers`, h11 frames the body as chunked.
        """
        head = self._conn.send(
            h11.Response(
                status_code=status,
                headers=self._head(headers, True),
                reason=reason or reason_phrase(status),
            )
        )
        await self._stream.send_all(head)

    async def send(self, data: bytes) -> None:
        """Send one piece (one chunk when chunked) of a streamed body."""
        await self._stream.send_all(self._conn.send(h11.Data(data=data)))

    async def end(self) -> None:
        """End a streamed body."""
        await self._stream.send_all(self._conn.send(h11.EndOfMessage()))


Handler = Callable[[HttpExchange], Awaitable[None]]


class IdleClose(Exception):
    """The connection idled past the connectionTimeout before a request began."""


async def _next_request(
    stream: trio.abc.Stream, conn: h11.Connection, idle_close: float
) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            # Idle means no byte of the next request yet; a head that has begun
            # arriving is not idle, and gets no deadline here.
            idle = not conn.trailing_data[0] and conn.their_state is h11.IDLE
            with trio.move_on_after(idle_close if idle else math.inf) as waited:
                data = await stream.receive_some(_RECEIVE)
            if waited.cancelled_caught:
                raise IdleClose
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed, or PAUSED after an un-drained body


async def serve_http(
    stream: trio.abc.Stream,
    handler: Handler,
    server_headers: Callable[[], Sequence[Header]],
    idle_close: float = IIS_CONNECTION_TIMEOUT,
    on_idle_close: Callable[[], None] = lambda: None,
) -> None:
    """Serve keep-alive HTTP/1.1 on `stream` until either side closes.

    Args:
        stream: a connected stream (usually a server-side SSLStream).
        handler: answers one exchange; may raise ResetConnection.
        server_headers: the headers stamped on each application response.
        idle_close: seconds without a request after which the connection is
            closed (IIS connectionTimeout).
        on_idle_close: called when that happens (the server counts it).
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    while True:
        try:
            request = await _next_request(stream, conn, idle_close)
        except h11.RemoteProtocolError:
            await stream.send_all(_BAD_REQUEST)
            return
        except IdleClose:
            on_idle_close()
            return
        if request is None:
            return
        exchange = HttpExchange(stream, conn, request, server_headers())
        try:
            await handler(exchange)
        except h11.RemoteProtocolError:
            return
        if conn.their_state is h11.SEND_BODY and conn.our_state is h11.DONE:
            await exchange.read_body(keep=0)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


def next_request_id() -> str:
    """A fresh request-id header value, as Exchange stamps on every answer."""
    return f"{next(_request_ids):08x}-casf-4a4d-9e1b-000000000000"
