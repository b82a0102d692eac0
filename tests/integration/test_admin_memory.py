"""The admin API over in-memory listeners, with a virtual clock for its read timeout."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from lb.admin import MAX_REQUESTS_PER_CONNECTION, READ_TIMEOUT, serve_admin
from lb.metrics import Metrics


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands out the server ends of memory stream pairs made by `connect`."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self.closed = False

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self.closed = True
        await self._send.aclose()
        await self._receive.aclose()
        await trio.lowlevel.checkpoint()


async def read_all(stream: trio.abc.Stream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
async def listener(nursery: trio.Nursery) -> MemoryListener:
    listener = MemoryListener()
    started = await nursery.start(
        lambda task_status: serve_admin(
            [listener], pools={}, metrics=Metrics(CollectorRegistry()), task_status=task_status
        )
    )
    assert started == [listener]
    return listener


async def test_a_silent_peer_is_dropped_after_the_read_timeout(
    listener: MemoryListener, autojump_clock: trio.testing.MockClock
) -> None:
    client = await listener.connect()
    async with client:
        await client.send_all(b"GET /status HTTP/1.1\r\nHost: a\r\n")  # never finishes
        start = trio.current_time()
        assert await read_all(client) == b""
        assert trio.current_time() - start == pytest.approx(READ_TIMEOUT)


async def test_an_idle_keep_alive_connection_is_closed_after_the_read_timeout(
    listener: MemoryListener, autojump_clock: trio.testing.MockClock
) -> None:
    client = await listener.connect()
    async with client:
        await client.send_all(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
        start = trio.current_time()
        answer = await read_all(client)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert trio.current_time() - start == pytest.approx(READ_TIMEOUT)


async def test_keep_alive_is_bounded_in_requests(listener: MemoryListener) -> None:
    client = await listener.connect()
    async with client:
        request = b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"
        await client.send_all(request * (MAX_REQUESTS_PER_CONNECTION + 5))
        answer = await read_all(client)
        assert answer.count(b"HTTP/1.1 200 ") == MAX_REQUESTS_PER_CONNECTION


async def test_pipelined_requests_are_answered_in_order(listener: MemoryListener) -> None:
    client = await listener.connect()
    async with client:
        await client.send_all(
            b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answer = await read_all(client)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"405", b"404"]
