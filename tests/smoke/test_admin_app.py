"""Through the whole app on real loopback sockets: a stalled admin peer ends only itself.

A peer that connects to the admin port and stalls (a hung Prometheus scrape, a
TCP health check, half a request head) once took the whole balancer down. Here
it must be closed after the read timeout while the frontend goes on relaying
and the admin API goes on answering. The mock clock jumps the timeout.
"""

from __future__ import annotations

import tomllib

import pytest
import trio
import trio.testing

from lb.admin import READ_TIMEOUT, routes
from lb.app import Balancer, serve
from lb.config import parse


async def echo(stream: trio.abc.Stream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


def config_text(server_port: int, admin_extra: str = "") -> str:
    return f"""
[admin]
bind = "127.0.0.1:1"  # never bound: the test hands over its own sockets
{admin_extra}

[servers.echo]
address = "127.0.0.1:{server_port}"
fqdn = "echo.lab.example"

[frontends.tcp]
bind = "127.0.0.1:1"  # never bound: the test hands over its own sockets
mode = "tcp"
pool = "echo"

[pools.echo]
servers = ["echo"]
"""


async def round_trip(address: tuple[str, int], data: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(data)
        return bytes(await stream.receive_some(65536))


async def admin_status(address: tuple[str, int]) -> bytes:
    host, port = address
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(
            f"GET /status HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        return bytes(await stream.receive_some(65536))[:12]


async def start_balancer(nursery: trio.Nursery, admin_extra: str = "") -> Balancer:
    """An echo server, and the app in front of it with a TCP frontend and the admin API."""
    [server] = await nursery.start(
        lambda task_status: trio.serve_tcp(echo, 0, host="127.0.0.1", task_status=task_status)
    )
    config = parse(tomllib.loads(config_text(server.socket.getsockname()[1], admin_extra)))
    frontend = await trio.open_tcp_listeners(0, host="127.0.0.1")
    admin = await trio.open_tcp_listeners(0, host="127.0.0.1")
    app: Balancer = await nursery.start(lambda task_status: serve(
        config, listeners={"tcp": frontend}, admin_listeners=admin, task_status=task_status
    ))
    return app


async def test_stalled_admin_peers_end_alone_and_the_balancer_keeps_serving(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    app = await start_balancer(nursery)
    assert app.admin_address is not None
    idle = await trio.open_tcp_stream(*app.admin_address)
    half = await trio.open_tcp_stream(*app.admin_address)
    await half.send_all(b"GET /status HTTP/1.1\r\nHo")
    start = trio.current_time()
    for stalled in (idle, half):
        assert await stalled.receive_some(65536) == b""  # closed by the server
        await stalled.aclose()
    assert trio.current_time() - start >= READ_TIMEOUT
    await trio.sleep(READ_TIMEOUT)
    assert not app.stopped.is_set()
    assert await round_trip(app.addresses["tcp"], b"still here") == b"still here"
    assert await admin_status(app.admin_address) == b"HTTP/1.1 200"


async def admin_get(address: tuple[str, int], path: str) -> bytes:
    host, port = address
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
        return bytes(answer)


def internal_errors(metrics_page: bytes, where: str) -> float:
    line = f'caslb_internal_errors_total{{where="{where}"}} '.encode()
    [value] = [row[len(line):] for row in metrics_page.splitlines() if row.startswith(line)]
    return float(value)


async def test_an_admin_bug_is_counted_in_internal_errors_and_the_process_stays_up(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await start_balancer(nursery)
    assert app.admin_address is not None
    before = await admin_get(app.admin_address, "/metrics")
    assert internal_errors(before, "admin") == 0  # exported before the first error

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug in the status route")

    monkeypatch.setattr(routes, "status_document", broken)
    assert (await admin_get(app.admin_address, "/status")).startswith(b"HTTP/1.1 500")
    monkeypatch.undo()
    after = await admin_get(app.admin_address, "/metrics")
    assert internal_errors(after, "admin") == 1
    assert not app.stopped.is_set()
    assert await round_trip(app.addresses["tcp"], b"still here") == b"still here"


async def status_as(address: tuple[str, int], host: str) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(f"GET /status HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return bytes(await stream.receive_some(65536))[:12]


async def test_admin_names_from_the_config_are_served_and_other_names_misdirected(
    nursery: trio.Nursery,
) -> None:
    app = await start_balancer(nursery, 'names = ["LB1.lab.example"]')
    assert app.admin_address is not None
    port = app.admin_address[1]
    assert await status_as(app.admin_address, f"lb1.lab.example:{port}") == b"HTTP/1.1 200"
    assert await status_as(app.admin_address, f"lb2.lab.example:{port}") == b"HTTP/1.1 421"
