"""What reaches a server is what was routed: normalised targets, refused forms, clean responses."""

from __future__ import annotations

import h11
import pytest
import trio

from lb.l7.events import Termination
from lb.l7.headers import header_value
from tests.integration.test_l7_rig import Client, ServerSide, make_rig

ALL = ("cas1", "cas2", "cas3")


async def _raw(client: Client, data: bytes) -> h11.Response:
    await client.stream.send_all(data)
    head, _ = await client.response()
    return head


@pytest.mark.parametrize(
    ("target", "pool", "forwarded"),
    [
        (b"/owa/../EWS/x", "ews", b"/EWS/x"),
        (b"/owa/%2e%2e/ecp/", "owa", b"/ecp/"),  # /ecp is routed to owa in the rig
        (b"/%65WS/Exchange.asmx", "ews", b"/eWS/Exchange.asmx"),
        (b"//mapi//emsmdb/?a=/../owa", "mapi", b"/mapi/emsmdb/?a=/../owa"),
        (b"/mapi;x/emsmdb", "mapi", b"/mapi;x/emsmdb"),
        (b"http://mail.lab.local/EWS/a?b", "ews", b"/EWS/a?b"),
    ],
)
async def test_the_server_gets_the_normalised_target_of_the_pool_it_was_routed_to(
    target: bytes, pool: str, forwarded: bytes
) -> None:
    async with make_rig() as rig, rig.client() as client:
        head = await _raw(client, b"GET " + target + b" HTTP/1.1\r\nhost: other.example\r\n\r\n")
        assert head.status_code == 200
    [(_, request)] = rig.farm.requests
    assert request.target == forwarded
    [record] = rig.events.requests
    assert record.pool == pool
    expected_host = b"mail.lab.local" if target.startswith(b"http:") else b"other.example"
    assert header_value(request.headers, b"host") == expected_host


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"CONNECT mail.lab.local:443 HTTP/1.1", 405),
        (b"GET mail.lab.local:443 HTTP/1.1", 405),
        (b"OPTIONS * HTTP/1.1", 400),
        (b"GET /owa/../../ecp HTTP/1.1", 400),
        (b"GET /EWS%2fExchange.asmx HTTP/1.1", 400),
        (b"GET /owa%5c..%5cecp HTTP/1.1", 400),
        (b"GET /owa/..;/ecp HTTP/1.1", 400),
        (b"GET /owa/ HTTP/1.2", 400),
        (b"GET /owa/ HTTP/9.9", 400),
    ],
)
async def test_unsafe_request_lines_are_refused_and_reach_no_server(
    line: bytes, status: int, autojump_clock: trio.abc.Clock
) -> None:
    async with make_rig() as rig, rig.client() as client:
        head = await _raw(client, line + b"\r\nhost: h\r\n\r\n")
        assert head.status_code == status
        assert await client.closed()
    assert rig.farm.requests == []
    assert rig.events.requests[0].termination is Termination.BAD_REQUEST


@pytest.mark.parametrize(
    "fields",
    [
        b"host:\r\n",
        b"host: h\r\nx-a: a\x01b\r\n",
        b"host: h\r\nx-a: a\x1bb\r\n",
        b"host: h\r\nx-a: a\x7fb\r\n",
        b"host: h\r\ntransfer-encoding: chunked\r\n",  # with HTTP/1.0 below
    ],
)
async def test_bad_header_values_get_400(fields: bytes, autojump_clock: trio.abc.Clock) -> None:
    version = b"1.0" if b"transfer-encoding" in fields else b"1.1"
    async with make_rig() as rig, rig.client() as client:
        head = await _raw(client, b"GET /owa/ HTTP/" + version + b"\r\n" + fields + b"\r\n")
        assert head.status_code == 400
    assert rig.farm.requests == []


async def test_bytes_after_a_response_are_never_read_as_the_next_one() -> None:
    async def injects(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"
            b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nINJECTED"
        )

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {"cas1": injects}
        _, first = await client.request("GET", "/owa/first")
        _, second = await client.request("GET", "/owa/next")
    assert first == b"real"
    assert b"INJECTED" not in second and second.startswith(b"cas2")
    assert len(rig.farm.connections) == 2  # the poisoned connection was not reused


async def test_a_response_head_over_the_field_limit_gets_502() -> None:
    async def huge(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        fields = b"".join(b"x-%d: v\r\n" % i for i in range(500))
        await side.stream.send_all(b"HTTP/1.1 200 OK\r\n" + fields + b"content-length: 0\r\n\r\n")

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {name: huge for name in ALL}
        head, _ = await client.request("POST", "/EWS/a", body=b"x")
        assert head.status_code == 502
    assert rig.events.requests[0].termination is Termination.UPSTREAM_ERROR


async def test_a_pipelining_flood_gets_its_share_and_no_more() -> None:
    flooders, depth, good_requests = 20, 50, 10
    pipelined = b"GET /owa/flood HTTP/1.1\r\nhost: h\r\n\r\n" * depth
    async with make_rig() as rig, trio.open_nursery() as nursery:
        for _ in range(flooders):  # each writes all its requests and never reads

            async def flood() -> None:
                async with rig.client() as client:
                    await client.stream.send_all(pipelined)
                    await trio.sleep_forever()

            nursery.start_soon(flood)
        async with rig.client() as good:
            for i in range(good_requests):
                head, _ = await good.request("GET", f"/owa/good{i}")
                assert head.status_code == 200
        nursery.cancel_scope.cancel()
    targets = [request.target for _, request in rig.farm.requests]
    last_good = targets.index(f"/owa/good{good_requests - 1}".encode())
    # Served round robin, each good request waits for about one request per flooder;
    # served flood-first, the last good request would come after all 1,000.
    assert last_good < good_requests * (flooders + 1) * 2
    assert targets.count(b"/owa/flood") < flooders * depth


async def test_a_client_gone_after_pipelining_gets_nothing_more_forwarded() -> None:
    depth = 50
    pipelined = b"GET /owa/left HTTP/1.1\r\nhost: h\r\n\r\n" * depth
    async with make_rig() as rig:
        async with rig.client() as client:
            await client.stream.send_all(pipelined)
        # the client is gone before reading anything: answering the first request
        # fails, and nothing of the rest may reach a server
        with trio.move_on_after(5):
            while not rig.events.requests:
                await trio.sleep(0.01)
        await trio.sleep(1)
    assert len(rig.farm.requests) == 1
    [record] = rig.events.requests
    assert record.termination is Termination.CLIENT_ABORT
