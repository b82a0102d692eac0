"""A small h11 client over trio streams, for tests that talk HTTP to real sockets.

Reusable by any test: open a (TLS) connection, send requests with keep-alive,
read whole or streamed responses, and tell a TCP reset from a clean close.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import h11
import trio


@dataclass(frozen=True)
class Response:
    """A whole response.

    Attributes:
        status: the status code.
        reason: the reason phrase.
        headers: (lowercase name, value) pairs, in order.
        body: the whole body.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)


def client_context(ca_path: str | Path | None) -> ssl.SSLContext:
    """A client TLS context trusting `ca_path` (None: no verification at all)."""
    if ca_path is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ca_path))


async def open_tls(
    host: str,
    port: int,
    *,
    ca_path: str | Path | None,
    server_hostname: str,
    local_address: str | None = None,
) -> trio.SSLStream[trio.SocketStream]:
    """Connect (from `local_address`, if given) and complete a TLS handshake (SNI =
    `server_hostname`)."""
    tcp = await trio.open_tcp_stream(host, port, local_address=local_address)
    stream = trio.SSLStream(
        tcp, client_context(ca_path), server_hostname=server_hostname, https_compatible=True
    )
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


def was_reset(exc: BaseException) -> bool:
    """True when `exc` (or its cause chain) is a TCP reset from the peer."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class HttpClient:
    """HTTP/1.1 with keep-alive over one stream.

    Args:
        stream: a connected stream (plain or TLS).
        host: the Host header sent with every request.
    """

    def __init__(self, stream: trio.abc.Stream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        """Close the stream."""
        await trio.aclose_forcefully(self.stream)

    async def send_request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        end: bool = True,
    ) -> None:
        """Send a request head, `body`, and (if `end`) the end of the message.

        Without a Content-Length in `headers` one is added for `body`.
        """
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("Host", self.host), *(headers or [])]
        if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in all_headers):
            all_headers.append(("Content-Length", str(len(body))))
        out = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            out += self.conn.send(h11.Data(data=body))
        if end:
            out += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)

    async def send_body(self, data: bytes) -> None:
        """Send more of a request body started with `end=False`."""
        await self.stream.send_all(self.conn.send(h11.Data(data=data)))

    async def _event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
                continue
            assert not isinstance(event, type), event
            return event

    async def read_head(self) -> h11.Response:
        """Read a response head (skipping 1xx)."""
        while True:
            event = await self._event()
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("server closed before answering")

    async def read_data(self) -> bytes | None:
        """The next piece of a response body, or None at its end."""
        event = await self._event()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise trio.BrokenResourceError(f"unexpected {event!r} in a response body")

    async def read_response(self) -> Response:
        """Read a whole response."""
        head = await self.read_head()
        body = bytearray()
        while (piece := await self.read_data()) is not None:
            body += piece
        return Response(
            status=head.status_code,
            reason=head.reason.decode("latin-1"),
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers),
            body=bytes(body),
        )

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send a whole request and read the whole response."""
        await self.send_request(method, target, headers, body)
        return await self.read_response()


async def https_client(
    host: str,
    port: int,
    *,
    ca_path: str | Path | None,
    server_hostname: str,
    local_address: str | None = None,
) -> HttpClient:
    """An HttpClient over a fresh TLS connection, Host = `server_hostname`."""
    stream = await open_tls(host, port, ca_path=ca_path, server_hostname=server_hostname,
                            local_address=local_address)
    return HttpClient(stream, server_hostname)
