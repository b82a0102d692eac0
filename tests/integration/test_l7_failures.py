"""The L7 proxy when things fail: retries, 502/503/504, bad clients, resets, outliers."""

from __future__ import annotations

import h11
import pytest
import trio

from lb.l7.events import Termination
from lb.l7.headers import header_value
from lb.l7.upstream import UpstreamSettings
from probes.outlier import OutlierSettings
from tests.integration.test_l7_rig import ServerSide, answer_ok, make_rig

ALL = ("cas1", "cas2", "cas3")


async def reset_before_answer(side: ServerSide, request: h11.Request) -> None:
    await side.stream.aclose()


async def test_connect_failure_is_retried_on_another_server_invisibly() -> None:
    async with make_rig() as rig, rig.client() as client:
        rig.farm.refuse = {"cas1"}
        for i in range(4):
            head, _ = await client.request("POST", f"/EWS/Exchange.asmx?{i}", body=b"<soap/>")
            assert head.status_code == 200
    assert len(rig.farm.connections) == 1  # one connection for all four requests
    assert "cas1" not in rig.farm.connections  # refused, never reached
    assert rig.events.retries == [("ews", "cas1", "connect")]
    assert ("ews", "cas1", False, "connect") in rig.reports
    assert rig.events.requests[0].retries == 1


async def test_all_servers_refusing_gives_503_naming_the_pool() -> None:
    async with make_rig() as rig, rig.client() as client:
        rig.farm.refuse = set(ALL)
        head, body = await client.request("GET", "/mapi/emsmdb/")
        assert head.status_code == 503
        assert b"'mapi'" in body
    assert [r.termination for r in rig.events.requests] == [Termination.NO_SERVER]


async def test_no_eligible_server_gives_503_and_the_connection_goes_on() -> None:
    async with make_rig() as rig, rig.client() as client:
        for member in rig.pools["ews"].members:
            member.eligible = False
        head, body = await client.request("GET", "/EWS/Exchange.asmx")
        assert (head.status_code, b"'ews'" in body) == (503, True)
        head, _ = await client.request("GET", "/owa/")
        assert head.status_code == 200
    assert rig.farm.connections == ["cas1"]


async def test_idempotent_request_is_retried_once_when_the_server_resets() -> None:
    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {"cas1": reset_before_answer}
        head, body = await client.request("GET", "/owa/")
        assert head.status_code == 200
        assert not body.startswith(b"cas1")
    assert rig.events.retries == [("owa", "cas1", "upstream_error")]


async def test_non_idempotent_request_is_not_retried_and_gets_502() -> None:
    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {"cas1": reset_before_answer}
        head, body = await client.request("POST", "/owa/service.svc", body=b"{}")
        assert head.status_code == 502
        assert b"'owa'" in body
        assert await client.closed()
    assert rig.farm.connections == ["cas1"]
    assert rig.events.requests[0].termination is Termination.UPSTREAM_ERROR


async def test_a_second_reset_is_not_retried_again() -> None:
    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: reset_before_answer for s in ALL}
        head, _ = await client.request("GET", "/owa/")
        assert head.status_code == 502
    assert len(set(rig.farm.connections)) == 2  # the first server, then one other


async def test_server_cut_mid_response_cuts_the_client_without_a_second_status() -> None:
    async def half(side: ServerSide, request: h11.Request) -> None:
        await side.send(h11.Response(status_code=200, headers=[("content-length", "100")]))
        await side.send(h11.Data(data=b"x" * 10))
        await side.stream.aclose()

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: half for s in ALL}
        await client.send(
            h11.Request(method="GET", target="/owa/", headers=[("host", "h")]), h11.EndOfMessage()
        )
        head = await client.next_event()
        assert isinstance(head, h11.Response) and head.status_code == 200
        assert isinstance(await client.next_event(), h11.Data)
        assert await client.closed()
    assert rig.events.requests[0].termination is Termination.UPSTREAM_ERROR


async def test_malformed_and_oversized_requests_get_4xx_while_others_are_served(
    autojump_clock: trio.abc.Clock,
) -> None:
    limits = {"max_header_bytes": 2048, "max_header_count": 20, "header_timeout": 5.0}
    async with make_rig(settings=limits) as rig, rig.client() as good:
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /owa/ HTTP/1.1\r\nhost: h\r\nx-big: " + b"a" * 4096 + b"\r\n\r\n", 431),
            (
                b"GET /owa/ HTTP/1.1\r\nhost: h\r\n"
                + b"".join(b"x-%d: 1\r\n" % i for i in range(30))
                + b"\r\n",
                431,
            ),
            (b"GET /owa/ HTTP/1.1\r\nhost: h\r\nx-slow: ", 408),  # never finishes the head
        ]
        for raw, status in cases:
            async with rig.client() as bad:
                await bad.stream.send_all(raw)
                head, _ = await bad.response()
                assert head.status_code == status
                assert await bad.closed()
            head, _ = await good.request("GET", "/owa/")
            assert head.status_code == 200
    terms = [r.termination for r in rig.events.requests if r.pool is None]
    assert terms == [
        Termination.BAD_REQUEST,
        Termination.HEADERS_TOO_LARGE,
        Termination.HEADERS_TOO_LARGE,
        Termination.HEADER_TIMEOUT,
    ]


async def test_header_timeout_is_exact(autojump_clock: trio.abc.Clock) -> None:
    async with make_rig(settings={"header_timeout": 5.0}) as rig, rig.client() as slow:
        start = trio.current_time()
        await slow.stream.send_all(b"GET /owa/ HTTP/1.1\r\n")
        head, _ = await slow.response()
        assert head.status_code == 408
        assert trio.current_time() - start == 5


async def test_silent_new_connection_is_closed_at_the_header_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with make_rig(settings={"header_timeout": 5.0}) as rig, rig.client() as silent:
        start = trio.current_time()
        assert await silent.closed()
        assert trio.current_time() - start == 5
    assert rig.events.requests == []


async def test_pool_reset_of_a_long_lived_request_frees_the_client_to_reconnect(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def endless(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
        while True:
            await trio.sleep(10)
            await side.send(h11.Data(data=b"PENDING\r\n"))

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {s: endless for s in ALL}
        await client.send(
            h11.Request(
                method="POST",
                target="/mapi/emsmdb/",
                headers=[("host", "h"), ("content-length", "0")],
            ),
            h11.EndOfMessage(),
        )
        assert isinstance(await client.next_event(), h11.Response)
        assert isinstance(await client.next_event(), h11.Data)
        server = rig.farm.connections[0]
        rig.pools["mapi"].reset(server)  # the server went DOWN
        with pytest.raises(h11.RemoteProtocolError, match="incomplete chunked"):
            while isinstance(await client.next_event(), h11.Data):
                pass
    [record] = rig.events.requests
    assert record.termination is Termination.SERVER_RESET
    assert rig.member("mapi", server).active == 0


async def test_a_drained_server_gets_no_more_requests_from_kept_alive_clients() -> None:
    async with make_rig() as rig, rig.client() as client:
        _, body = await client.request("GET", "/owa/")
        first = body.split()[0].decode()
        rig.member("owa", first).eligible = False  # drain or DOWN
        for _ in range(3):
            _, body = await client.request("GET", "/owa/")
            assert not body.startswith(first.encode())
    assert rig.member("owa", first).active == 0


async def test_outlier_detection_ejects_a_5xx_only_server() -> None:
    async def broken(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.respond(500, b"kerberos broken")

    outlier = OutlierSettings(consecutive_errors=5, max_ejection_percent=34)
    async with make_rig(outlier=outlier) as rig:
        rig.farm.handlers = {"cas1": broken}
        statuses = []
        for i in range(30):  # new connections, so round robin spreads them
            async with rig.client() as client:
                head, _ = await client.request("GET", f"/EWS/{i}")
                statuses.append((header_value(head.headers, b"x-feserver"), head.status_code))
        errors = [s for s in statuses if s[1] == 500]
        assert len(errors) == 5  # then cas1 is out of the pool
        assert all(srv == b"CAS1" for srv, _ in errors)
        assert rig.frontend.ejected("ews", trio.current_time()) == {"cas1"}
        assert rig.frontend.ejected("owa", trio.current_time()) == frozenset()
    [(pool, ejection)] = rig.events.ejections
    assert (pool, ejection.server) == ("ews", "cas1")


async def test_outlier_detection_ignores_a_farm_wide_burst() -> None:
    async def failover_burst(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.respond(503, b"database moving")

    outlier = OutlierSettings(consecutive_errors=5, max_ejection_percent=100)
    async with make_rig(outlier=outlier) as rig:
        for i in range(9):
            async with rig.client() as client:
                await client.request("GET", f"/EWS/warm{i}")
        rig.farm.handlers = {s: failover_burst for s in ALL}
        for i in range(30):
            async with rig.client() as client:
                head, _ = await client.request("GET", f"/EWS/{i}")
                assert head.status_code == 503
        rig.farm.handlers = {s: answer_ok for s in ALL}
        served = set()
        for i in range(3):
            async with rig.client() as client:
                _, body = await client.request("GET", f"/EWS/after{i}")
                served.add(body.split()[0])
    assert rig.events.ejections == []
    assert served == {b"cas1", b"cas2", b"cas3"}


async def test_a_black_holed_server_costs_one_connect_timeout_then_another_serves(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = UpstreamSettings(connect_timeout=2, response_timeout=10)
    async with make_rig(upstream=upstream) as rig, rig.client() as client:
        rig.farm.blackhole = {"cas1"}
        start = trio.current_time()
        head, body = await client.request("GET", "/owa/")
        assert head.status_code == 200
        assert not body.startswith(b"cas1")
        assert trio.current_time() - start == 2
    assert rig.events.retries == [("owa", "cas1", "connect")]


async def test_in_panic_a_kept_alive_client_keeps_its_upstream_connection() -> None:
    async with make_rig() as rig, rig.client() as client:
        pool = rig.pools["owa"]
        pool.panic = True
        assert (await client.request("GET", "/owa/"))[0].status_code == 200
        for member in pool.members:
            member.eligible = False  # every probe fails: the pool routes to all
        for _ in range(3):
            assert (await client.request("GET", "/owa/"))[0].status_code == 200
    assert len(rig.farm.connections) == 1  # NTLM-bound upstream kept, not re-opened


SMUGGLING_HEADS = [
    b"content-length: 4\r\ntransfer-encoding: chunked\r\n",
    b"transfer-encoding: chunked\r\ncontent-length: 4\r\n",
    b"content-length: 4\r\nTransfer-Encoding: CHUNKED\r\n",
    b"content-length: 4\r\ntransfer-encoding: chunked \r\n",
    b"content-length: 4\r\ntransfer-encoding:\tchunked\r\n",
    b"content-length: 4\r\ntransfer-encoding: gzip, chunked\r\n",
    b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
    b"transfer-encoding: xchunked\r\n",
    b"content-length: 4\r\ncontent-length: 5\r\n",
    b"content-length: 4, 5\r\n",
    b"content-length: +4\r\n",
]


@pytest.mark.parametrize("fields", SMUGGLING_HEADS)
async def test_ambiguous_request_framing_gets_400_and_reaches_no_server(
    fields: bytes, autojump_clock: trio.abc.Clock
) -> None:
    body = b"0\r\n\r\nGET /ecp/ HTTP/1.1\r\nhost: h\r\n\r\n"
    async with make_rig() as rig, rig.client() as good:
        async with rig.client() as bad:
            head = b"POST /owa/a HTTP/1.1\r\nhost: h\r\n" + fields + b"\r\n"
            await bad.stream.send_all(head + body)
            head, _ = await bad.response()
            assert head.status_code == 400
            assert await bad.closed()
        head, _ = await good.request("GET", "/owa/")
        assert head.status_code == 200
    assert rig.farm.connections == ["cas1"]  # only the good client's request reached a server
    assert [r.termination for r in rig.events.requests] == [
        Termination.BAD_REQUEST, Termination.COMPLETE,
    ]


async def test_a_response_with_both_content_length_and_chunked_gets_502_and_is_dropped() -> None:
    async def ambiguous(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nINJECTED"
        )

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {name: ambiguous for name in ALL}
        head, body = await client.request("POST", "/EWS/Exchange.asmx", body=b"<soap/>")
        assert head.status_code == 502
        assert b"INJECTED" not in body and b"hello" not in body
    [record] = rig.events.requests
    assert record.termination is Termination.UPSTREAM_ERROR
    assert any(not ok for _, _, ok, _ in rig.reports)  # the server's fault, not the client's


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhelloXX0\r\n\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    ],
)
async def test_a_malformed_chunked_request_body_gets_400_and_closes(
    body: bytes, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_rig() as rig, rig.client() as good:
        async with rig.client() as bad:
            head = b"POST /owa/a HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
            await bad.stream.send_all(head + body)
            answer, _ = await bad.response()
            assert answer.status_code == 400
            assert await bad.closed()
        answer, _ = await good.request("GET", "/owa/")
        assert answer.status_code == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert rig.events.requests[0].termination is Termination.BAD_REQUEST


async def test_a_malformed_chunked_response_body_cuts_the_client_and_drops_the_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken_chunks(side: ServerSide, request: h11.Request) -> None:
        await side.read_body()
        await side.stream.send_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
        )

    async with make_rig() as rig, rig.client() as client:
        rig.farm.handlers = {name: broken_chunks for name in ALL}
        request = h11.Request(method="GET", target="/owa/", headers=[("host", "h")])
        await client.send(request, h11.EndOfMessage())
        head = await client.next_event()
        assert isinstance(head, h11.Response) and head.status_code == 200
        assert await client.closed()  # the head was out already: the only honest answer is a cut
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert rig.events.requests[0].termination is Termination.UPSTREAM_ERROR


async def test_a_bug_ends_only_its_own_connection_in_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_rig(servers=("cas1",)) as rig:
        rig.farm.buggy = {"cas1"}
        async with rig.client() as hit:
            await hit.send(
                h11.Request(method="GET", target="/owa/", headers=[("host", "h")]),
                h11.EndOfMessage(),
            )
            assert await hit.closed()  # this connection ends ...
        async with rig.client() as good:
            head, _ = await good.request("GET", "/owa/")
            assert head.status_code == 200  # ... the next is served
    assert rig.events.internal_errors == ["l7"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "RuntimeError: a bug below the proxy" in errors[0].getMessage()


async def test_l7_connections_and_upstream_connects_feed_the_series() -> None:
    async with make_rig() as rig:
        rig.farm.refuse = {"cas1", "cas2"}
        async with rig.client() as client:
            head, _ = await client.request("GET", "/owa/")
            assert head.status_code == 200
        with trio.fail_after(5):
            while ("closed", "test") not in rig.events.connections:
                await trio.sleep(0.01)
    assert rig.events.connections == [("opened", "test"), ("closed", "test")]
    failed = [(pool, server) for pool, server, ok in rig.events.connects if not ok]
    assert [c for c in rig.events.connects if c[2]] == [("owa", "cas3", True)]
    assert failed == [(pool, server) for pool, server, _ in rig.events.retries]
    assert {server for _, server in failed} <= {"cas1", "cas2"}
