"""The rig of the parked-relay smoke tests: a frontend, a greeting echo backend, clients."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from unittest import mock

import trio

from lb.config.model import PoolConfig, ServerConfig
from lb.l4 import events as connlog
from lb.l4.events import ConnectionRecord
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.pool import Pool
from tests.integration.l4_rig import RecordingEvents


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
