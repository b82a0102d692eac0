"""Parked L4 relays (lb/l4/parking.py) over real loopback sockets: resume, timeouts, drain."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from lb.config.model import PoolConfig, ServerConfig
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.pool import Pool
from probes.state import AdminState, CheckState
from tests.integration.l4_rig import RecordingEvents

pytestmark = pytest.mark.smoke


@dataclass
class Parked:
    frontend: TcpFrontend
    pool: Pool
    events: RecordingEvents
    client: trio.SocketStream
    server: list[trio.SocketStream]  # the backend's end, once accepted
    eofs: list[trio.SocketStream]  # the backend's ends that saw EOF
    resets: list[trio.SocketStream]  # the backend's ends that were reset
    tasks_relaying: int  # trio tasks in the process while the connection relayed


def tasks() -> int:
    """Every trio task now running in this run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, todo = 0, [root]
    while todo:
        task = todo.pop()
        count += 1
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return count


@asynccontextmanager
async def parked_connection(**pool_config: object) -> AsyncIterator[Parked]:
    """One client through a frontend to a backend that greets, then idle until parked."""
    accepted: list[trio.SocketStream] = []
    eofs: list[trio.SocketStream] = []
    resets: list[trio.SocketStream] = []

    async def backend(stream: trio.SocketStream) -> None:
        async with stream:
            accepted.append(stream)
            await stream.send_all(b"*")
            try:
                while data := await stream.receive_some(4096):
                    await stream.send_all(b"echo:" + data)
            except trio.BrokenResourceError:
                resets.append(stream)
                return
            eofs.append(stream)
            await trio.sleep_forever()

    backend_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    front_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = backend_listeners[0].socket.getsockname()[1]
    pool = Pool(PoolConfig("p", (ServerConfig("cas1", "127.0.0.1", port, "cas1"),),
                           **pool_config))  # type: ignore[arg-type]
    events = RecordingEvents()
    frontend = TcpFrontend(
        TcpFrontendSettings("fe", idle_timeout=60, park_sweep=0.5),
        default=Route(pool, UpstreamPolicy(first_response_timeout=5, server_speaks_first=True)),
        events=events, report=lambda *r: None,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, backend, backend_listeners)
        await nursery.start(frontend.serve, front_listeners)
        client = await trio.open_tcp_stream(
            "127.0.0.1", front_listeners[0].socket.getsockname()[1])
        assert await client.receive_some(10) == b"*"
        relaying = tasks()
        await until_parked(frontend, 1)
        try:
            yield Parked(frontend, pool, events, client, accepted, eofs, resets, relaying)
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
    for listener in (*backend_listeners, *front_listeners):
        await listener.aclose()


async def until_parked(frontend: TcpFrontend, count: int) -> None:
    with trio.fail_after(10):
        while frontend.parker.parked != count:
            await trio.sleep(0.1)


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


async def test_a_server_marked_down_resets_its_parked_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection(reset_on_down=True) as p:
        p.pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError):
            await p.client.receive_some(100)
        assert p.frontend.parker.parked == 0
        assert p.pool.member("cas1").active == 0


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


async def test_a_client_reset_ends_only_its_parked_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with parked_connection() as p:
        p.client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        p.client.socket.close()  # an RST
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
