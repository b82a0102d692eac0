"""A small HTTP/1.1 client connection on trio and h11, with keep-alive.

Enough for the harness's clients: send a request (with a body, or a body
streamed by the caller), read the head, read the body whole or chunk by chunk
under an idle timeout (MAPI PENDING streams), and reuse the connection when
both sides allow it. Failures become ClientError kinds.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence

import h11
import trio

from perf.failover.connect import ClientError, map_os_error

READ_SIZE = 65536


class HttpConnection:
    """One client connection: requests in turn, responses parsed by h11."""

    def __init__(self, stream: trio.abc.Stream, host: str) -> None:
        self.stream = stream
        self.host = host
        self._conn = h11.Connection(h11.CLIENT)

    def __repr__(self) -> str:
        return f"<HttpConnection {self.host} {self._conn.our_state}/{self._conn.their_state}>"

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, OSError) as exc:
                raise map_os_error(exc) from exc

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                raise map_os_error(exc) from exc
            if not data and self._conn.their_state is h11.SEND_RESPONSE:
                raise ClientError("eof", "closed before a response")
            self._conn.receive_data(bytes(data))

    async def send_head(
        self, method: str, target: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Send a request head; the body follows with send_body/end_body."""
        all_headers = [("Host", self.host), ("User-Agent", "caslb-perf"), *headers]
        await self._send(h11.Request(method=method, target=target, headers=all_headers))

    async def send_body(self, data: bytes) -> None:
        """Send part of the request body."""
        await self._send(h11.Data(data=data))

    async def end_body(self) -> None:
        """Finish the request body."""
        await self._send(h11.EndOfMessage())

    async def read_head(self, timeout: float) -> h11.Response:
        """Wait for the response head.

        Raises:
            ClientError: "timeout", "eof", "reset" or "protocol".
        """
        with trio.move_on_after(timeout):
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                raise ClientError("protocol", str(exc)) from exc
            if isinstance(event, h11.Response):
                return event
            raise ClientError("protocol", f"unexpected {type(event).__name__}")
        raise ClientError("timeout", "no response head")

    async def body_chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """Yield the response body as it arrives; each wait bounded by `idle_timeout`."""
        while True:
            with trio.move_on_after(idle_timeout):
                try:
                    event = await self._next_event()
                except h11.RemoteProtocolError as exc:
                    raise ClientError("eof", str(exc)) from exc
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                    continue
                if isinstance(event, h11.EndOfMessage):
                    return
                raise ClientError("protocol", f"unexpected {type(event).__name__}")
            raise ClientError("timeout", "response body stalled")

    async def read_body(self, timeout: float) -> bytes:
        """Read the whole response body within `timeout`."""
        parts = []
        with trio.move_on_after(timeout):
            async for chunk in self.body_chunks(timeout):
                parts.append(chunk)
            return b"".join(parts)
        raise ClientError("timeout", "response body too slow")

    def reusable(self) -> bool:
        """Prepare the next request cycle; False when the connection must close."""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            return True
        return False

    async def aclose(self) -> None:
        """Close the underlying stream without waiting for a TLS close_notify.

        Never raises an I/O error: a TLS shutdown can fail on a reset
        connection, and the socket is closed all the same. Nor does it raise
        Cancelled, so a cleanup closing several connections closes them all.
        """
        # shielded: an outer cancellation must not skip the next close in a cleanup
        with (
            trio.CancelScope(shield=True),
            contextlib.suppress(OSError, ssl.SSLError, trio.BrokenResourceError),
        ):
            await trio.aclose_forcefully(self.stream)


async def exchange(
    conn: HttpConnection,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    timeout: float,
) -> tuple[h11.Response, bytes]:
    """Send one request with a complete body and read the complete response."""
    await conn.send_head(method, target, [*headers, ("Content-Length", str(len(body)))])
    if body:
        await conn.send_body(body)
    await conn.end_body()
    head = await conn.read_head(timeout)
    try:
        return head, await conn.read_body(timeout)
    except ClientError as exc:
        raise ClientError(exc.kind, str(exc), before_response=False) from exc


def header(head: h11.Response, name: str) -> str | None:
    """A response header's value, or None."""
    wanted = name.lower().encode()
    for key, value in head.headers:
        if key == wanted:
            return bytes(value).decode("latin-1")
    return None
