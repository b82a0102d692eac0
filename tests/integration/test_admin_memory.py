"""The admin API over in-memory listeners, with a virtual clock for its read timeout."""

from __future__ import annotations

import logging
import re
from typing import Any

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
            [listener], pools={}, metrics=Metrics(CollectorRegistry()), hosts=["a"],
            task_status=task_status,
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


class ExplodingPools(dict[str, object]):
    """A pools mapping with a bug: reading it raises."""

    def values(self) -> Any:
        raise RuntimeError("bug in a route")

    def items(self) -> Any:
        raise RuntimeError("bug in a route")


class BrokenStream(trio.abc.Stream):
    """A stream that fails the way no peer can: an unexpected error on read."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise ValueError("a bug below the admin server")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def start_counting(nursery: trio.Nursery, pools: Any) -> tuple[MemoryListener, list[str]]:
    listener, errors = MemoryListener(), []
    await nursery.start(
        lambda task_status: serve_admin(
            [listener], pools=pools, metrics=Metrics(CollectorRegistry()), hosts=["a"],
            on_internal_error=errors.append, task_status=task_status,
        )
    )
    return listener, errors


async def status_code(listener: MemoryListener, target: str = "/status") -> bytes:
    client = await listener.connect()
    async with client:
        await client.send_all(
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answer = await read_all(client)
    return answer[9:12]


@pytest.mark.parametrize("sent", [b"", b"GET /status HTTP/1.1\r\nHo"])
async def test_idle_and_half_sent_peers_are_closed_while_others_are_served(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, sent: bytes
) -> None:
    listener, errors = await start_counting(nursery, {})
    stalled = [await listener.connect() for _ in range(3)]
    for client in stalled:
        await client.send_all(sent)
    start = trio.current_time()
    assert await status_code(listener) == b"200"  # served while the others stall
    for client in stalled:
        assert await read_all(client) == b""  # closed, without an answer
        await client.aclose()
    assert trio.current_time() - start == pytest.approx(READ_TIMEOUT)
    await trio.sleep(READ_TIMEOUT * 3)  # past the timeout: nothing left to propagate
    assert await status_code(listener) == b"200"
    assert errors == []


async def test_a_route_that_raises_answers_500_and_only_that_request_fails(
    nursery: trio.Nursery,
) -> None:
    listener, errors = await start_counting(nursery, ExplodingPools())
    client = await listener.connect()
    async with client:
        await client.send_all(
            b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answer = await read_all(client)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"500", b"200"]
    assert b"bug in a route" not in answer  # the detail is for the log, not the peer
    assert errors == ["admin"]
    assert await status_code(listener, "/metrics") == b"200"


async def test_an_unexpected_error_ends_only_its_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    listener, errors = await start_counting(nursery, {})
    with caplog.at_level(logging.INFO, "caslb.admin"):
        await listener._send.send(BrokenStream())
        await trio.testing.wait_all_tasks_blocked()
    assert errors == ["admin"]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "ValueError: a bug below the admin server" in record.getMessage()
    assert record.exc_info is None  # one line: the traceback is for DEBUG
    assert await status_code(listener) == b"200"


async def test_a_peer_that_never_reads_its_answer_is_closed_after_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener, errors = await start_counting(nursery, {})
    # A lockstep pair has no buffer: the server's send waits for the peer to read.
    client, server = trio.testing.lockstep_stream_pair()
    await listener._send.send(server)
    await client.send_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    start = trio.current_time()
    await trio.sleep(READ_TIMEOUT * 2)
    assert await status_code(listener) == b"200"  # others are served meanwhile
    # The server gave up on the send and closed: what it had handed over, then EOF,
    # at once (a server still sending would finish, then wait for the next request).
    answer = await read_all(client)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert trio.current_time() - start == pytest.approx(READ_TIMEOUT * 2)
    assert errors == []
