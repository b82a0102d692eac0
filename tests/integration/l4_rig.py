"""A rig for L4 frontend tests over memory streams: scripted backends, recorded events."""

from __future__ import annotations

import contextlib
import errno
import math
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from lb.config.model import PoolConfig, ServerConfig
from lb.dial import DIRECT, Dial
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.pool import Member, Pool

Behaviour = Callable[[str, trio.abc.Stream], Awaitable[None]]


class RecordingEvents:
    """Counts every event by method and arguments."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[object, ...]] = Counter()
        self.bytes: list[tuple[str, str, str, int, int]] = []

    def frontend_connection_opened(self, frontend: str) -> None:
        self.counts["opened", frontend] += 1

    def frontend_connection_closed(self, frontend: str) -> None:
        self.counts["closed", frontend] += 1

    def refused(self, frontend: str, pool: str, reason: str) -> None:
        self.counts["refused", frontend, pool, reason] += 1

    def bytes_relayed(
        self, frontend: str, pool: str, server: str, *, to_server: int, to_client: int
    ) -> None:
        self.bytes.append((frontend, pool, server, to_server, to_client))

    def server_connected(self, pool: str, server: str, seconds: float) -> None:
        self.counts["connected", pool, server] += 1

    def connect_failed(self, pool: str, server: str) -> None:
        self.counts["connect_failed", pool, server] += 1

    def retried(self, pool: str, server: str, reason: str = "") -> None:
        self.counts["retried", pool, server, reason] += 1

    def internal_error(self, where: str) -> None:
        self.counts["internal_error", where] += 1

    def redispatched(self, pool: str, server: str) -> None:
        self.counts["redispatched", pool, server] += 1

    def first_response_timeout(self, pool: str, server: str) -> None:
        self.counts["first_response_timeout", pool, server] += 1

    def replayed(self, pool: str, server: str) -> None:
        self.counts["replayed", pool, server] += 1


# -- backend behaviours: each gets the server's name and its end of the stream --


async def echo_on_data(name: str, stream: trio.abc.Stream) -> None:
    """Answer each client chunk with '<name>:' + chunk; close on EOF."""
    while data := await stream.receive_some(65536):
        await stream.send_all(name.encode() + b":" + data)
    await stream.aclose()


def banner_then_echo(delay: float = 0.0) -> Behaviour:
    async def run(name: str, stream: trio.abc.Stream) -> None:
        await trio.sleep(delay)
        await stream.send_all(b"* OK " + name.encode() + b"\r\n")
        await echo_on_data(name, stream)

    return run


def answer_after(delay: float) -> Behaviour:
    async def run(name: str, stream: trio.abc.Stream) -> None:
        data = await stream.receive_some(65536)
        await trio.sleep(delay)
        await stream.send_all(name.encode() + b":" + data)
        await echo_on_data(name, stream)

    return run


async def hung(name: str, stream: trio.abc.Stream) -> None:
    """Accept, read everything, never answer."""
    while await stream.receive_some(65536):
        pass
    await trio.sleep_forever()


@dataclass
class Backends:
    """The connector side: behaviour per server, what each received, refusals."""

    behaviour: dict[str, Behaviour]
    refuse: set[str] = field(default_factory=set)
    blackhole: set[str] = field(default_factory=set)
    buggy: set[str] = field(default_factory=set)  # the next connect to each raises, once
    out_of_fds: set[str] = field(default_factory=set)  # connects fail with the balancer's EMFILE
    connections: list[str] = field(default_factory=list)
    nursery: trio.Nursery | None = None

    async def connect(self, member: Member, timeout: float, dial: Dial = DIRECT) -> trio.abc.Stream:
        if member.name in self.refuse:
            raise ConnectionRefusedError(f"connection refused by {member.name}")
        if member.name in self.out_of_fds:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        if member.name in self.buggy:
            self.buggy.discard(member.name)
            raise RuntimeError("a bug below the frontend")
        if member.name in self.blackhole:
            await trio.sleep(math.inf)
        ours, theirs = trio.testing.memory_stream_pair()
        self.connections.append(member.name)
        assert self.nursery is not None
        self.nursery.start_soon(self._serve, member.name, theirs)
        return ours

    async def _serve(self, name: str, stream: trio.abc.Stream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.behaviour[name](name, stream)


def make_pool(
    name: str = "p", servers: tuple[str, ...] = ("cas1", "cas2", "cas3"), **config: object
) -> Pool:
    cfg = PoolConfig(
        name=name,
        servers=tuple(ServerConfig(s, "127.0.0.1", 1, f"{s}.lab.local") for s in servers),
        **config,  # type: ignore[arg-type]
    )
    return Pool(cfg)


@dataclass
class Rig:
    frontend: TcpFrontend
    backends: Backends
    events: RecordingEvents
    reports: list[tuple[str, str, bool, str]]
    nursery: trio.Nursery

    async def client(self) -> trio.abc.HalfCloseableStream:
        """A new client connection served by the frontend in the background."""
        client, ours = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.frontend.handle, ours)
        return client


def make_rig(
    nursery: trio.Nursery,
    behaviour: dict[str, Behaviour],
    *,
    pool: Pool | None = None,
    policy: UpstreamPolicy | None = None,
    settings: TcpFrontendSettings | None = None,
    sni: dict[str, Route] | None = None,
) -> Rig:
    backends = Backends(behaviour, nursery=nursery)
    events = RecordingEvents()
    reports: list[tuple[str, str, bool, str]] = []
    route = Route(pool or make_pool(), policy or UpstreamPolicy(first_response_timeout=1.0))
    frontend = TcpFrontend(
        settings or TcpFrontendSettings("fe"),
        default=route,
        sni=sni,
        events=events,
        report=lambda *r: reports.append(r),
        connector=backends.connect,
    )
    return Rig(frontend, backends, events, reports, nursery)


async def read_until(stream: trio.abc.ReceiveStream, end: bytes) -> bytes:
    data = bytearray()
    while not data.endswith(end):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)
