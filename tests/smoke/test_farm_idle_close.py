"""IIS's idle close (connectionTimeout): casfarm closes idle keep-alive connections, and
caslb's L7 upstream reuse survives it."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable

import casfarm
import pytest
import trio
import trio.testing
from casfarm.http import HttpExchange, serve_http

from lb.l7.events import RecordingEvents
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from tests.farmclient import HttpClient, client_context, https_client
from tests.integration.test_l7_rig import FakeMember, FakePool

IDLE = 120.0


async def _answer_after(ex: HttpExchange) -> None:
    # "/held/N" holds its answer N seconds, as a long-poll does.
    if ex.target.startswith("/held/"):
        await trio.sleep(float(ex.target.rsplit("/", 1)[1]))
    await ex.read_body(0)
    await ex.respond(200, b"ok")


async def _serve(stream: trio.abc.Stream, on_idle_close: Callable[[], None]) -> None:
    # As casfarm's server does: the connection is closed once serve_http returns.
    async with stream:
        await serve_http(stream, _answer_after, list, IDLE, on_idle_close=on_idle_close)


async def _closed_at(client: HttpClient) -> float:
    assert await client.stream.receive_some(10) == b""
    return trio.current_time()


async def test_idle_connection_is_closed_at_the_timeout_and_a_held_request_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    closes: list[str] = []
    async with trio.open_nursery() as nursery:
        idle_end, idle_server = trio.testing.memory_stream_pair()
        held_end, held_server = trio.testing.memory_stream_pair()
        for name, stream in (("idle", idle_server), ("held", held_server)):
            nursery.start_soon(_serve, stream, functools.partial(closes.append, name))
        idle, held = HttpClient(idle_end, "cas1"), HttpClient(held_end, "cas1")
        start = trio.current_time()
        await held.send_request("GET", f"/held/{3 * IDLE}")  # held three timeouts long
        assert (await idle.request("GET", "/owa/")).status == 200
        await trio.sleep(IDLE - 1)
        assert (await idle.request("GET", "/owa/")).status == 200  # a request restarts the wait
        assert await _closed_at(idle) == start + 2 * IDLE - 1
        # The held request is answered in full, then its connection idles like any other.
        assert (await held.read_response()).status == 200
        assert trio.current_time() == start + 3 * IDLE
        assert await _closed_at(held) == start + 4 * IDLE
    assert closes == ["idle", "held"]


async def test_a_begun_request_head_is_not_idle(autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, _answer_after, list, IDLE)
        await client.send_all(b"GET /owa/ HTTP/1.1\r\nHost: cas1\r\n")
        await trio.sleep(3 * IDLE)
        await client.send_all(b"\r\n")
        assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 200 OK\r\n")
        nursery.cancel_scope.cancel()


@pytest.fixture
async def quick_farm() -> AsyncIterator[casfarm.Farm]:
    async with casfarm.running(servers=1, idle_close=0.3, heartbeat=1.0) as farm:
        yield farm


async def test_casfarm_closes_an_idle_https_connection_but_not_one_in_a_ping(
    quick_farm: casfarm.Farm,
) -> None:
    s = quick_farm.server("cas1")
    idle, busy = [
        await https_client(s.host, s.ports["https"], ca_path=quick_farm.ca_path,
                           server_hostname=s.fqdn)
        for _ in range(2)
    ]
    try:
        assert (await idle.request("GET", "/owa/")).status == 200
        await busy.send_request("POST", "/Microsoft-Server-ActiveSync?Cmd=Ping", body=b"x")
        with trio.fail_after(20):
            while (await idle.stream.receive_some(100)) != b"":
                pass
        # The Ping, held for a heartbeat over three times the idle timeout, is answered.
        with trio.fail_after(20):
            assert (await busy.read_response()).status == 200
        assert quick_farm.counts("cas1").idle_closed == 1
    finally:
        await idle.aclose()
        await busy.aclose()


async def test_l7_upstream_closed_by_the_idle_timeout_does_not_fail_the_next_request(
    quick_farm: casfarm.Farm,
) -> None:
    s = quick_farm.server("cas1")
    pool = FakePool("owa", [FakeMember("cas1", s.host, s.ports["https"], fqdn=s.fqdn)])
    events = RecordingEvents()
    frontend = HttpFrontend(
        HttpFrontendSettings(routes=RouteTable(vdirs={"/owa": "owa"})),
        {"owa": pool},  # type: ignore[dict-item]
        upstream=UpstreamSettings(connect_timeout=5, tls=client_context(quick_farm.ca_path)),
        events=events,
    )
    async with trio.open_nursery() as nursery:
        front = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(frontend.serve, front)
        port = front[0].socket.getsockname()[1]
        client = HttpClient(await trio.open_tcp_stream("127.0.0.1", port), "mail.lab.local")
        try:
            assert (await client.request("GET", "/owa/")).status == 200
            runtime = quick_farm.runtime("cas1")
            with trio.fail_after(20):  # closed by the farm, its FIN sent
                while quick_farm.counts("cas1").idle_closed == 0 or runtime.connection_count():
                    await trio.sleep(0.05)
            response = await client.request("POST", "/owa/service.svc", body=b"{}")
            assert response.status == 200  # not a 502 from the connection IIS closed
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()
    counts = quick_farm.counts("cas1")
    assert counts.connections["https"] == 2
    assert counts.requests["owa"] == 2
