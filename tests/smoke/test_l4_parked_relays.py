"""Parked L4 relays over real loopback sockets: counts and the connection limit, many at
once, a bug in one, shutdown."""

from __future__ import annotations

from unittest import mock

import pytest
import trio
import trio.testing

from lb.l4 import events as connlog
from tests.smoke.l4_parking_rig import parked_connection, reset_now, until_parked

pytestmark = pytest.mark.smoke


async def test_counts_stay_true_across_park_and_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(max_connections=10) as p:
        limiter, member = p.frontend._limiter, p.pool.member("cas1")
        for _ in range(3):
            # Parked: no task holds the connection's slot, the relay keeps one instead
            # (the one token borrowed is the accept loop's, waiting for the next client).
            assert (limiter.borrowed_tokens, limiter.total_tokens) == (1, 9)
            assert (p.frontend.active, member.active) == (1, 1)
            assert p.events.counts["opened", "fe"] == 1 and p.events.counts["closed", "fe"] == 0
            await p.client.send_all(b"ping")
            with trio.fail_after(5):
                assert await p.client.receive_some(100) == b"echo:ping"
            assert (p.frontend.active, member.active) == (1, 1)  # resumed
            await until_parked(p.frontend, 1)
        await p.server[0].send_eof()  # both ends half-close: the relay ends cleanly
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b""
        await p.client.send_eof()
        with trio.fail_after(5):
            while p.frontend.active:
                await trio.sleep(0.1)
        assert (limiter.borrowed_tokens, limiter.total_tokens) == (1, 10)
        assert member.active == 0 and p.events.counts["closed", "fe"] == 1
        assert [r.termination for r in p.logged] == [connlog.NORMAL]
        assert p.events.bytes == [("fe", "p", "cas1", 12, 1 + 3 * 9)]


async def test_parked_connections_count_against_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(clients=2, max_connections=2) as p:
        port = p.clients[0].socket.getpeername()[1]
        third = await trio.open_tcp_stream("127.0.0.1", port)  # the kernel's backlog takes it
        with trio.move_on_after(5):
            await third.receive_some(10)
            raise AssertionError("a third connection was served over max_connections")
        reset_now(p.clients[0])  # a parked one ends: its slot goes to the third
        with trio.fail_after(5):
            assert await third.receive_some(10) == b"*"
        assert p.frontend.active == 2
        await third.aclose()


async def test_many_parked_connections_all_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(clients=500, max_connections=1000) as p:
        assert p.frontend.active == 500
        for i, client in enumerate(p.clients):
            await client.send_all(b"%d" % i)
        for i, client in enumerate(p.clients):
            with trio.fail_after(10):
                assert await client.receive_some(100) == b"echo:%d" % i
        for server in p.server:
            await server.send_all(b"down")
        for client in p.clients:
            with trio.fail_after(10):
                assert await client.receive_some(100) == b"down"
        await until_parked(p.frontend, 500)
        assert p.frontend.active == 500
        assert p.events.counts["internal_error", "l4"] == 0


async def test_a_bug_in_a_resumed_connection_ends_only_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(clients=2) as p:
        with mock.patch("lb.l4.parked.run_again", side_effect=RuntimeError("bug")):
            await p.clients[0].send_all(b"boom")
            with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
                await p.clients[0].receive_some(100)  # closed with "boom" unread: an RST
        assert p.events.counts["internal_error", "l4"] == 1
        assert [r.termination for r in p.logged] == [connlog.INTERNAL_ERROR]
        assert p.frontend.active == 1 and p.pool.member("cas1").active == 1
        await p.clients[1].send_all(b"fine")
        with trio.fail_after(5):
            assert await p.clients[1].receive_some(100) == b"echo:fine"


async def test_stopping_the_frontend_closes_its_parked_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(clients=3) as p:
        p.stop.cancel()
        for client in p.clients:
            with trio.fail_after(5):
                assert await client.receive_some(100) == b""
        assert p.frontend.active == 0 and not p.frontend.parker.running
        assert p.pool.member("cas1").active == 0
        assert p.events.counts["closed", "fe"] == 3 and len(p.logged) == 3
