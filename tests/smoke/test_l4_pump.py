"""The splice pump over real loopback sockets: integrity, half-close, aborts."""

from __future__ import annotations

import gc
import hashlib
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from lb.l4.closing import close_after, reset
from lb.l4.pump import Mode, RelayResult, Side, relay

MB = 1 << 20


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected loopback socket streams."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        a = await trio.open_tcp_stream("127.0.0.1", port)
        b = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    return a, b


@asynccontextmanager
async def relayed() -> AsyncIterator[
    tuple[trio.SocketStream, trio.SocketStream, list[RelayResult], trio.Nursery]
]:
    """client ⇄ relay ⇄ server over four loopback sockets; yields the outer ends."""
    client, relay_client = await tcp_pair()
    relay_server, server = await tcp_pair()
    results: list[RelayResult] = []

    async def run() -> None:
        results.append(await relay(relay_client, relay_server))
        await close_after(results[-1], relay_client, relay_server)

    streams = (client, relay_client, relay_server, server)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            yield client, server, results, nursery
    finally:
        for s in streams:
            await s.aclose()


def payload(seed: int, size: int) -> list[bytes]:
    rng = random.Random(seed)
    chunk = 256 * 1024
    return [rng.randbytes(min(chunk, size - i)) for i in range(0, size, chunk)]


async def send_and_close(stream: trio.SocketStream, chunks: list[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        await stream.send_all(chunk)
        digest.update(chunk)
    await stream.send_eof()
    return digest.hexdigest()


async def receive_all(stream: trio.SocketStream) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while data := await stream.receive_some(MB):
        digest.update(data)
        size += len(data)
    return size, digest.hexdigest()


async def test_tens_of_megabytes_each_way_arrive_intact_by_splice() -> None:
    size = 24 * MB
    up_chunks, down_chunks = payload(1, size), payload(2, size)
    sent: dict[str, object] = {}
    got: dict[str, object] = {}

    async def side(name: str, stream: trio.SocketStream, chunks: list[bytes]) -> None:
        async with trio.open_nursery() as n:
            n.start_soon(lambda: _store(sent, name, send_and_close(stream, chunks)))
            n.start_soon(lambda: _store(got, name, receive_all(stream)))

    async with relayed() as (client, server, results, _), trio.open_nursery() as n:
        n.start_soon(side, "client", client, up_chunks)
        n.start_soon(side, "server", server, down_chunks)
    assert got["server"] == (size, sent["client"])
    assert got["client"] == (size, sent["server"])
    [result] = results
    assert result.mode is Mode.SPLICE
    assert (result.upstream_bytes, result.downstream_bytes) == (size, size)
    assert result.splice_calls > 2  # many transfers, none through Python buffers
    assert result.failed is None


async def _store(into: dict[str, object], key: str, awaitable: object) -> None:
    into[key] = await awaitable  # type: ignore[misc]


async def test_client_half_close_keeps_the_response_flowing() -> None:
    async with relayed() as (client, server, results, _):
        await client.send_all(b"request")
        await client.send_eof()
        assert await receive_exactly(server, 7) == b"request"
        assert await server.receive_some(10) == b""  # the client's EOF arrived
        await server.send_all(b"response after the client's EOF")
        await server.send_eof()
        assert await receive_until_eof(client) == b"response after the client's EOF"
    assert results[0].failed is None


async def test_server_half_close_keeps_the_upload_flowing() -> None:
    async with relayed() as (client, server, results, _):
        await server.send_all(b"* OK banner")
        await server.send_eof()
        assert await receive_until_eof(client) == b"* OK banner"
        await client.send_all(b"still talking")
        await client.send_eof()
        assert await receive_until_eof(server) == b"still talking"
    assert results[0].failed is None


async def test_client_abort_ends_only_that_connection() -> None:
    async with (
        relayed() as (client_a, server_a, results_a, _),
        relayed() as (client_b, server_b, results_b, _),
    ):
        await client_a.send_all(b"x" * 100_000)
        await receive_exactly(server_a, 100_000)
        await reset(client_a)
        # The relay passes the abort on: the server sees a reset or EOF, not a hang.
        assert await receive_until_error(server_a) >= 0
        await client_b.send_all(b"other connection")
        assert await receive_exactly(server_b, 16) == b"other connection"
        await server_b.send_all(b"still fine")
        assert await receive_exactly(client_b, 10) == b"still fine"
        await client_b.send_eof()
        await server_b.send_eof()
    assert results_a[0].failed is Side.CLIENT
    assert results_b[0].failed is None


async def test_server_abort_mid_stream_is_blamed_on_the_server() -> None:
    async with relayed() as (client, server, results, _):
        await server.send_all(b"y" * 50_000)
        await receive_exactly(client, 50_000)
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.socket.close()
        assert await receive_until_error(client) >= 0
    assert results[0].failed is Side.SERVER


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk, f"eof after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def receive_until_error(stream: trio.abc.ReceiveStream) -> int:
    """Bytes read before EOF or a reset ended the stream."""
    total = 0
    try:
        while chunk := await stream.receive_some(65536):
            total += len(chunk)
    except trio.BrokenResourceError:
        pass
    return total


def _live(kind: type) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


async def test_an_idle_relayed_connection_holds_no_exception() -> None:
    # Waiting inside `except BlockingIOError:` keeps the exception and its
    # traceback alive for as long as a flow is idle: over 1 KiB a connection.
    before = _live(BlockingIOError)
    async with relayed() as (client, server, results, nursery):
        await client.send_all(b"hello")
        assert await server.receive_some(16) == b"hello"
        await server.send_all(b"*")
        assert await client.receive_some(16) == b"*"
        await trio.testing.wait_all_tasks_blocked()  # both flows parked on an empty source
        assert _live(BlockingIOError) == before
        nursery.cancel_scope.cancel()
    assert not results
