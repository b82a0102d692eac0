"""L7 rebalancing on real sockets: kept-alive clients return to a recovered server; NTLM pins.

Two loopback servers behind a real `HttpFrontend` and a real `lb.pool.Pool`. Each
server answers with its name and the id of the TCP connection the request came
on; the NTLM one authenticates that connection, as IIS does, with a three-leg
handshake bound to it. The trio clock is a MockClock standing still, moved on
by hand past the rebalancing interval: counts, never timings.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11
import trio
from trio.testing import MockClock

from lb.balancer import Balance
from lb.config import PoolConfig, ServerConfig
from lb.l7.frontend import HttpFrontend
from lb.l7.rebalance import RECHECK_EVERY
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from lb.pool import Pool
from probes.state import AdminState, CheckState
from tests.farmclient import HttpClient

SERVERS = ("cas1", "cas2")
TYPE1, TYPE2, TYPE3 = "TlRMTVNTUAABAAAA", "TlRMTVNTUAACAAAA", "TlRMTVNTUAADAAAA"


@dataclass
class Farm:
    """Both servers' records: (server, connection id) per request, and connections opened."""

    ntlm: bool = False
    served: list[tuple[str, int]] = field(default_factory=list)
    opened: Counter[str] = field(default_factory=Counter)
    handshakes: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def serve(self, name: str, stream: trio.SocketStream) -> None:
        conn_id = next(self._ids)
        self.opened[name] += 1
        conn = h11.Connection(h11.SERVER)
        stage = "anonymous"  # this TCP connection's NTLM state
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:  # b"" at EOF: ConnectionClosed next
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    auth = dict(event.headers).get(b"authorization", b"").decode()
                    status, challenge, stage = self._answer(stage, auth)
                    self.served.append((name, conn_id))
                    headers = [("content-length", "0"), ("x-feserver", name),
                               ("x-connection", str(conn_id))]
                    if challenge:
                        headers.append(("www-authenticate", challenge))
                    await stream.send_all(
                        conn.send(h11.Response(status_code=status, headers=headers))
                        + (conn.send(h11.EndOfMessage()) or b"")
                    )
                elif isinstance(event, h11.EndOfMessage):
                    conn.start_next_cycle()
                else:
                    return

    def _answer(self, stage: str, auth: str) -> tuple[int, str, str]:
        """(status, WWW-Authenticate, next stage) of one request on a connection in `stage`."""
        if not self.ntlm or stage == "authenticated":
            return 200, "", stage
        if auth == f"NTLM {TYPE1}":
            return 401, f"NTLM {TYPE2}", "challenged"
        if auth == f"NTLM {TYPE3}" and stage == "challenged":
            self.handshakes += 1
            return 200, "", "authenticated"
        return 401, "NTLM", "anonymous"  # a type 3 on another connection answers nothing


@contextlib.asynccontextmanager
async def balanced(farm: Farm, balance: Balance = Balance.ROUNDROBIN) -> AsyncIterator[
        tuple[Pool, int]]:
    """The farm's two servers behind an L7 frontend; yields the pool and the frontend's port."""
    async with trio.open_nursery() as nursery:
        servers = []
        for name in SERVERS:
            async def handler(stream: trio.SocketStream, name: str = name) -> None:
                await farm.serve(name, stream)

            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            servers.append(ServerConfig(name, "127.0.0.1", port, f"{name}.contoso.test"))
        pool = Pool(PoolConfig("owa", tuple(servers), balance=balance, outlier=None))
        frontend = HttpFrontend(
            HttpFrontendSettings(routes=RouteTable(vdirs={"/owa": "owa"})),
            {"owa": pool},
            upstream=UpstreamSettings(connect_timeout=2),
        )
        front = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(frontend.serve, front)
        yield pool, front[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def clients(port: int, n: int) -> list[HttpClient]:
    return [HttpClient(await trio.open_tcp_stream("127.0.0.1", port), "mail.contoso.test")
            for _ in range(n)]


async def ask(client: HttpClient, auth: str | None = None) -> tuple[int, str, str]:
    """One GET: (status, server, upstream connection id)."""
    headers = [] if auth is None else [("Authorization", auth)]
    response = await client.request("GET", "/owa/", headers=headers)
    return response.status, response.header("x-feserver") or "", response.header(
        "x-connection") or ""


def set_check(pool: Pool, server: str, state: CheckState) -> None:
    pool.set_check_state(server, state, trio.current_time())


def recheck_due(clock: MockClock) -> None:
    """Move the clock on past the interval after which a kept connection is balanced again."""
    clock.jump(RECHECK_EVERY)


async def test_kept_alive_clients_return_to_a_recovered_server_and_settle(
    mock_clock: MockClock,
) -> None:
    farm = Farm()
    async with balanced(farm) as (pool, port):
        set_check(pool, "cas2", CheckState.DOWN)
        kept = await clients(port, 4)
        assert [(await ask(c))[1] for c in kept] == ["cas1"] * 4
        set_check(pool, "cas2", CheckState.UP)
        unmoved = [(await ask(c))[1] for c in kept]  # not due yet: every request stays
        rounds = []
        for _ in range(5):
            recheck_due(mock_clock)
            rounds.append([await ask(c) for c in kept])
        for c in kept:
            await c.aclose()
    assert unmoved == ["cas1"] * 4
    assert all(status == 200 for r in rounds for status, _, _ in r)
    # Two clients moved at their next due request; then the loads are even and nobody moves.
    assert Counter(server for _, server, _ in rounds[0]) == {"cas1": 2, "cas2": 2}
    assert all(r == rounds[0] for r in rounds)
    assert farm.opened == {"cas1": 4, "cas2": 2}  # one connect per move, no churn


async def test_a_source_pool_sends_a_kept_alive_client_back_to_its_own_server(
    mock_clock: MockClock,
) -> None:
    farm = Farm()
    async with balanced(farm, Balance.SOURCE) as (pool, port):
        home = pool.pick(trio.current_time(), client="127.0.0.1")
        assert home is not None
        away = next(s for s in SERVERS if s != home.name)
        set_check(pool, home.name, CheckState.DOWN)
        (client,) = await clients(port, 1)
        assert (await ask(client))[1] == away
        set_check(pool, home.name, CheckState.UP)
        recheck_due(mock_clock)
        answers = [(await ask(client))[1] for _ in range(5)]
        await client.aclose()
    assert answers == [home.name] * 5


async def test_an_ntlm_client_stays_on_its_connection_through_a_recovery_and_a_drain(
    mock_clock: MockClock,
) -> None:
    farm = Farm(ntlm=True)
    async with balanced(farm) as (pool, port):
        set_check(pool, "cas2", CheckState.DOWN)
        ntlm, *anonymous = await clients(port, 4)
        steps = [await ask(ntlm), await ask(ntlm, f"NTLM {TYPE1}")]
        for c in anonymous:
            await ask(c)  # 401 NTLM: pinned too, until the client closes
        set_check(pool, "cas2", CheckState.UP)
        recheck_due(mock_clock)
        steps.append(await ask(ntlm, f"NTLM {TYPE3}"))  # a move now would lose the handshake
        recheck_due(mock_clock)
        steps += [await ask(ntlm) for _ in range(5)]
        pool.set_admin("cas1", AdminState.DRAIN, trio.current_time())
        steps += [await ask(ntlm) for _ in range(3)]  # a drain lets pinned connections finish
        for c in anonymous:
            await c.aclose()
        fresh = await clients(port, 3)
        after_drain = [(await ask(c))[1] for c in fresh]
        await ntlm.aclose()
        for c in fresh:
            await c.aclose()
    assert [s for s, _, _ in steps] == [401, 401, *[200] * 9]
    assert {(server, conn) for _, server, conn in steps} == {("cas1", steps[0][2])}
    assert farm.handshakes == 1
    assert after_drain == ["cas2"] * 3


async def test_an_unpinned_client_leaves_a_draining_server_at_its_next_request() -> None:
    farm = Farm()
    async with balanced(farm) as (pool, port):
        set_check(pool, "cas2", CheckState.DOWN)
        (client,) = await clients(port, 1)
        before = await ask(client)
        set_check(pool, "cas2", CheckState.UP)
        pool.set_admin("cas1", AdminState.DRAIN, trio.current_time())
        after = [await ask(client) for _ in range(3)]
        await client.aclose()
    assert before[1] == "cas1"
    assert {server for _, server, _ in after} == {"cas2"}
    assert len({conn for _, _, conn in after}) == 1
