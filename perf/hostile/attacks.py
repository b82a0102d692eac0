"""What the attacker does to the balancer, one coroutine per attack.

Each attack runs for a bounded time against the ports of a running rig, holds
whatever it opened until then, closes it all, and returns one line saying what
it did (how many connections, requests or handshakes). None of them reads what
the balancer answers unless the attack is about the answer.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from perf.hostile.rig import NAME, Ports

_CONNECT_LIMIT = 2.0


@dataclass(frozen=True)
class Scale:
    """How hard each attack pushes."""

    seconds: float
    slowloris: int
    non_readers: int
    flood_connections: int
    flood_depth: int
    half_handshakes: int
    malformed_concurrency: int
    fd_limit: int
    fd_connections: int


FULL = Scale(seconds=15, slowloris=1000, non_readers=500, flood_connections=500,
             flood_depth=200, half_handshakes=1000, malformed_concurrency=20,
             fd_limit=256, fd_connections=400)
QUICK = Scale(seconds=2, slowloris=100, non_readers=50, flood_connections=50,
              flood_depth=50, half_handshakes=100, malformed_concurrency=8,
              fd_limit=256, fd_connections=400)


async def _open(port: int) -> trio.SocketStream | None:
    """A TCP connection to the balancer, or None when it does not accept in time."""
    with trio.move_on_after(_CONNECT_LIMIT):
        try:
            return await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return None
    return None


async def _hold_many(
    ports: list[int], count: int, seconds: float,
    first: bytes, tick: Callable[[int], bytes] | None = None,
) -> tuple[int, int]:
    """Open `count` connections round the ports, send `first`, then `tick(n)` every second.

    A connection the balancer closes is opened again, as an attacker would.
    Returns (connections opened, connections the balancer closed on us).
    """
    opened = closed = 0

    async def one(port: int) -> None:
        nonlocal opened, closed
        while True:
            stream = await _open(port)
            if stream is None:
                await trio.sleep(0.2)
                continue
            opened += 1
            try:
                async with stream:
                    await stream.send_all(first)
                    n = 0
                    while True:
                        await trio.sleep(1)
                        if tick is not None:
                            n += 1
                            await stream.send_all(tick(n))
            except (trio.BrokenResourceError, OSError):
                closed += 1

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, ports[i % len(ports)])
    return opened, closed


async def slowloris(ports: Ports, scale: Scale) -> str:
    """Request heads sent one header line a second, never finished; a tenth on the admin port."""
    head = f"GET /owa/ HTTP/1.1\r\nHost: {NAME}\r\n".encode()
    targets = [ports.plain] * 9 + [ports.admin]
    opened, closed = await _hold_many(targets, scale.slowloris, scale.seconds, head,
                                      lambda n: f"X-Slow-{n}: {'a' * 20}\r\n".encode())
    return f"{scale.slowloris} slow heads: {opened} opened, {closed} closed by caslb"


async def non_readers(ports: Ports, scale: Scale) -> str:
    """Clients that ask for a megabyte, ten times over, and never read."""
    request = f"GET /owa/big HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode() * 10
    opened, _ = await _hold_many([ports.plain], scale.non_readers, scale.seconds, request)
    return f"{scale.non_readers} non-reading clients, 10 MiB asked each: {opened} opened"


async def pipelining_flood(ports: Ports, scale: Scale) -> str:
    """Connections that each write many pipelined GETs at once and never read."""
    request = f"GET /owa/flood HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()
    batch = request * scale.flood_depth
    opened, _ = await _hold_many([ports.plain], scale.flood_connections, scale.seconds, batch)
    sent = opened * scale.flood_depth
    return f"{scale.flood_connections} × {scale.flood_depth} pipelined GETs: {sent} requests"


def client_hello() -> bytes:
    """A real TLS ClientHello for the rig's name, as the first flight on the wire."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=NAME)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server, as meant
        tls.do_handshake()
    return outgoing.read()


async def half_handshakes(ports: Ports, scale: Scale) -> str:
    """Half a ClientHello, then silence, on the TLS-terminating and the sni frontends."""
    hello = client_hello()
    half = hello[: len(hello) // 2]
    opened, closed = await _hold_many([ports.tls, ports.sni], scale.half_handshakes,
                                      scale.seconds, half)
    return f"{scale.half_handshakes} half handshakes: {opened} opened, {closed} closed by caslb"


def malformed_hellos() -> list[tuple[str, bytes]]:
    """ClientHellos broken in the ways parsers trip over, named."""
    hello = client_hello()
    at = hello.find(NAME.encode())
    bad_sni = hello[: at - 2] + b"\xff\xff" + hello[at:]
    huge_name = ("a" * 63 + ".") * 4 + "test"
    long_sni = hello[: at - 2] + len(huge_name).to_bytes(2, "big") + huge_name.encode()
    rng = random.Random(10)
    return [
        ("truncated", hello[:20]),
        ("record longer than sent", b"\x16\x03\x01\x40\x00" + hello[5:40]),
        ("record length zero", b"\x16\x03\x01\x00\x00"),
        ("not a handshake record", b"\x17\x03\x03\x00\x10" + bytes(16)),
        ("handshake not a ClientHello", hello[:5] + b"\x02" + hello[6:]),
        ("SNI length past the end", bad_sni),
        ("SNI name cut after its length", long_sni[: at + 10]),
        ("SSLv2 hello", b"\x80\x2e\x01\x00\x02\x00\x15" + bytes(40)),
        ("HTTP instead of TLS", f"GET / HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()),
        ("random bytes", rng.randbytes(300)),
        ("random after a record header", b"\x16\x03\x01\x01\x00" + rng.randbytes(256)),
        ("extensions length past the end", hello[:-10]),
    ]


async def _send_and_wait(port: int, data: bytes) -> None:
    stream = await _open(port)
    if stream is None:
        return
    with trio.move_on_after(2):
        try:
            async with stream:
                await stream.send_all(data)
                stream.socket.shutdown(socket.SHUT_WR)
                while await stream.receive_some(4096):
                    pass
        except (trio.BrokenResourceError, OSError):
            pass  # a reset is one right answer


async def malformed_client_hellos(ports: Ports, scale: Scale) -> str:
    """Every malformed hello, over and over, to the TLS-terminating and the sni frontends."""
    cases = malformed_hellos()
    sent = 0

    async def worker(offset: int) -> None:
        nonlocal sent
        n = offset
        while True:
            _, data = cases[n % len(cases)]
            await _send_and_wait((ports.sni, ports.tls)[n % 2], data)
            sent += 1
            n += 1

    with trio.move_on_after(scale.seconds):
        async with trio.open_nursery() as nursery:
            for i in range(scale.malformed_concurrency):
                nursery.start_soon(worker, i * 5)
    return f"{len(cases)} kinds of malformed ClientHello: {sent} sent"


async def fd_exhaustion(ports: Ports, scale: Scale) -> str:
    """More held connections through the tcp frontend than the balancer has fds for."""
    opened, _ = await _hold_many([ports.tcp], scale.fd_connections, scale.seconds, b"")
    return (f"{scale.fd_connections} held connections at RLIMIT_NOFILE {scale.fd_limit}: "
            f"{opened} connected")


Attack = Callable[[Ports, Scale], Awaitable[str]]

ATTACKS: dict[str, Attack] = {
    "slowloris": slowloris,
    "non-readers": non_readers,
    "pipelining": pipelining_flood,
    "half-tls": half_handshakes,
    "bad-hello": malformed_client_hellos,
    "fd-exhaustion": fd_exhaustion,
}
