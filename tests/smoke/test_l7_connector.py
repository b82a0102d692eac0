"""The default upstream connector on loopback: TCP_NODELAY, TLS with the FQDN as SNI."""

from __future__ import annotations

import functools
import socket
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from lb.l7.frontend import peer_name
from lb.l7.upstream import tcp_connector
from lb.tls import client_context
from tests.integration.test_l7_rig import FakeMember


def nodelay(stream: trio.abc.Stream) -> bool:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return bool(stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def test_both_sides_have_tcp_nodelay_and_sni_is_the_fqdn(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("cas1.contoso.test").configure_cert(server_ctx)
    seen_sni: list[str | None] = []
    accepted_nodelay: list[bool] = []
    server_ctx.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore[assignment,misc,return-value]

    async def handle(tcp: trio.SocketStream) -> None:
        accepted_nodelay.append(nodelay(tcp))
        stream = trio.SSLStream(tcp, server_ctx, server_side=True)
        try:
            await stream.do_handshake()
            await stream.send_all(b"hi")
        finally:
            await trio.aclose_forcefully(stream)

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        member = FakeMember("cas1", "127.0.0.1", port, "cas1.contoso.test")
        stream = await tcp_connector(client_context(ca_file))(member, 5)
        try:
            assert nodelay(stream)
            assert await stream.receive_some(10) == b"hi"
            assert peer_name(stream) == "127.0.0.1"
        finally:
            await stream.aclose()
        plain = await tcp_connector(None)(member, 5)
        try:
            assert nodelay(plain)
        finally:
            await plain.aclose()
        nursery.cancel_scope.cancel()
    assert seen_sni[0] == "cas1.contoso.test"
    assert accepted_nodelay and all(accepted_nodelay)


async def test_refused_connect_raises_oserror() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        member = FakeMember("cas9", "127.0.0.1", port)
        with pytest.raises(OSError):
            await tcp_connector(None)(member, 5)
