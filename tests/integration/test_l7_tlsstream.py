"""lb.l7.tlsstream over real loopback sockets: caslb's own server-side TLS against trio's
and the stdlib's clients, the ends of a stream, hostile handshakes and cancellation."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from lb.dial import socket_of
from lb.l7.tlsstream import TlsStream
from lb.tls import Certificate, server_context

BIG = 4 * 1024 * 1024 + 123  # many TLS records, and more than the socket buffers hold


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_ctx(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    paths = []
    for name in ("mail.lab.local", "other.lab.local"):
        path = tmp_path / f"{name}.pem"
        ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(path))
        paths.append(path)
    return server_context(Certificate(paths[0]), [Certificate(paths[1], None,
                                                              ("other.lab.local",))])


@pytest.fixture(params=["1.3", "1.2"])
def client_ctx(ca: trustme.CA, request: pytest.FixtureRequest) -> ssl.SSLContext:
    """A client of each version: TLS 1.2's server Finished comes after the client's,
    and must not wait for a response as TLS 1.3's tickets do."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    if request.param == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@asynccontextmanager
async def pair(server_ctx: ssl.SSLContext) -> AsyncIterator[tuple[TlsStream, trio.SocketStream]]:
    """A TlsStream (not yet handshaken) on one end of a loopback connection, TCP on the other."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    accepted = await listeners[0].accept()
    await listeners[0].aclose()
    assert isinstance(accepted, trio.SocketStream)
    server = TlsStream(accepted, server_ctx)
    try:
        yield server, client
    finally:
        await trio.aclose_forcefully(server)
        await trio.aclose_forcefully(client)


async def handshaken(server: TlsStream, client: trio.abc.Stream, client_ctx: ssl.SSLContext,
                     name: str = "mail.lab.local") -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(client, client_ctx, server_hostname=name)
    with trio.fail_after(10):  # a flight left unsent would hang both sides
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await tls.do_handshake()
    return tls


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        piece = await stream.receive_some(size - len(got))
        assert piece, f"EOF after {len(got)} of {size} bytes"
        got += piece
    return bytes(got)


async def test_handshake_alpn_sni_and_a_request_each_way(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx, "other.lab.local")
        assert server.selected_alpn_protocol() == "http/1.1"
        cert = tls.getpeercert()
        assert cert is not None and ("DNS", "other.lab.local") in cert["subjectAltName"]
        await tls.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert await receive_exactly(server, 27) == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        await server.send_all(b"HTTP/1.1 200 OK\r\n\r\n")
        assert await receive_exactly(tls, 19) == b"HTTP/1.1 200 OK\r\n\r\n"
        assert socket_of(server) is server.transport_stream.socket  # client addresses, QUICKACK


async def test_receive_now_takes_what_is_there_and_says_when_it_would_wait(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        assert server.receive_now(1000) is None  # nothing sent: no wait, no bytes
        await tls.send_all(b"one")
        await trio.lowlevel.wait_readable(server.socket)
        assert server.receive_now(1000) == b"one"
        assert server.receive_now(1000) is None


async def test_large_bodies_both_ways_at_once(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    up, down = bytes(range(256)) * (BIG // 256), b"d" * BIG
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        got: dict[str, bytes] = {}

        async def server_side() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, down)
                got["up"] = await receive_exactly(server, len(up))

        async def client_reads() -> None:
            got["down"] = await receive_exactly(tls, len(down))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server_side)
                nursery.start_soon(client_reads)
                await tls.send_all(up)
        assert got["up"] == up
        assert got["down"] == down


async def test_close_notify_from_the_client_ends_the_plaintext(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        await tls.send_all(b"last")
        await tls.aclose()  # close_notify, then the socket
        assert await receive_exactly(server, 4) == b"last"
        assert await server.receive_some() == b""
        assert await server.receive_some() == b""  # and stays ended
        await server.aclose()


async def test_a_ragged_eof_ends_the_plaintext_too(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        await tls.send_all(b"cut")
        await client.aclose()  # TCP FIN with no close_notify, as browsers do
        assert await receive_exactly(server, 3) == b"cut"
        assert await server.receive_some() == b""


async def test_our_close_sends_close_notify(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        await server.send_all(b"bye")
        await server.aclose()
        assert await receive_exactly(tls, 3) == b"bye"
        # trio's client raises on a ragged EOF unless https_compatible: a clean end here
        # is the close_notify
        assert await tls.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await server.send_all(b"more")


async def test_garbage_instead_of_a_client_hello_breaks_the_handshake(
    server_ctx: ssl.SSLContext,
) -> None:
    async with pair(server_ctx) as (server, client):
        await client.send_all(b"GET / HTTP/1.1\r\nHost: mail\r\n\r\n")
        with pytest.raises(trio.BrokenResourceError) as caught:
            await server.do_handshake()
        assert isinstance(caught.value.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()


async def test_eof_in_the_middle_of_a_handshake_breaks_it(server_ctx: ssl.SSLContext) -> None:
    hello = await client_hello()
    async with pair(server_ctx) as (server, client):
        await client.send_all(hello[: len(hello) // 2])
        await client.send_eof()
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()


async def client_hello() -> bytes:
    """The first flight of a stdlib client, as bytes."""
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="mail.lab.local")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    await trio.lowlevel.checkpoint()
    return out.read()


async def test_a_stalled_handshake_is_ended_by_its_deadline(
    server_ctx: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    hello = await client_hello()
    async with pair(server_ctx) as (server, client):
        await client.send_all(hello[:10])  # a few bytes, then nothing
        with trio.move_on_after(10) as scope:  # the frontend's handshake_timeout
            await server.do_handshake()
        assert scope.cancelled_caught
        await server.aclose()
        assert await client.receive_some(100) == b""  # the connection is closed


async def test_a_cancelled_read_loses_nothing(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        with trio.move_on_after(5) as scope:
            await server.receive_some()
        assert scope.cancelled_caught
        await tls.send_all(b"after")
        assert await receive_exactly(server, 5) == b"after"


async def test_a_cancelled_write_keeps_the_record_stream_whole(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pair(server_ctx) as (server, client):
        tls = await handshaken(server, client, client_ctx)
        with trio.move_on_after(5) as scope:
            await server.send_all(b"a" * BIG)  # the client reads nothing: the socket fills
        assert scope.cancelled_caught
        with trio.fail_after(30):  # virtual: fails at once if a byte went missing
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, b"tail")
                # what was encrypted before the cancel goes first, then the rest, in order
                assert await receive_exactly(tls, BIG + 4) == b"a" * BIG + b"tail"


async def test_a_second_sender_is_refused(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pair(server_ctx) as (server, client):
        await handshaken(server, client, client_ctx)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"a" * BIG)  # blocks: nobody reads
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await server.send_all(b"b")
            nursery.cancel_scope.cancel()


def _stdlib_client(port: int, ctx: ssl.SSLContext,
                   session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
    """A blocking stdlib client: handshake, one exchange, and whether the session resumed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="mail.lab.local", session=session) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"pong"  # TLS 1.3 tickets come with it
        return sock.session_reused, sock.session


async def test_clients_resume_their_sessions(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve_one() -> None:
        accepted = await listeners[0].accept()
        assert isinstance(accepted, trio.SocketStream)
        server = TlsStream(accepted, server_ctx)
        try:
            await server.do_handshake()
            assert await receive_exactly(server, 4) == b"ping"
            await server.send_all(b"pong")
            assert await server.receive_some() == b""
        finally:
            await server.aclose()

    async def client(session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
        def call() -> tuple[bool, ssl.SSLSession | None]:
            return _stdlib_client(port, client_ctx, session)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            return await trio.to_thread.run_sync(call)

    with trio.fail_after(30):
        reused, session = await client(None)
        assert not reused and session is not None
        reused, _ = await client(session)
    assert reused
    await listeners[0].aclose()


async def test_a_tls12_renegotiation_is_refused_with_an_alert(server_ctx: ssl.SSLContext) -> None:
    """`openssl s_client`'s R command renegotiates; the server's answer must reach it
    (an alert that says no_renegotiation), not leave both sides waiting."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    argv = ["openssl", "s_client", "-tls1_2", "-connect", f"127.0.0.1:{port}",
            "-servername", "mail.lab.local"]
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with trio.fail_after(20):
            accepted = await listeners[0].accept()
            assert isinstance(accepted, trio.SocketStream)
            server = TlsStream(accepted, server_ctx)
            await server.do_handshake()
            await proc.stdin.send_all(b"R\n")  # s_client reads commands once it is connected
            with pytest.raises(trio.BrokenResourceError):
                while await server.receive_some():
                    pass  # the client aborts once it has our alert
            await server.aclose()
            await proc.stdin.aclose()
            out = bytearray()
            while chunk := await proc.stdout.receive_some():
                out += chunk
            await proc.wait()
    finally:
        proc.kill()
        await listeners[0].aclose()
    assert b"RENEGOTIATING" in out
    assert b"no renegotiation" in out


async def _turns_given(io: object, calls: int) -> int:
    """How often another task ran while `io` made `calls` socket calls that did not wait."""
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()  # `other` has started and is in the run queue
        ran = 0
        for _ in range(calls):
            await io._maybe_yield()  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
    return ran


async def test_a_tls_connection_yields_more_often_than_a_plain_one(
    server_ctx: ssl.SSLContext,
) -> None:
    # a TLS call also encrypts or decrypts, so it gives the others a turn every second call
    from lb.l7.adapter import HttpStream
    from lb.l7.wire.connection import WireConnection

    async with pair(server_ctx) as (server, client):
        tls = HttpStream(server, WireConnection(server=True))
        plain = HttpStream(client, WireConnection(server=True))  # type: ignore[arg-type]
        # trio may run a batch of ready tasks in either order: a turn more or less
        assert 7 <= await _turns_given(tls, 16) <= 9
        assert 1 <= await _turns_given(plain, 16) <= 3
