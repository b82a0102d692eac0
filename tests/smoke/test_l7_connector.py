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


class ResumptionServer:
    """A TLS server on loopback that records, per handshake, the SNI and whether it
    resumed a session; it sends one line, so the client reads its TLS 1.3 ticket."""

    def __init__(self, ca: trustme.CA, *names: str) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(self.context)
        self.handshakes: list[tuple[str | None, bool]] = []
        self._sni: list[str | None] = []
        self.context.sni_callback = lambda sock, name, ctx: self._sni.append(name)  # type: ignore[assignment,misc,return-value]

    async def handle(self, tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, self.context, server_side=True)
        try:
            await stream.do_handshake()
            self.handshakes.append((self._sni[-1], bool(stream.session_reused)))
            await stream.send_all(b"hi\n")
            await stream.receive_some(10)  # until the client closes
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def exchange(connect: object, member: FakeMember) -> None:
    stream = await connect(member, 5)  # type: ignore[operator]
    try:
        assert await stream.receive_some(10) == b"hi\n"
    finally:
        await stream.aclose()


def lab_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


async def serve(nursery: trio.Nursery, server: ResumptionServer, port: int = 0) -> int:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server.handle, port, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_each_servers_tls_session_is_resumed_under_its_own_name_only(
    tmp_path: Path,
) -> None:
    ca, ca_file = lab_ca(tmp_path)
    server = ResumptionServer(ca, "cas1.contoso.test", "cas2.contoso.test")
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, server)
        one = FakeMember("cas1", "127.0.0.1", port, "cas1.contoso.test")
        other_name = FakeMember("cas2", "127.0.0.1", port, "cas2.contoso.test")
        connect = tcp_connector(client_context(ca_file))
        for member in (one, one, one, other_name, other_name, one):
            await exchange(connect, member)
        # a new connector (a reload: a new context) starts without sessions
        await exchange(tcp_connector(client_context(ca_file)), one)
        nursery.cancel_scope.cancel()
    assert server.handshakes == [
        ("cas1.contoso.test", False), ("cas1.contoso.test", True), ("cas1.contoso.test", True),
        ("cas2.contoso.test", False), ("cas2.contoso.test", True), ("cas1.contoso.test", True),
        ("cas1.contoso.test", False),
    ]


async def test_a_refused_ticket_falls_back_to_a_full_handshake_and_is_replaced(
    tmp_path: Path,
) -> None:
    ca, ca_file = lab_ca(tmp_path)
    first = ResumptionServer(ca, "cas1.contoso.test")
    connect = tcp_connector(client_context(ca_file))
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, first)
        member = FakeMember("cas1", "127.0.0.1", port, "cas1.contoso.test")
        await exchange(connect, member)
        await exchange(connect, member)
        nursery.cancel_scope.cancel()
    # the server restarts on the same port with new ticket keys
    restarted = ResumptionServer(ca, "cas1.contoso.test")
    async with trio.open_nursery() as nursery:
        await serve(nursery, restarted, port)
        for _ in range(3):
            await exchange(connect, member)
        nursery.cancel_scope.cancel()
    assert [r for _, r in first.handshakes] == [False, True]
    assert [r for _, r in restarted.handshakes] == [False, True, True]
