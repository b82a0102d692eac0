"""Parked L4 relays (lb/l4/parking.py) over real loopback sockets: resume, timeouts, drain."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lb.l4 import events as connlog
from probes.state import AdminState, CheckState
from tests.smoke.l4_parking_rig import parked_connection, reset_now, tasks, until_parked

pytestmark = pytest.mark.smoke


async def test_a_parked_connection_relays_both_ways_and_parks_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection() as p:
        # No task left: neither the upstream flow's nor the connection's own.
        assert tasks() == p.tasks_relaying - 2
        assert p.frontend.active == 1  # a parked connection is still an active one
        await p.client.send_all(b"ping")
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"echo:ping"
        await until_parked(p.frontend, 1)
        await p.server[0].send_all(b"pushed")  # the server speaks first this time
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"pushed"
        await until_parked(p.frontend, 1)
        assert tasks() == p.tasks_relaying - 2
        assert p.events.counts["closed", "fe"] == 0


async def test_a_parked_connection_passes_a_half_close_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection() as p:
        await p.client.send_eof()
        with trio.fail_after(5):
            while not p.eofs:
                await trio.sleep(0.1)
        await until_parked(p.frontend, 1)  # the downstream flow alone
        await p.server[0].send_all(b"late")
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"late"
        await p.server[0].aclose()
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b""
        with trio.fail_after(5):
            while p.frontend.active:
                await trio.sleep(0.1)
        assert p.frontend.parker.parked == 0


async def test_the_idle_timeout_closes_a_parked_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection() as p:
        opened = trio.current_time()
        with trio.fail_after(120):
            assert await p.client.receive_some(100) == b""
        assert 55 <= trio.current_time() - opened <= 65  # the 60 s idle timeout, not later
        with trio.fail_after(1):
            while p.frontend.active:
                await trio.sleep(0.1)
        assert p.frontend.parker.parked == 0
        assert p.events.counts["closed", "fe"] == 1
        assert [r.termination for r in p.logged] == [connlog.IDLE_TIMEOUT]
        with trio.fail_after(5):
            while not p.eofs:  # closed, not reset, on the server's side too
                await trio.sleep(0.1)
        assert p.pool.member("cas1").active == 0


async def test_a_server_marked_down_resets_its_parked_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(reset_on_down=True) as p:
        p.pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError):
            await p.client.receive_some(100)
        assert p.frontend.parker.parked == 0
        assert p.pool.member("cas1").active == 0
        assert p.frontend.active == 0
        assert [r.termination for r in p.logged] == [connlog.RESET_BY_POOL]
        with trio.fail_after(5):
            while not p.resets:  # the server's end is reset as well
                await trio.sleep(0.1)


async def test_a_server_marked_down_resets_a_resumed_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(reset_on_down=True) as p:
        await p.client.send_all(b"ping")  # resumed: its task runs in the scopes made anew
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"echo:ping"
        assert p.frontend.parker.parked == 0
        p.pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            await p.client.receive_some(100)
        assert p.pool.member("cas1").active == 0 and p.frontend.active == 0
        assert [r.termination for r in p.logged] == [connlog.RESET_BY_POOL]


async def test_a_drain_deadline_resets_a_parked_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(drain_grace=5.0) as p:
        start = trio.current_time()
        p.pool.set_admin("cas1", AdminState.DRAIN, start)
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError):
            await p.client.receive_some(100)
        assert 5 <= trio.current_time() - start < 6
        assert p.frontend.parker.parked == 0
        assert p.pool.member("cas1").active == 0
        assert [r.termination for r in p.logged] == [connlog.RESET_BY_POOL]


async def test_a_drain_lifted_in_time_leaves_a_parked_connection_be(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(drain_grace=5.0) as p:
        p.pool.set_admin("cas1", AdminState.DRAIN, trio.current_time())
        await trio.sleep(2)
        p.pool.set_admin("cas1", AdminState.READY, trio.current_time())
        await trio.sleep(10)  # past the grace that no longer applies
        assert p.frontend.parker.parked == 1
        await p.client.send_all(b"still")
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"echo:still"


async def test_a_drain_deadline_reaches_a_resumed_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(drain_grace=5.0) as p:
        start = trio.current_time()
        p.pool.set_admin("cas1", AdminState.DRAIN, start)  # parked: the parker keeps it
        await p.client.send_all(b"busy")  # now a task runs it, in fresh scopes
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"echo:busy"
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError):
            while True:  # kept busy: it never parks again before the deadline
                await p.client.send_all(b"x")
                await p.client.receive_some(100)
                await trio.sleep(0.2)
        assert 5 <= trio.current_time() - start < 6
        assert p.pool.member("cas1").active == 0


async def test_a_client_reset_ends_only_its_parked_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection() as p:
        reset_now(p.client)
        with trio.fail_after(5):
            while p.frontend.active:
                await trio.sleep(0.1)
        with trio.fail_after(5):
            while not p.resets:  # the reset is passed on to the server
                await trio.sleep(0.1)
        assert p.frontend.parker.parked == 0
        assert p.frontend.parker.running
        assert p.events.counts["internal_error", "l4"] == 0


async def test_the_sweep_sleeps_while_every_relay_is_parked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection() as p:
        parker = p.frontend.parker
        sweeps: list[float] = []
        sweep = parker._sweep

        def counted() -> None:
            sweeps.append(trio.current_time())
            sweep()

        parker._sweep = counted  # type: ignore[method-assign]
        await trio.sleep(30)  # an idle frontend: no relay to look at, no wake
        assert sweeps == []
        await p.client.send_all(b"ping")
        with trio.fail_after(5):
            assert await p.client.receive_some(100) == b"echo:ping"
        await until_parked(p.frontend, 1)  # the relay ran, the sweeps found it idle again
        assert len(sweeps) >= 2
