"""Accept bursts: connections queued in the backlog are taken together, within the limits.

Asserted as counts of scheduler turns and of handlers started, never as times.
"""

from __future__ import annotations

import socket

import pytest
import trio

from lb.listeners import ACCEPT_BURST, accept_loop, accept_queued

pytestmark = pytest.mark.smoke

QUEUED = 40


def _queue_clients(port: int, count: int) -> list[socket.socket]:
    # the kernel completes these handshakes into the backlog before anyone accepts
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


async def test_queued_connections_are_accepted_without_a_turn_each() -> None:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    clients = _queue_clients(listener.socket.getsockname()[1], QUEUED)
    started: list[int] = []
    turns = 0
    all_in = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        async with stream:
            started.append(turns)
            if len(started) == QUEUED:
                all_in.set()
            await trio.sleep_forever()

    async def ticker() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        nursery.start_soon(lambda: accept_loop(listener, handler, nursery, name="t"))
        with trio.fail_after(10):
            await all_in.wait()
        nursery.cancel_scope.cancel()
    await listener.aclose()
    for c in clients:
        c.close()
    # one accept per scheduler turn would need a turn per connection
    assert QUEUED <= ACCEPT_BURST and max(started) - min(started) <= 2


async def test_a_burst_stops_at_the_connection_limit() -> None:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    clients = _queue_clients(listener.socket.getsockname()[1], 10)
    limiter = trio.CapacityLimiter(4)
    served: list[trio.abc.Stream] = []

    async def handler(stream: trio.abc.Stream) -> None:
        async with stream:
            served.append(stream)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: accept_loop(listener, handler, nursery, name="t", limiter=limiter)
        )
        with trio.fail_after(10):
            while len(served) < 4:
                await trio.sleep(0.01)
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        assert len(served) == 4 and limiter.borrowed_tokens == 4
        nursery.cancel_scope.cancel()
    await listener.aclose()
    for c in clients:
        c.close()


async def test_nothing_queued_is_none() -> None:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        assert accept_queued(listener) is None
