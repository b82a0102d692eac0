"""The L4 frontend over memory streams on a virtual clock: retries, first response, replay."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from lb.l4.frontend import Route
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from probes.state import AdminState, CheckState
from tests.integration.l4_rig import (
    answer_after,
    banner_then_echo,
    echo_on_data,
    hung,
    make_pool,
    make_rig,
    read_until,
)

TLS_LIKE = UpstreamPolicy(first_response_timeout=1.0, retries=2)
BANNER = UpstreamPolicy(first_response_timeout=1.0, retries=2, server_speaks_first=True)


async def test_a_silent_server_is_abandoned_and_the_first_flight_replayed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": hung, "cas2": echo_on_data, "cas3": echo_on_data},
                       policy=TLS_LIKE)
        start = trio.current_time()
        client = await rig.client()
        await client.send_all(b"HELLO")
        answer = await client.receive_some(100)
        assert trio.current_time() - start == 1.0  # exactly one first-response timeout
        n.cancel_scope.cancel()
    assert rig.backends.connections == ["cas1", "cas2"]
    assert answer == b"cas2:HELLO"  # the same bytes, replayed
    assert rig.events.counts["first_response_timeout", "p", "cas1"] == 1
    assert rig.events.counts["replayed", "p", "cas2"] == 1
    assert rig.events.counts["redispatched", "p", "cas1"] == 1
    assert rig.reports == [("p", "cas1", False, "first_response_timeout"),
                           ("p", "cas2", True, "answered")]


async def test_a_banner_protocol_is_timed_from_the_connection_opening(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": hung, "cas2": banner_then_echo(), "cas3": hung},
                       policy=BANNER)
        start = trio.current_time()
        client = await rig.client()  # says nothing: waits for the banner
        assert await read_until(client, b"\r\n") == b"* OK cas2\r\n"
        assert trio.current_time() - start == 1.0
        await client.send_all(b"a1 CAPABILITY")
        assert await client.receive_some(100) == b"cas2:a1 CAPABILITY"
        n.cancel_scope.cancel()
    assert rig.events.counts["first_response_timeout", "p", "cas1"] == 1
    assert rig.events.counts["replayed", "p", "cas2"] == 0  # nothing to replay


async def test_a_slow_client_first_flight_is_not_mistaken_for_a_silent_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data, "cas2": echo_on_data, "cas3": echo_on_data},
                       policy=TLS_LIKE)
        client = await rig.client()
        await trio.sleep(5)  # five timeouts' worth of client silence
        await client.send_all(b"late hello")
        assert await client.receive_some(100) == b"cas1:late hello"
        n.cancel_scope.cancel()
    assert rig.backends.connections == ["cas1"]
    assert not any(k[0] == "first_response_timeout" for k in rig.events.counts)


async def test_a_client_trickling_its_hello_rearms_the_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": answer_after(0.9), "cas2": hung, "cas3": hung},
                       policy=TLS_LIKE)
        client = await rig.client()
        for piece in (b"a", b"b", b"c"):
            await client.send_all(piece)
            await trio.sleep(0.8)
        assert (await read_until(client, b"b")).startswith(b"cas1:a")
        n.cancel_scope.cancel()
    assert rig.backends.connections == ["cas1"]


async def test_a_slow_but_alive_server_is_not_abandoned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": answer_after(0.9), "cas2": hung, "cas3": hung},
                       policy=TLS_LIKE)
        start = trio.current_time()
        client = await rig.client()
        await client.send_all(b"hi")
        assert await client.receive_some(100) == b"cas1:hi"
        assert trio.current_time() - start == pytest.approx(0.9)
        n.cancel_scope.cancel()
    assert rig.backends.connections == ["cas1"]
    assert rig.reports == [("p", "cas1", True, "answered")]


async def test_when_every_try_is_silent_the_client_is_closed_after_all_tries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": hung, "cas2": hung, "cas3": hung}, policy=TLS_LIKE)
        start = trio.current_time()
        client = await rig.client()
        await client.send_all(b"hello")
        assert await client.receive_some(100) == b""
        assert trio.current_time() - start == 3.0  # 1 + retries servers, one timeout each
        n.cancel_scope.cancel()
    assert rig.backends.connections == ["cas1", "cas2", "cas3"]
    assert rig.events.counts["replayed", "p", "cas3"] == 1


async def test_refused_and_blackholed_servers_are_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas3": echo_on_data},
                       policy=UpstreamPolicy(connect_timeout=2.0, first_response_timeout=1.0))
        rig.backends.refuse.add("cas1")
        rig.backends.blackhole.add("cas2")
        start = trio.current_time()
        client = await rig.client()
        await client.send_all(b"x")
        assert await client.receive_some(100) == b"cas3:x"
        assert trio.current_time() - start == 2.0  # the black hole's connect timeout
        n.cancel_scope.cancel()
    assert rig.reports[:2] == [("p", "cas1", False, "refused"), ("p", "cas2", False, "timeout")]
    assert rig.events.counts["connect_failed", "p", "cas1"] == 1
    assert rig.events.counts["connect_failed", "p", "cas2"] == 1
    assert rig.events.counts["replayed", "p", "cas3"] == 0  # nothing was ever sent before


async def test_the_client_eof_is_part_of_the_replayed_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": hung, "cas2": echo_on_data, "cas3": hung}, policy=TLS_LIKE)
        client = await rig.client()
        await client.send_all(b"query")
        await client.send_eof()
        assert await read_until(client, b"never") == b"cas2:query"  # then EOF
        await trio.testing.wait_all_tasks_blocked()
        n.cancel_scope.cancel()
    [(_, _, server, to_server, to_client)] = rig.events.bytes
    assert (server, to_server, to_client) == ("cas2", 5, 10)


async def test_a_flight_over_the_limit_commits_without_a_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": answer_after(10), "cas2": hung, "cas3": hung},
                       policy=TLS_LIKE, settings=TcpFrontendSettings("fe", first_flight_limit=8))
        client = await rig.client()
        await client.send_all(b"0123456789")  # more than can be replayed
        assert await client.receive_some(100) == b"cas1:0123456789"
        n.cancel_scope.cancel()
    assert rig.backends.connections == ["cas1"]


async def test_the_connection_limit_refuses_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data, "cas2": echo_on_data, "cas3": echo_on_data},
                       settings=TcpFrontendSettings("fe", max_connections=1))
        first = await rig.client()
        await first.send_all(b"a")
        assert await first.receive_some(10) == b"cas1:a"
        second = await rig.client()
        assert await second.receive_some(10) == b""  # accepted and closed
        await first.send_all(b"b")
        assert await first.receive_some(10) == b"cas1:b"  # the first one is untouched
        n.cancel_scope.cancel()
    assert rig.events.counts["refused", "fe", "", "limit"] == 1
    assert rig.frontend.active == 0


async def test_a_server_marked_down_has_its_connections_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = make_pool(reset_on_down=True)
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data, "cas2": echo_on_data, "cas3": echo_on_data},
                       pool=pool)
        client = await rig.client()
        await client.send_all(b"a")
        assert await client.receive_some(10) == b"cas1:a"
        pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        assert await client.receive_some(10) == b""
        again = await rig.client()
        await again.send_all(b"b")
        assert await again.receive_some(10) == b"cas2:b"
        n.cancel_scope.cancel()
    assert pool.member("cas1").active == 0


async def test_a_drained_server_keeps_its_connections_for_the_grace_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = make_pool(drain_grace=10.0)
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data, "cas2": echo_on_data, "cas3": echo_on_data},
                       pool=pool)
        client = await rig.client()
        await client.send_all(b"a")
        assert await client.receive_some(10) == b"cas1:a"
        drained_at = trio.current_time()
        pool.set_admin("cas1", AdminState.DRAIN, drained_at)
        await trio.sleep(9)
        await client.send_all(b"b")
        assert await client.receive_some(10) == b"cas1:b"  # still served within the grace
        assert await client.receive_some(10) == b""
        assert trio.current_time() - drained_at == 10.0
        n.cancel_scope.cancel()


def captured_hello(server_name: str) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("owa.contoso.example", "owa1"), ("x.eas.contoso.example", "eas1"),
     ("other.example", "def1")],
)
async def test_sni_routes_by_name_and_hands_the_hello_over_intact(
    name: str, expected: str, autojump_clock: trio.testing.MockClock
) -> None:
    pools = {p: make_pool(p, (f"{p}1",)) for p in ("owa", "eas", "def")}
    received: list[bytes] = []

    async def keep(server: str, stream: trio.abc.Stream) -> None:
        received.append(await read_until(stream, b"END"))
        await stream.send_all(server.encode())

    sni = {"owa.contoso.example": Route(pools["owa"], TLS_LIKE),
           "*.eas.contoso.example": Route(pools["eas"], TLS_LIKE)}
    hello = captured_hello(name)
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"owa1": keep, "eas1": keep, "def1": keep},
                       pool=pools["def"], sni=sni)
        client = await rig.client()
        await client.send_all(hello[:7])
        await trio.sleep(0.5)  # a hello split across reads
        await client.send_all(hello[7:] + b"END")
        assert await client.receive_some(100) == expected.encode()
        n.cancel_scope.cancel()
    assert received == [hello + b"END"]


async def test_sni_without_a_hello_in_time_goes_to_the_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    owa = make_pool("owa", ("owa1",))
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"owa1": echo_on_data, "def1": banner_then_echo()},
                       pool=make_pool("def", ("def1",)), sni={"owa": Route(owa, TLS_LIKE)},
                       settings=TcpFrontendSettings("fe", sni_timeout=3.0))
        start = trio.current_time()
        client = await rig.client()
        assert await read_until(client, b"\r\n") == b"* OK def1\r\n"
        assert trio.current_time() - start == 3.0
        n.cancel_scope.cancel()


async def test_an_sni_peek_that_fills_the_flight_loses_no_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    received: list[bytes] = []

    async def keep(server: str, stream: trio.abc.Stream) -> None:
        received.append(await read_until(stream, b"END"))
        await stream.send_all(b"ok")

    garbage = b"\x16\x03\x01\xff\xff" + bytes(40)  # a hello longer than the bound
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"def1": keep}, pool=make_pool("def", ("def1",)), sni={},
                       settings=TcpFrontendSettings("fe", first_flight_limit=16))
        client = await rig.client()
        await client.send_all(garbage + b"END")
        assert await client.receive_some(10) == b"ok"
        n.cancel_scope.cancel()
    assert received == [garbage + b"END"]


async def test_a_bug_ends_only_its_own_connection_in_one_log_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data}, pool=make_pool(servers=("cas1",)))
        rig.backends.buggy = {"cas1"}
        hit = await rig.client()
        await hit.send_all(b"HELLO")
        assert await hit.receive_some(100) == b""  # this connection ends ...
        good = await rig.client()
        await good.send_all(b"HELLO")
        assert (await good.receive_some(100)).endswith(b":HELLO")  # ... the next is served
        n.cancel_scope.cancel()
    assert rig.events.counts["internal_error", "l4"] == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "RuntimeError: a bug below the frontend" in errors[0].getMessage()


async def test_a_route_policy_that_raises_ends_only_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A plain frontend asks its route's policy before the connection's idle timer
    # exists: a policy that fails must still land in the connection's failure boundary.
    calls = 0

    def policy() -> UpstreamPolicy:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the first connection's two asks
            raise RuntimeError("a broken reload")
        return UpstreamPolicy(first_response_timeout=1.0)

    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data}, pool=make_pool(servers=("cas1",)))
        rig.frontend._default = Route(rig.frontend._default.pool, policy)  # type: ignore[union-attr]
        hit = await rig.client()
        assert await hit.receive_some(100) == b""  # this connection ends ...
        served = await rig.client()
        await served.send_all(b"HELLO")
        assert (await served.receive_some(100)).endswith(b":HELLO")  # ... the next is served
        n.cancel_scope.cancel()
    assert rig.events.counts["internal_error", "l4"] == 1
    assert rig.frontend.active == 0
