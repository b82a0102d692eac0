"""The copying relay over memory streams (the path TLS streams take) and the idle timer."""

from __future__ import annotations

import hashlib
import random
from functools import partial

import pytest
import trio
import trio.testing

from lb.l4.idle_timer import IdleTimer
from lb.l4.pump import Mode, RelayResult, Side, relay

MB = 1 << 20


def pairs() -> tuple[trio.StapledStream, ...]:  # type: ignore[type-arg]
    client, relay_client = trio.testing.memory_stream_pair()
    relay_server, server = trio.testing.memory_stream_pair()
    return client, relay_client, relay_server, server


async def pour(stream: trio.abc.HalfCloseableStream, seed: int, size: int) -> str:
    rng, digest = random.Random(seed), hashlib.sha256()
    for _ in range(size // (256 * 1024)):
        chunk = rng.randbytes(256 * 1024)
        digest.update(chunk)
        await stream.send_all(chunk)
    await stream.send_eof()
    return digest.hexdigest()


async def drink(stream: trio.abc.ReceiveStream) -> str:
    digest = hashlib.sha256()
    while data := await stream.receive_some(MB):
        digest.update(data)
    return digest.hexdigest()


async def test_megabytes_each_way_arrive_intact_by_copy() -> None:
    client, relay_client, relay_server, server = pairs()
    out: dict[str, str] = {}
    results: list[RelayResult] = []

    async def keep(key: str, fn: object, *args: object) -> None:
        out[key] = await fn(*args)  # type: ignore[operator]

    async def run_relay() -> None:
        results.append(await relay(relay_client, relay_server))

    async with trio.open_nursery() as n:
        n.start_soon(run_relay)
        n.start_soon(keep, "up_sent", pour, client, 1, 8 * MB)
        n.start_soon(keep, "down_sent", pour, server, 2, 8 * MB)
        n.start_soon(keep, "up_got", drink, server)
        n.start_soon(keep, "down_got", drink, client)
    assert out["up_got"] == out["up_sent"]
    assert out["down_got"] == out["down_sent"]
    [result] = results
    assert result == RelayResult(Mode.COPY, 8 * MB, 8 * MB, 0, None)


async def test_a_broken_server_end_is_blamed_on_the_server() -> None:
    client, relay_client, relay_server, server = pairs()
    await server.aclose()  # sending toward it now raises BrokenResourceError
    await client.send_all(b"hello")
    result = await relay(relay_client, relay_server)
    assert result.failed is Side.SERVER


@pytest.mark.parametrize("idle", [10.0, 64.0])
async def test_the_idle_timer_ends_a_silent_relay_after_idle_not_before(
    idle: float, autojump_clock: trio.testing.MockClock
) -> None:
    client, relay_client, relay_server, server = pairs()
    start = trio.current_time()
    with trio.CancelScope() as scope:
        timer = IdleTimer(scope, idle)
        async with trio.open_nursery() as n:
            n.start_soon(partial(relay, relay_client, relay_server, idle=timer))

            async def chatter() -> None:
                for _ in range(3):
                    await trio.sleep(idle / 2)
                    await client.send_all(b"ping")

            n.start_soon(chatter)
    assert scope.cancelled_caught
    last_activity = start + 3 * idle / 2
    assert last_activity + idle <= trio.current_time() <= last_activity + idle * (1 + 1 / 16)
    assert await server.receive_some(100) == b"ping" * 3


def test_a_non_positive_idle_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="idle timeout 0"):
        IdleTimer(trio.CancelScope(), 0)
