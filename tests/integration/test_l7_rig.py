"""An in-memory rig for L7 proxy tests: a pool, scripted h11 servers, a client.

`Rig` wires an HttpFrontend to fake servers over trio memory streams, so tests
drive the real proxy through bytes and can use autojump_clock. The pool here
has exactly the names of lb.pool's API the proxy uses (pick, lease, Member,
Lease). The tests at the bottom check the rig itself.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field

import h11
import trio
import trio.testing

from lb.balancer import Candidate
from lb.dial import DIRECT, Dial
from lb.ejection import PoolEjections
from lb.l7.events import RecordingEvents
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from probes.outlier import OutlierSettings

# -- pool ----------------------------------------------------------------------------


@dataclass(eq=False)
class FakeMember:
    name: str
    host: str = "127.0.0.1"
    port: int = 443
    fqdn: str = ""
    weight: int = 1
    active: int = 0
    total: int = 0
    eligible: bool = True
    serving: bool = True

    def __post_init__(self) -> None:
        self.fqdn = self.fqdn or f"{self.name}.contoso.test"


@dataclass(eq=False)
class FakeLease:
    member: FakeMember
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    idle: bool = False


class FakePool:
    """Round robin over eligible members, counting leases."""

    def __init__(self, name: str, members: list[FakeMember]) -> None:
        self.name = name
        self.members = members
        self.live: list[FakeLease] = []
        self.panic = False
        self.sticky = False
        self._turn = itertools.count()

    def candidate(self, member: FakeMember, now: float) -> Candidate:
        return Candidate(member.name, member.weight, 1.0, member.active)

    def pick(
        self, now: float, *, client: str | None = None, exclude: Collection[str] = ()
    ) -> FakeMember | None:
        candidates = [m for m in self.members if m.eligible and m.name not in exclude]
        if self.panic and not any(m.eligible for m in self.members):
            candidates = [m for m in self.members if m.name not in exclude]  # route to all
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    @contextlib.contextmanager
    def lease(self, member: FakeMember) -> Iterator[FakeLease]:
        lease = FakeLease(member)
        member.active += 1
        member.total += 1
        self.live.append(lease)
        try:
            yield lease
        finally:
            member.active -= not lease.idle
            self.live.remove(lease)

    def set_idle(self, lease: FakeLease, idle: bool = True) -> None:
        """An idle lease is not load (as the real pool counts it)."""
        if lease.idle is not idle:
            lease.idle, lease.member.active = idle, lease.member.active + (-1 if idle else 1)

    def reset(self, server: str) -> None:
        """Cancel every lease on `server` (as the real pool does on DOWN)."""
        for lease in self.live:
            if lease.member.name == server:
                lease.scope.cancel()


# -- scripted servers ----------------------------------------------------------------

Handler = Callable[["ServerSide", h11.Request], Awaitable[None]]


class ServerSide:
    """The h11 server end of one upstream connection."""

    def __init__(self, farm: Farm, server: str, stream: trio.abc.Stream) -> None:
        self.farm = farm
        self.server = server
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event  # type: ignore[return-value]

    async def send(self, *events: h11.Event) -> None:
        await self.stream.send_all(b"".join(self.conn.send(e) or b"" for e in events))

    async def read_body(self) -> int:
        """Read the request body to its end; return its size."""
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return size
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def respond(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        head = [
            ("content-length", str(len(body))),
            ("x-feserver", self.server.upper()),
            *headers,
        ]
        await self.send(
            h11.Response(status_code=status, headers=head), h11.Data(data=body), h11.EndOfMessage()
        )


async def answer_ok(side: ServerSide, request: h11.Request) -> None:
    """The default handler: read the body, answer 200 naming the server and path."""
    await side.read_body()
    await side.respond(200, f"{side.server} {request.target.decode()}".encode())


@dataclass
class Farm:
    """Fake servers reached through the connector; per-server behaviour is scriptable."""

    nursery: trio.Nursery
    handlers: dict[str, Handler] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    blackhole: set[str] = field(default_factory=set)
    buggy: set[str] = field(default_factory=set)  # the next connect to each raises, once
    out_of_fds: set[str] = field(default_factory=set)  # connects fail with the balancer's EMFILE
    connections: list[str] = field(default_factory=list)  # server of each accepted connection
    requests: list[tuple[str, h11.Request]] = field(default_factory=list)
    lockstep: bool = False

    async def connect(
        self, member: FakeMember, timeout: float, dial: Dial = DIRECT
    ) -> trio.abc.Stream:
        if member.name in self.refuse:
            raise ConnectionRefusedError(f"connection refused by {member.name}")
        if member.name in self.out_of_fds:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        if member.name in self.buggy:
            self.buggy.discard(member.name)
            raise RuntimeError("a bug below the proxy")
        if member.name in self.blackhole:
            await trio.sleep_forever()  # SYN never answered
        pair = (
            trio.testing.lockstep_stream_pair if self.lockstep else trio.testing.memory_stream_pair
        )
        client, server = pair()
        self.connections.append(member.name)
        self.nursery.start_soon(self._serve, member.name, server)
        return client

    async def _serve(self, server: str, stream: trio.abc.Stream) -> None:
        side = ServerSide(self, server, stream)
        async with stream:
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError
            ):
                while True:
                    event = await side.next_event()
                    if not isinstance(event, h11.Request):
                        return
                    self.requests.append((server, event))
                    await self.handlers.get(server, answer_ok)(side, event)
                    if side.conn.our_state is not h11.DONE or side.conn.their_state is not h11.DONE:
                        return
                    side.conn.start_next_cycle()


# -- client --------------------------------------------------------------------------


class Client:
    """An h11 client over a memory stream into the frontend."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, *events: h11.Event) -> None:
        await self.stream.send_all(b"".join(self.conn.send(e) or b"" for e in events))

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event  # type: ignore[return-value]

    async def response(self) -> tuple[h11.Response, bytes]:
        head = await self.next_event()
        while isinstance(head, h11.InformationalResponse):
            head = await self.next_event()
        assert isinstance(head, h11.Response), head
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return head, bytes(body)

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ) -> tuple[h11.Response, bytes]:
        hdrs = [("host", "mail.contoso.test"), *headers]
        if body:
            hdrs.append(("content-length", str(len(body))))
        events: list[h11.Event] = [h11.Request(method=method, target=target, headers=hdrs)]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.send(*events)
        return await self.response()

    async def closed(self) -> bool:
        """True when the proxy closed the connection (EOF or reset)."""
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


# -- the rig -------------------------------------------------------------------------

ROUTES = {
    "/owa": "owa",
    "/ecp": "owa",
    "/EWS": "ews",
    "/mapi": "mapi",
    "/rpc": "rpc",
    "/Microsoft-Server-ActiveSync": "eas",
    "/Autodiscover": "autodiscover",
    "/OAB": "oab",
}


@dataclass
class Rig:
    frontend: HttpFrontend
    farm: Farm
    pools: dict[str, FakePool]
    events: RecordingEvents
    reports: list[tuple[str, str, bool, str]]
    nursery: trio.Nursery

    @contextlib.asynccontextmanager
    async def client(self, address: str = "127.0.0.9") -> AsyncIterator[Client]:
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.frontend.handle, theirs, address)
        async with ours:
            yield Client(ours)

    def member(self, pool: str, name: str) -> FakeMember:
        return next(m for m in self.pools[pool].members if m.name == name)


def ejections_for(
    pools: Mapping[str, FakePool], outlier: OutlierSettings | None
) -> dict[str, PoolEjections] | None:
    """Each pool's own ejections with these settings (as lb.pool.Pool owns them), or none."""
    if outlier is None:
        return None

    def size_of(pool: FakePool) -> Callable[[], int]:
        return lambda: len(pool.members)

    return {name: PoolEjections(name, outlier, None, size_of(p)) for name, p in pools.items()}


@contextlib.asynccontextmanager
async def make_rig(
    *,
    servers: tuple[str, ...] = ("cas1", "cas2", "cas3"),
    settings: Mapping[str, object] | None = None,
    upstream: UpstreamSettings | None = None,
    outlier: OutlierSettings | None = None,
    lockstep: bool = False,
) -> AsyncIterator[Rig]:
    """A frontend over one FakePool per route target, all with the same servers."""
    async with trio.open_nursery() as nursery:
        farm = Farm(nursery, lockstep=lockstep)
        pools = {
            name: FakePool(name, [FakeMember(s) for s in servers])
            for name in sorted(set(ROUTES.values()))
        }
        fs = HttpFrontendSettings(name="test", routes=RouteTable(vdirs=ROUTES), **(settings or {}))  # type: ignore[arg-type]
        events = RecordingEvents()
        reports: list[tuple[str, str, bool, str]] = []
        frontend = HttpFrontend(
            fs,
            pools,
            upstream=upstream or UpstreamSettings(connect_timeout=2, response_timeout=10),
            connector=farm.connect,  # type: ignore[arg-type]
            report=lambda *r: reports.append(r),
            events=events,
            ejections=ejections_for(pools, outlier),
        )
        yield Rig(frontend, farm, pools, events, reports, nursery)
        nursery.cancel_scope.cancel()


# -- tests of the rig itself ---------------------------------------------------------


def test_fake_pool_round_robins_over_eligible_members_not_excluded() -> None:
    pool = FakePool("p", [FakeMember("a"), FakeMember("b"), FakeMember("c", eligible=False)])
    picks = [pool.pick(0.0) for _ in range(4)]
    assert [m.name for m in picks if m] == ["a", "b", "a", "b"]
    only = pool.pick(0.0, exclude={"a"})
    assert only is not None and only.name == "b"
    assert pool.pick(0.0, exclude={"a", "b"}) is None


def test_fake_pool_counts_leases() -> None:
    member = FakeMember("a")
    pool = FakePool("p", [member])
    with pool.lease(member):
        assert member.active == 1
    assert (member.active, member.total) == (0, 1)
