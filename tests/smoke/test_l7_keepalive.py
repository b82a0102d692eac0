"""Upstream keep-alive on real sockets: a connection the server closed while idle is not reused."""

from __future__ import annotations

import functools

import trio

from lb.l7.events import RecordingEvents, Report
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from tests.farmclient import HttpClient
from tests.integration.test_l7_rig import FakeMember, FakePool

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def _owa_frontend(port: int, events: RecordingEvents, report: Report | None = None) -> HttpFrontend:
    """caslb's L7 frontend routing /owa to one server, cas1 on 127.0.0.1:`port`."""
    pool = FakePool("owa", [FakeMember("cas1", "127.0.0.1", port)])
    return HttpFrontend(
        HttpFrontendSettings(routes=RouteTable(vdirs={"/owa": "owa"})),
        {"owa": pool},  # type: ignore[dict-item]
        upstream=UpstreamSettings(connect_timeout=2),
        events=events,
        report=report,
    )


async def test_post_after_the_server_closed_an_idle_upstream_goes_on_a_new_connection() -> None:
    closed = trio.Event()
    connections = 0

    async def idle_closing_server(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        buffer = b""
        async with stream:
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            if buffer.startswith(b"POST"):
                while not buffer.endswith(b"body"):
                    buffer += await stream.receive_some(65536)
            await stream.send_all(ANSWER)
        closed.set()  # like IIS after its idle timeout: FIN, no Connection: close

    async with trio.open_nursery() as nursery:
        backend = await nursery.start(
            functools.partial(trio.serve_tcp, idle_closing_server, 0, host="127.0.0.1")
        )
        port = backend[0].socket.getsockname()[1]
        events = RecordingEvents()
        frontend = _owa_frontend(port, events)
        front = await trio.open_tcp_listeners(0, host="127.0.0.1")
        front_port = front[0].socket.getsockname()[1]
        await nursery.start(frontend.serve, front)
        client = HttpClient(await trio.open_tcp_stream("127.0.0.1", front_port), "mail.test")
        try:
            assert (await client.request("GET", "/owa/")).status == 200
            await closed.wait()
            await trio.testing.wait_all_tasks_blocked()
            response = await client.request("POST", "/owa/service.svc", body=b"body")
            assert response.status == 200  # not a 502: the dead connection was not reused
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert connections == 2
    assert [r.status for r in events.requests] == [200, 200]


async def _close_crossing_the_second_request(stream: trio.SocketStream, seen: list[int]) -> None:
    # Answers one request, then closes as the next one arrives: IIS's idle close
    # crossing a request that caslb sent over the kept connection.
    seen.append(len(seen))
    buffer = b""
    async with stream:
        while b"\r\n\r\n" not in buffer:
            buffer += await stream.receive_some(65536)
        if len(seen) == 1:
            await stream.send_all(ANSWER)
            while buffer.count(b"\r\n\r\n") < 2:
                buffer += await stream.receive_some(65536)
            return
        await stream.send_all(ANSWER)


async def test_a_get_crossing_the_servers_idle_close_is_replayed_on_a_fresh_connection() -> None:
    seen: list[int] = []
    reports: list[tuple[str, bool]] = []
    async with trio.open_nursery() as nursery:
        backend = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(_close_crossing_the_second_request, seen=seen),
            0, host="127.0.0.1"))
        port = backend[0].socket.getsockname()[1]
        events = RecordingEvents()
        frontend = _owa_frontend(
            port, events, lambda pool, server, ok, _: reports.append((server, ok))
        )
        front = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(frontend.serve, front)
        client = HttpClient(
            await trio.open_tcp_stream("127.0.0.1", front[0].socket.getsockname()[1]), "mail.test"
        )
        try:
            assert (await client.request("GET", "/owa/")).status == 200
            assert (await client.request("GET", "/owa/?second")).status == 200  # not a 502
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert seen == [0, 1]  # the replay went to the same server, on a new connection
    assert events.retries == [("owa", "cas1", "upstream_error")]
    assert reports == [("cas1", True), ("cas1", True)]  # the close blamed nobody
