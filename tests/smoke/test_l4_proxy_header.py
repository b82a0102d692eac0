"""PROXY protocol headers as a real backend receives them through the frontend."""

from __future__ import annotations

import pytest
import trio

from lb.config.model import PoolConfig, ServerConfig
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.pool import Pool
from tests.integration.l4_rig import RecordingEvents

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("version", [1, 2])
async def test_the_backend_sees_the_client_address_first(version: int) -> None:
    received: list[bytes] = []

    async def backend(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while not data.endswith(b"hello"):
                data += await stream.receive_some(4096)
            received.append(data)
            await stream.send_all(b"answer")

    backend_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    front_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    backend_port = backend_listeners[0].socket.getsockname()[1]
    front_port = front_listeners[0].socket.getsockname()[1]
    pool = Pool(PoolConfig("p", (ServerConfig("cas1", "127.0.0.1", backend_port, "cas1"),)))
    events = RecordingEvents()
    frontend = TcpFrontend(
        TcpFrontendSettings("fe"),
        default=Route(pool, UpstreamPolicy(proxy_protocol=version, first_response_timeout=5)),
        events=events,
        report=lambda *r: None,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, backend, backend_listeners)
        await nursery.start(frontend.serve, front_listeners)
        async with await trio.open_tcp_stream("127.0.0.1", front_port) as client:
            await client.send_all(b"hello")
            assert await client.receive_some(100) == b"answer"
            client_port = client.socket.getsockname()[1]
        nursery.cancel_scope.cancel()
    for listener in (*backend_listeners, *front_listeners):
        await listener.aclose()
    if version == 1:
        expected = f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {front_port}\r\n".encode()
    else:
        expected = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([127, 0, 0, 1]) * 2
                    + client_port.to_bytes(2, "big") + front_port.to_bytes(2, "big"))
    assert received == [expected + b"hello"]
