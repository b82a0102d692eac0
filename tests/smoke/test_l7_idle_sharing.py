"""Shared idle upstream connections on real sockets: what is parked, who takes it, what ends it.

Two loopback servers behind a real `HttpFrontend` and a real `lb.pool.Pool`.
Each server counts the TCP connections it accepted and the ones that ended,
and answers with its name and the id of the connection the request came on;
in `ntlm` mode it challenges as IIS does. Client connections come one after
another, each closed before the next, as a client that opens a connection per
request does: what the counts show is whether the second one's request went
over the first one's upstream connection. Counts, never timings.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h11
import pytest
import trio
from trio.testing import MockClock

from lb.balancer import Balance
from lb.config import PoolConfig, ServerConfig
from lb.l7.backends import Ejector
from lb.l7.events import RecordingEvents
from lb.l7.frontend import HttpFrontend
from lb.l7.idle import IDLE_LIFE, Reuse
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from lb.pool import Lease, Pool
from probes.outlier import Ejection, Outcome
from probes.state import AdminState, CheckState
from tests.farmclient import HttpClient
from tests.smoke.test_l7_upstream_origin import _proxy_v2_source

SERVERS = ("cas1", "cas2")
TYPE1 = "TlRMTVNTUAABAAAA"


@dataclass
class Farm:
    """The servers' records.

    Attributes:
        ntlm: answer a request without credentials with 401 offering NTLM.
        drop_second: close a connection, unanswered, when its second request arrives
            (a server closing an idle connection just as a request crosses it).
        close_after: close each connection after answering its first request.
        proxied: read a PROXY v2 header first on each connection, and answer with
            the client address it names.
    """

    ntlm: bool = False
    drop_second: bool = False
    close_after: bool = False
    proxied: bool = False
    sources: list[str] = field(default_factory=list)
    opened: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    streams: dict[int, trio.SocketStream] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def serve(self, name: str, stream: trio.SocketStream) -> None:
        conn_id = next(self._ids)
        self.opened[name] += 1
        self.streams[conn_id] = stream
        conn = h11.Connection(h11.SERVER)
        answered = 0
        if self.proxied:
            self.sources.append(await _proxy_v2_source(stream))
        request = h11.Request(method="GET", target="/", headers=[("host", "-")])
        try:
            async with stream:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        if self.drop_second and answered:
                            self.dropped += 1
                            return
                        request = event
                    elif isinstance(event, h11.EndOfMessage):  # answered once read whole
                        await stream.send_all(self._answer(conn, request, name, conn_id))
                        answered += 1
                        if self.close_after:
                            return
                        conn.start_next_cycle()
                    elif not isinstance(event, h11.Data):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client reset it, or `hangup` closed it
        finally:
            self.closed[name] += 1

    async def hangup(self, conn_id: int) -> None:
        """Close a connection from the server's side, as IIS closes an idle one."""
        await self.streams[conn_id].aclose()

    def _answer(self, conn: h11.Connection, request: h11.Request, name: str,
                conn_id: int) -> bytes:
        headers = [("content-length", "0"), ("x-feserver", name), ("x-connection", str(conn_id))]
        status = 200
        if self.ntlm and not dict(request.headers).get(b"authorization"):
            status = 401
            headers.append(("www-authenticate", "Negotiate, NTLM"))
        elif self.ntlm:
            status = 401  # the challenge: the rest of the logon does not matter here
            headers.append(("www-authenticate", "NTLM TlRMTVNTUAACAAAA"))
        return conn.send(h11.Response(status_code=status, headers=headers)) + (
            conn.send(h11.EndOfMessage()) or b"")


@dataclass
class Rig:
    pool: Pool
    frontend: HttpFrontend
    port: int
    events: RecordingEvents

    def parked(self, server: str) -> int:
        return self.frontend.shared.parked("owa", server)


@contextlib.asynccontextmanager
async def farm_behind(
    farm: Farm, *, reuse: Reuse = Reuse.SAFE, balance: Balance = Balance.ROUNDROBIN,
    servers: tuple[str, ...] = ("cas1",), retries: int = 2, proxy_protocol: int = 0,
    ejector: Ejector | None = None,
) -> AsyncIterator[Rig]:
    async with trio.open_nursery() as nursery:
        configs = []
        for name in servers:
            async def handler(stream: trio.SocketStream, name: str = name) -> None:
                await farm.serve(name, stream)

            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            configs.append(ServerConfig(name, "127.0.0.1", port, f"{name}.contoso.test"))
        pool = Pool(PoolConfig("owa", tuple(configs), balance=balance, outlier=None))
        events = RecordingEvents()
        frontend = HttpFrontend(
            HttpFrontendSettings(routes=RouteTable(vdirs={"/owa": "owa"})),
            {"owa": pool},
            upstream=UpstreamSettings(connect_timeout=2, reuse=reuse, retries=retries,
                                      proxy_protocol=proxy_protocol),
            events=events,
            ejections=None if ejector is None else {"owa": ejector},
        )
        front = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(frontend.serve, front)
        yield Rig(pool, frontend, front[0].socket.getsockname()[1], events)
        nursery.cancel_scope.cancel()


async def settle(done: Callable[[], bool | None] = lambda: None) -> None:
    """Let the proxy and the servers run until `done` (or until nothing moved three times)."""
    for _ in range(50 if done() is not None else 3):
        if done():
            return
        await trio.testing.wait_all_tasks_blocked(0.01)


async def connect(rig: Rig) -> HttpClient:
    return HttpClient(await trio.open_tcp_stream("127.0.0.1", rig.port), "mail.contoso.test")


async def ask(client: HttpClient, method: str = "GET", auth: str | None = None,
              body: bytes = b"") -> tuple[int, str, str]:
    """One request: (status, server, upstream connection id)."""
    headers = [] if auth is None else [("Authorization", auth)]
    response = await client.request(method, "/owa/", headers=headers, body=body)
    return response.status, response.header("x-feserver") or "", response.header(
        "x-connection") or ""


async def one_request(rig: Rig, **kwargs: object) -> tuple[int, str, str]:
    """A client connection with one request, closed, and the proxy given time to park."""
    client = await connect(rig)
    try:
        return await ask(client, **kwargs)  # type: ignore[arg-type]
    finally:
        await client.aclose()
        await settle()


async def test_client_connections_in_sequence_share_one_upstream_connection() -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        first = await one_request(rig)
        assert rig.parked("cas1") == 1
        assert rig.pool.member("cas1").active == 0  # parked: not load
        second = await one_request(rig)
        third = await one_request(rig)
    assert first[0] == second[0] == third[0] == 200
    assert first[2] == second[2] == third[2]  # the same upstream connection
    assert farm.opened["cas1"] == 1
    assert rig.events.reuses == [("owa", "cas1"), ("owa", "cas1")]


@pytest.mark.parametrize("auth", [None, f"NTLM {TYPE1}"], ids=["401-challenge", "authorization"])
async def test_a_connection_that_carried_ntlm_stays_private(auth: str | None) -> None:
    farm = Farm(ntlm=True)
    async with farm_behind(farm) as rig:
        status, _, ntlm_conn = await one_request(rig, auth=auth)
        assert status == 401
        assert rig.parked("cas1") == 0  # closed with its client
        await settle(lambda: farm.closed["cas1"] == 1)
        assert farm.closed["cas1"] == 1
        farm.ntlm = False
        _, _, plain = await one_request(rig)
        _, _, again = await one_request(rig)
    assert plain != ntlm_conn  # the next client did not get the NTLM one
    assert again == plain  # while a plain one is shared
    assert farm.opened["cas1"] == 2


async def test_a_request_with_a_body_never_takes_a_shared_connection() -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        _, _, first = await one_request(rig)
        status, _, posted = await one_request(rig, method="POST", body=b"x=1")
        _, _, got = await one_request(rig)
    assert status == 200
    assert posted != first
    assert got in (first, posted)  # a GET takes one of the parked ones
    assert farm.opened["cas1"] == 2


@pytest.mark.parametrize("reuse, opened", [(Reuse.NEVER, 3), (Reuse.SAFE, 1)])
async def test_reuse_never_gives_each_client_connection_its_own(reuse: Reuse, opened: int) -> None:
    farm = Farm()
    async with farm_behind(farm, reuse=reuse) as rig:
        for _ in range(3):
            assert (await one_request(rig))[0] == 200
    assert farm.opened["cas1"] == opened


async def test_a_connection_that_named_its_client_in_a_proxy_header_stays_its_own() -> None:
    farm = Farm(proxied=True)
    async with farm_behind(farm, proxy_protocol=2) as rig:
        for _ in range(2):
            assert (await one_request(rig))[0] == 200
    assert farm.opened["cas1"] == 2  # each told the server about its own client
    assert farm.sources[0] != farm.sources[1]


async def test_an_idle_connection_the_server_closed_is_not_handed_out() -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        _, _, conn_id = await one_request(rig)
        assert rig.parked("cas1") == 1
        await farm.hangup(int(conn_id))  # while parked
        await settle(lambda: farm.closed["cas1"] == 1)
        assert (await one_request(rig))[0] == 200
    assert farm.opened["cas1"] == 2
    assert rig.events.reuses == []  # the liveness check saw it closed: nothing to replay


async def test_a_connection_the_server_closed_before_its_client_left_is_not_parked() -> None:
    farm = Farm(close_after=True)
    async with farm_behind(farm) as rig:
        client = await connect(rig)
        assert (await ask(client))[0] == 200
        await settle(lambda: farm.closed["cas1"] == 1)
        await client.aclose()
        await settle()
        assert rig.parked("cas1") == 0
        assert (await one_request(rig))[0] == 200
    assert farm.opened["cas1"] == 2


async def test_a_request_lost_on_a_reused_connection_is_replayed_on_a_fresh_one() -> None:
    # Two parked connections, both of which the server drops at their next request
    # (the race HAProxy's "safe" is about): the replay must dial, not take the other.
    farm = Farm(drop_second=True)
    async with farm_behind(farm) as rig:
        a, b = await connect(rig), await connect(rig)
        assert (await ask(a))[0] == (await ask(b))[0] == 200
        await a.aclose()
        await b.aclose()
        await settle(lambda: rig.parked("cas1") == 2)
        assert rig.parked("cas1") == 2
        status, _, _ = await one_request(rig)
    assert status == 200
    assert farm.dropped == 1
    assert farm.opened["cas1"] == 3
    assert [r[2] for r in rig.events.retries] == ["upstream_error"]


@pytest.mark.parametrize("leave", ["down", "drain", "maint"])
async def test_a_server_leaving_service_closes_its_idle_connections(leave: str) -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        await one_request(rig)
        assert rig.parked("cas1") == 1
        assert farm.closed["cas1"] == 0  # parked, so still open
        now = trio.current_time()
        if leave == "down":  # reset_on_down is off: a parked one closes all the same
            rig.pool.set_check_state("cas1", CheckState.DOWN, now)
        else:
            rig.pool.set_admin("cas1", AdminState[leave.upper()], now)
        await settle(lambda: farm.closed["cas1"] == 1)
        assert farm.closed["cas1"] == 1
        assert rig.parked("cas1") == 0
        assert rig.events.idle == {("owa", "cas1"): 0}


async def test_idle_connections_end_after_their_idle_life(mock_clock: MockClock) -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        await one_request(rig)
        assert rig.parked("cas1") == 1
        mock_clock.jump(IDLE_LIFE - 1)
        await settle()
        assert farm.closed["cas1"] == 0
        mock_clock.jump(2)
        await settle(lambda: farm.closed["cas1"] == 1)
        assert farm.closed["cas1"] == 1
        assert rig.parked("cas1") == 0


async def test_parked_connections_do_not_count_as_least_connections_load() -> None:
    farm = Farm()
    async with farm_behind(farm, balance=Balance.LEASTCONN, servers=SERVERS) as rig:
        now = trio.current_time()
        rig.pool.set_admin("cas2", AdminState.DRAIN, now)
        held = [await connect(rig) for _ in range(2)]
        assert [(await ask(c))[1] for c in held] == ["cas1", "cas1"]
        rig.pool.set_admin("cas2", AdminState.READY, now)
        busy = await connect(rig)
        assert (await ask(busy))[1] == "cas2"  # cas1 carries 2, cas2 none
        for client in held:
            await client.aclose()
        await settle(lambda: rig.parked("cas1") == 2)
        assert rig.pool.member("cas1").active == 0
        # cas1: two idle, none active; cas2: one active. Counted as load, the idle
        # ones would send this client to cas2.
        status, server, _ = await one_request(rig)
        await busy.aclose()
    assert (status, server) == (200, "cas1")
    assert farm.opened == Counter({"cas1": 2, "cas2": 1})


async def test_a_retired_frontend_closes_its_parked_connections() -> None:
    # The app retires a frontend by cancelling the scope its `serve` runs in once its
    # last client connection has ended (lb/app.py, _end_when_idle): parked ones go then.
    farm = Farm()
    async with farm_behind(farm) as rig:
        await one_request(rig)
        assert rig.parked("cas1") == 1
        assert rig.frontend.shared.nursery is not None
        rig.frontend.shared.nursery.cancel_scope.cancel()
        await settle(lambda: farm.closed["cas1"] == 1)
        assert farm.closed["cas1"] == 1
        assert rig.events.idle == {("owa", "cas1"): 0}
        assert rig.frontend.shared.nursery is None


async def test_a_failure_while_parking_costs_that_connection_only(
        caplog: pytest.LogCaptureFixture) -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        def broken(lease: object, idle: bool = True) -> None:
            raise RuntimeError("bug")

        rig.pool.set_idle = broken  # type: ignore[method-assign]
        assert (await one_request(rig))[0] == 200
        await settle(lambda: farm.closed["cas1"] == 1)
        assert farm.closed["cas1"] == 1  # closed, not parked
        assert rig.parked("cas1") == 0
        assert (await one_request(rig))[0] == 200  # the frontend serves on
    assert rig.events.internal_errors == ["l7", "l7"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert all(e.startswith("frontend http: parking <UpstreamConnection owa/cas1")
               and e.endswith("failed: RuntimeError: bug") for e in errors)


async def test_a_failure_after_the_set_took_it_leaves_nothing_parked() -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        calls = []

        def broken(pool: str, server: str, delta: int) -> None:
            calls.append(delta)
            if delta > 0:
                raise RuntimeError("bug")

        rig.events.idle_changed = broken  # type: ignore[method-assign]
        assert (await one_request(rig))[0] == 200
        await settle(lambda: farm.closed["cas1"] == 1)
        assert rig.parked("cas1") == 0
        assert farm.closed["cas1"] == 1
        assert rig.pool.member("cas1").active == 0
        assert (await one_request(rig))[0] == 200
    assert calls == [1, -1, 1, -1]


async def test_a_failure_while_reusing_closes_that_connection_and_dials_afresh() -> None:
    farm = Farm()
    async with farm_behind(farm) as rig:
        await one_request(rig)
        assert rig.parked("cas1") == 1

        set_idle = rig.pool.set_idle

        def broken(lease: Lease, idle: bool = True) -> None:
            if not idle:  # only handing it out fails
                raise RuntimeError("bug")
            set_idle(lease, idle)

        rig.pool.set_idle = broken  # type: ignore[method-assign]
        assert (await one_request(rig))[0] == 200  # on a new connection
        await settle(lambda: farm.closed["cas1"] >= 1)
        assert farm.closed["cas1"] >= 1  # the one that failed was closed, not leaked
    assert farm.opened["cas1"] == 2
    assert rig.events.internal_errors == ["l7"]


@dataclass
class Ejecting:
    """Outlier detection as the test says: `out` are ejected."""

    out: set[str] = field(default_factory=set)

    def is_ejected(self, server: str, now: float) -> bool:
        return server in self.out

    def ejected(self, now: float) -> frozenset[str]:
        return frozenset(self.out)

    def record(self, server: str, outcome: Outcome, now: float, *,
               client: str | None) -> Ejection | None:
        return None


async def test_a_connection_to_an_ejected_server_is_not_parked() -> None:
    farm, ejecting = Farm(), Ejecting()
    async with farm_behind(farm, servers=SERVERS, ejector=ejecting) as rig:
        client = await connect(rig)
        _, server, _ = await ask(client)
        ejecting.out.add(server)
        await client.aclose()
        await settle(lambda: farm.closed[server] == 1)
        assert rig.parked(server) == 0
        assert farm.closed[server] == 1
