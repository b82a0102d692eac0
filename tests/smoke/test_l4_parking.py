"""Parked L4 relays (lb/l4/parking.py) over real loopback sockets: resume, timeouts, drain."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from unittest import mock

import pytest
import trio
import trio.testing

from lb.config.model import PoolConfig, ServerConfig
from lb.l4 import events as connlog
from lb.l4.events import ConnectionRecord
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
    clients: list[trio.SocketStream] = field(default_factory=list)  # all of them
    logged: list[ConnectionRecord] = field(default_factory=list)  # tcplog records, in order
    stop: trio.CancelScope = field(default_factory=trio.CancelScope)  # the frontend's


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
async def parked_connection(clients: int = 1, max_connections: int = 100,
                            **pool_config: object) -> AsyncIterator[Parked]:
    """Clients through a frontend to a backend that greets, then idle until parked.

    Parked, a connection holds no trio task: neither its own nor a flow's.
    """
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
    logged: list[ConnectionRecord] = []
    frontend = TcpFrontend(
        TcpFrontendSettings("fe", idle_timeout=60, park_sweep=0.5,
                            max_connections=max_connections),
        default=Route(pool, UpstreamPolicy(first_response_timeout=5, server_speaks_first=True)),
        events=events, report=lambda *r: None,
    )
    with mock.patch.object(connlog, "log_connection", logged.append):
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, backend, backend_listeners)
            stop = trio.CancelScope()
            await nursery.start(_serve, stop, frontend, front_listeners)
            opened = [await trio.open_tcp_stream(
                "127.0.0.1", front_listeners[0].socket.getsockname()[1])
                for _ in range(clients)]
            for client in opened:
                with trio.fail_after(10):
                    assert await client.receive_some(10) == b"*"
            relaying = tasks()
            await until_parked(frontend, clients)
            assert tasks() == relaying - 2 * clients
            try:
                yield Parked(frontend, pool, events, opened[0], accepted, eofs, resets,
                             relaying, opened, logged, stop)
            finally:
                for client in opened:
                    await client.aclose()
                nursery.cancel_scope.cancel()
    for listener in (*backend_listeners, *front_listeners):
        await listener.aclose()


async def _serve(stop: trio.CancelScope, frontend: TcpFrontend,
                 listeners: list[trio.SocketListener],
                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with stop:
        await frontend.serve(listeners, task_status=task_status)


def reset_now(client: trio.SocketStream) -> None:
    """Close `client` with an RST."""
    client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.socket.close()


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
