"""The L7 proxy over memory streams: routing, keep-alive, headers, streaming, timeouts."""

from __future__ import annotations

import h11
import pytest
import trio

from lb.l7.events import Termination
from lb.l7.headers import header_value
from lb.l7.upstream import UpstreamSettings
from probes.catalog import PROTOCOLS
from tests.integration.test_l7_rig import ServerSide, make_rig


@pytest.mark.parametrize(
    ("path", "pool"),
    [
        ("/owa/", "owa"),
        ("/ECP/default.aspx", "owa"),
        ("/ews/Exchange.asmx", "ews"),
        ("/mapi/emsmdb/?MailboxId=x", "mapi"),
        ("/Microsoft-Server-ActiveSync?Cmd=Sync", "eas"),
        ("/autodiscover/autodiscover.json?@evil/mapi/", "autodiscover"),
        ("/OAB/guid/oab.xml", "oab"),
    ],
)
async def test_each_vdir_lands_in_its_pool(path: str, pool: str) -> None:
    async with make_rig() as rig, rig.client() as client:
        head, body = await client.request("GET", path)
        assert head.status_code == 200
        assert body.decode().endswith(path)
    assert [r.pool for r in rig.events.requests] == [pool]
    assert rig.events.requests[0].path == path.split("?")[0]


async def test_unrouted_path_is_404_and_the_connection_goes_on() -> None:
    async with make_rig() as rig, rig.client() as client:
        head, body = await client.request("GET", "/nothing/here")
        assert head.status_code == 404
        assert b"/nothing/here" in body
        head, _ = await client.request("GET", "/owa/")
        assert head.status_code == 200
    assert [r.termination for r in rig.events.requests] == [Termination.NO_ROUTE,
                                                            Termination.COMPLETE]


async def test_one_upstream_connection_serves_all_requests_of_a_client_connection() -> None:
    async with make_rig() as rig:
        async with rig.client() as client:
            servers = {
                header_value((await client.request("GET", f"/owa/{i}"))[0].headers, b"x-feserver")
                for i in range(5)
            }
            assert len(servers) == 1  # every answer from the same X-FEServer
        async with rig.client() as other:
            await other.request("GET", "/owa/")
    assert len(rig.farm.connections) == 2  # one per client connection, not per request


async def test_a_client_moving_between_pools_gets_one_upstream_per_pool() -> None:
    async with make_rig() as rig, rig.client() as client:
        for path in ("/owa/", "/EWS/Exchange.asmx", "/owa/x", "/EWS/y", "/owa/z"):
            assert (await client.request("GET", path))[0].status_code == 200
        owa, ews = rig.pools["owa"], rig.pools["ews"]
        assert sum(m.active for m in owa.members) == 1
        assert sum(m.active for m in ews.members) == 1
    assert len(rig.farm.connections) == 2


async def test_upstream_connections_are_never_shared_between_clients() -> None:
    async with (
        make_rig(servers=("cas1",)) as rig,
        rig.client("127.0.0.2") as a,
        rig.client("127.0.0.3") as b,
    ):
        for _ in range(3):
            await a.request("GET", "/owa/")
            await b.request("GET", "/owa/")
        assert rig.member("owa", "cas1").active == 2
    assert rig.farm.connections == ["cas1", "cas1"]


async def test_forwarded_headers_reach_the_server_and_hop_by_hop_do_not() -> None:
    async with make_rig() as rig, rig.client("127.0.0.7") as client:
        await client.request(
            "GET",
            "/owa/",
            headers=[
                ("connection", "keep-alive, x-private"),
                ("x-private", "1"),
                ("keep-alive", "timeout=3"),
                ("x-forwarded-for", "10.1.2.3"),
                ("upgrade", "h2c"),
                ("cookie", "a=b"),
            ],
        )
    [(_, seen)] = rig.farm.requests
    names = [n for n, _ in seen.headers]
    for hop in (b"connection", b"x-private", b"keep-alive", b"upgrade"):
        assert hop not in names
    # 127.0.0.7 is no trusted proxy: the chain it claims is replaced, not extended
    assert header_value(seen.headers, b"x-forwarded-for") == b"127.0.0.7"
    assert header_value(seen.headers, b"x-forwarded-proto") == b"http"
    assert header_value(seen.headers, b"x-forwarded-host") == b"mail.contoso.test"
    assert header_value(seen.headers, b"cookie") == b"a=b"


async def test_non_standard_methods_and_bodies_pass_through() -> None:
    async def echo(side: ServerSide, request: h11.Request) -> None:
        size = await side.read_body()
        await side.respond(200, request.method + b" " + str(size).encode())

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: echo for s in ("cas1", "cas2", "cas3")}
        head, body = await client.request("PROPFIND", "/owa/x", body=b"z" * 70_000)
        assert (head.status_code, body) == (200, b"PROPFIND 70000")
        head, body = await client.request("POST", "/owa/y", body=b"abc")
        assert body == b"POST 3"
    assert rig.events.requests[0].bytes_in == 70_000


async def test_mapi_pending_chunks_arrive_one_by_one(autojump_clock: trio.abc.Clock) -> None:
    sent: list[tuple[float, bytes]] = []

    async def notification_wait(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
        for chunk in (b"PENDING\r\n", b"PENDING\r\n", b"PENDING\r\n", b"DONE\r\n"):
            await trio.sleep(30)  # X-PendingPeriod
            sent.append((trio.current_time(), chunk))
            await side.send(h11.Data(data=chunk))
        await side.send(h11.EndOfMessage())

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: notification_wait for s in ("cas1", "cas2", "cas3")}
        start = trio.current_time()
        await client.send(
            h11.Request(
                method="POST",
                target="/mapi/emsmdb/?MailboxId=x",
                headers=[
                    ("host", "h"),
                    ("x-requesttype", "NotificationWait"),
                    ("content-length", "2"),
                ],
            ),
            h11.Data(data=b"{}"),
            h11.EndOfMessage(),
        )
        head = await client.next_event()
        assert isinstance(head, h11.Response)
        received: list[tuple[float, bytes]] = []
        while not isinstance(event := await client.next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            received.append((trio.current_time() - start, bytes(event.data)))
    # Each chunk reaches the client at the virtual instant the server sent it.
    assert received == [(t - start, c) for t, c in sent]
    assert [t for t, _ in received] == [30, 60, 90, 120]


async def test_rpc_in_and_out_channels_stream_without_waiting(
    autojump_clock: trio.abc.Clock,
) -> None:
    """RPC_IN_DATA never gets a response; RPC_OUT_DATA trickles a 1 GB body."""
    in_received = 0
    gigabyte = 1 << 30

    async def rpc(side: ServerSide, request: h11.Request) -> None:
        nonlocal in_received
        if request.method == b"RPC_IN_DATA":
            while True:  # consume forever, never answer
                event = await side.next_event()
                assert isinstance(event, h11.Data)
                in_received += len(event.data)
        await side.read_body()
        await side.send(h11.Response(status_code=200, headers=[("content-length", str(gigabyte))]))
        for _ in range(200):
            await trio.sleep(60)  # an RTS keep-alive PDU every minute, for hours
            await side.send(h11.Data(data=b"p" * 1024))

    async with make_rig() as rig, rig.client() as in_ch, rig.client() as out_ch:
        rig.farm.handlers = {s: rpc for s in ("cas1", "cas2", "cas3")}
        target = "/rpc/rpcproxy.dll?mbx@contoso.test:6001"
        hdrs = [("host", "h"), ("content-length", str(gigabyte))]
        await in_ch.send(h11.Request(method="RPC_IN_DATA", target=target, headers=hdrs))
        await out_ch.send(
            h11.Request(
                method="RPC_OUT_DATA",
                target=target,
                headers=[("host", "h"), ("content-length", "76")],
            ),
            h11.Data(data=b"r" * 76),
            h11.EndOfMessage(),
        )
        head = await out_ch.next_event()
        assert isinstance(head, h11.Response) and head.status_code == 200
        out_bytes = 0
        chunk = b"q" * 65536
        for _ in range(50):  # 3.2 MB in, spread over 50 minutes of virtual time
            await in_ch.send(h11.Data(data=chunk))
            await trio.sleep(60)
            event = await out_ch.next_event()
            assert isinstance(event, h11.Data)
            out_bytes += len(event.data)
        await trio.testing.wait_all_tasks_blocked()
        assert in_received == 50 * 65536
        assert out_bytes >= 49 * 1024
    # No response timeout fired on either channel in 50 minutes.
    assert all(r.termination is not Termination.UPSTREAM_TIMEOUT for r in rig.events.requests)


async def test_short_request_without_answer_gets_504_at_the_response_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def hang(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await trio.sleep_forever()

    upstream = UpstreamSettings(connect_timeout=2, response_timeout=7)
    async with make_rig(upstream=upstream) as rig, rig.client() as client:
        rig.farm.handlers = {s: hang for s in ("cas1", "cas2", "cas3")}
        start = trio.current_time()
        head, body = await client.request("POST", "/Autodiscover/Autodiscover.xml", body=b"<x/>")
        assert head.status_code == 504
        assert trio.current_time() - start == 7
        assert b"'autodiscover'" in body
        assert await client.closed()
    [record] = rig.events.requests
    assert record.termination is Termination.UPSTREAM_TIMEOUT
    assert record.status == 504
    assert ("autodiscover", record.server, False, "upstream_timeout") in rig.reports


async def test_long_lived_request_gets_no_response_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def ping(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await trio.sleep(20 * 60)  # EAS heartbeat: 20 minutes without a byte
        await side.respond(200, b"ping ok")

    upstream = UpstreamSettings(connect_timeout=2, response_timeout=7)
    async with make_rig(upstream=upstream) as rig, rig.client() as client:
        rig.farm.handlers = {s: ping for s in ("cas1", "cas2", "cas3")}
        head, body = await client.request(
            "POST", "/Microsoft-Server-ActiveSync?Cmd=Ping", body=b"\x03\x01"
        )
        assert (head.status_code, body) == (200, b"ping ok")


async def test_keep_alive_idle_timeout_follows_the_protocol(autojump_clock: trio.abc.Clock) -> None:
    async with make_rig() as rig, rig.client() as client:
        await client.request("GET", "/Autodiscover/autodiscover.json")
        start = trio.current_time()
        assert await client.closed()
        assert trio.current_time() - start == PROTOCOLS["autodiscover"].idle_timeout
    assert sum(m.active for m in rig.pools["autodiscover"].members) == 0  # lease released


async def test_head_and_expect_continue_pass_through() -> None:
    async def answer(side: ServerSide, request: h11.Request) -> None:
        if request.method == b"HEAD":
            await side.send(
                h11.Response(status_code=200, headers=[("content-length", "1234")]),
                h11.EndOfMessage(),
            )
            return
        await side.send(h11.InformationalResponse(status_code=100, headers=[]))
        size = await side.read_body()
        await side.respond(200, str(size).encode())

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: answer for s in ("cas1", "cas2", "cas3")}
        head, body = await client.request("HEAD", "/OAB/x/oab.xml")
        assert (head.status_code, body) == (200, b"")
        assert header_value(head.headers, b"content-length") == b"1234"
        head, body = await client.request(
            "POST", "/owa/upload", body=b"x" * 10, headers=[("expect", "100-continue")]
        )
        assert (head.status_code, body) == (200, b"10")


async def test_upstream_hop_by_hop_headers_stay_off_the_client_connection() -> None:
    async def closing(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.respond(
            200,
            b"bye",
            [("connection", "close, x-internal"), ("x-internal", "1"), ("keep-alive", "timeout=5")],
        )

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: closing for s in ("cas1", "cas2", "cas3")}
        for _ in range(2):
            head, body = await client.request("GET", "/owa/")
            names = [n for n, _ in head.headers]
            assert (head.status_code, body) == (200, b"bye")
            assert b"x-internal" not in names and b"keep-alive" not in names
            assert header_value(head.headers, b"connection") is None
    # The server closed each upstream connection; the client kept its own.
    assert len(rig.farm.connections) == 2


async def test_a_trusted_proxy_s_forwarded_for_chain_is_kept_and_extended() -> None:
    import ipaddress

    trusted = {"trusted_proxies": (ipaddress.ip_network("127.0.0.0/29"),)}
    async with make_rig(settings=trusted) as rig:
        for client_ip in ("127.0.0.7", "127.0.0.9"):
            async with rig.client(client_ip) as client:
                await client.request("GET", "/owa/", headers=[("x-forwarded-for", "192.0.2.1")])
    chains = [header_value(seen.headers, b"x-forwarded-for") for _, seen in rig.farm.requests]
    assert chains == [b"192.0.2.1, 127.0.0.7", b"127.0.0.9"]
