"""The L4 frontend on loopback in front of casfarm, with stdlib clients in threads.

A hung server stays UP here (no health checks run), so every connection the
balancer sends it must be rescued by the first-response timeout and replay.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import casfarm
import pytest
import trio

from lb.config.model import PoolConfig, ServerConfig
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.pool import Pool
from probes.state import CheckState
from tests.integration.l4_rig import RecordingEvents

pytestmark = pytest.mark.smoke

CLIENTS = 6  # with round robin over 3 servers, 2 land on the hung one
CLIENT_TIMEOUT = 10.0  # a failing test fails, it does not hang
BANNER_KINDS = ("imap", "pop", "smtp")  # clear ports: the server speaks first


@dataclass
class Front:
    port: int
    pool: Pool
    events: RecordingEvents
    reports: list[tuple[str, str, bool, str]]


def farm_pool(farm: casfarm.Farm, kind: str, **config: object) -> Pool:
    servers = tuple(ServerConfig(s.name, s.host, s.ports[kind], s.fqdn) for s in farm.servers)
    return Pool(PoolConfig(name=kind, servers=servers, **config))  # type: ignore[arg-type]


@asynccontextmanager
async def front(
    farm: casfarm.Farm,
    kind: str,
    *,
    sni: bool = False,
    settings: TcpFrontendSettings | None = None,
    **config: object,
) -> AsyncIterator[Front]:
    """An L4 frontend on 127.0.0.1:0 for one kind of farm port."""
    pool = farm_pool(farm, kind, **config)
    policy = UpstreamPolicy(
        connect_timeout=1.0,
        first_response_timeout=0.5,
        server_speaks_first=kind in BANNER_KINDS,
        retries=2,
    )
    route = Route(pool, policy)
    events = RecordingEvents()
    reports: list[tuple[str, str, bool, str]] = []
    frontend = TcpFrontend(
        settings or TcpFrontendSettings("fe"),
        default=None if sni else route,
        sni={"mail.lab.local": route} if sni else None,
        events=events,
        report=lambda *r: reports.append(r),
    )
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(frontend.serve, listeners)
        yield Front(listeners[0].socket.getsockname()[1], pool, events, reports)
        nursery.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()


def tls_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def https_client(port: int, ca: Path) -> str:
    ctx = tls_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname="mail.lab.local") as tls:
        tls.sendall(b"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: mail.lab.local\r\n"
                    b"Connection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data.decode("latin-1")


def imaps_client(port: int, ca: Path) -> str:
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=_named(ca),
                           timeout=CLIENT_TIMEOUT) as imap:
        return imap.welcome.decode()


def imap_client(port: int, ca: Path) -> str:
    with imaplib.IMAP4("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as imap:
        return imap.welcome.decode()


def pops_client(port: int, ca: Path) -> str:
    pop = poplib.POP3_SSL("127.0.0.1", port, context=_named(ca), timeout=CLIENT_TIMEOUT)
    try:
        return pop.getwelcome().decode()
    finally:
        pop.quit()


def pop_client(port: int, ca: Path) -> str:
    pop = poplib.POP3("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        return pop.getwelcome().decode()
    finally:
        pop.quit()


def smtp_client(port: int, ca: Path) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as smtp:
        code, _ = smtp.ehlo("client.example")
        assert code == 250
        return "250 ehlo ok"


def _named(ca: Path) -> ssl.SSLContext:
    # The farm's certificates name the namespace; clients connect to an address.
    ctx = tls_context(ca)
    ctx.check_hostname = False
    return ctx


@asynccontextmanager
async def farm_with(fault: str) -> AsyncIterator[casfarm.Farm]:
    async with casfarm.running(servers=3, control=False) as farm:
        farm.inject("cas1", fault)
        yield farm


async def run_clients(client: Callable[[int, Path], str], port: int, ca: Path) -> list[str]:
    answers = []
    for _ in range(CLIENTS):
        answers.append(await trio.to_thread.run_sync(client, port, ca))
    return answers


@pytest.mark.parametrize(
    ("kind", "fault", "client", "expect", "sni"),
    [
        ("https", "hang_tls", https_client, "200 OK", False),
        ("https", "hang_tls", https_client, "200 OK", True),
        ("imaps", "hang_tls", imaps_client, "* OK", False),
        ("pops", "hang_tls", pops_client, "+OK", False),
        ("imap", "hang", imap_client, "* OK", False),
        ("pop", "hang", pop_client, "+OK", False),
        ("smtp", "hang", smtp_client, "250", False),
    ],
)
async def test_every_client_is_served_while_a_hung_server_stays_up(
    kind: str, fault: str, client: Callable[[int, Path], str], expect: str, sni: bool
) -> None:
    async with farm_with(fault) as farm, front(farm, kind, sni=sni) as fe:
        answers = await run_clients(client, fe.port, farm.ca_path)
        hung_connections = farm.counts("cas1").connections.get(kind, 0)
    assert all(expect in a for a in answers), answers
    assert fe.pool.member("cas1").check_state is CheckState.UP
    # The hung server did get traffic, and each of its connections cost one timeout
    # and one replay: no client waited on it longer than that.
    assert hung_connections >= 1
    timeouts = fe.events.counts["first_response_timeout", kind, "cas1"]
    assert timeouts == hung_connections
    replays = sum(v for k, v in fe.events.counts.items() if k[0] == "replayed")
    # Banner protocols: the client waits for the banner, so there is nothing to replay.
    assert replays == (0 if kind in BANNER_KINDS else timeouts)
    assert "first_response_timeout" in {r[3] for r in fe.reports}


async def test_a_crashed_server_is_skipped_on_refused() -> None:
    async with farm_with("crash") as farm, front(farm, "https") as fe:
        answers = await run_clients(https_client, fe.port, farm.ca_path)
    assert all("200 OK" in a for a in answers)
    assert fe.events.counts["connect_failed", "https", "cas1"] >= 1
    assert ("https", "cas1", False, "refused") in fe.reports


async def banner(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = await stream.receive_some(4096)
        assert chunk, "closed before the banner"
        data += chunk
    assert data.startswith(b"* OK")
    return stream


async def ended_abortively(stream: trio.SocketStream) -> bool:
    """True when the next read meets a reset (or EOF) instead of data."""
    with trio.fail_after(CLIENT_TIMEOUT):
        try:
            return await stream.receive_some(4096) == b""
        except trio.BrokenResourceError:
            return True


async def test_a_server_marked_down_has_its_clients_reset() -> None:
    async with casfarm.running(servers=2, control=False) as farm, \
            front(farm, "imap", reset_on_down=True) as fe:
        streams = [await banner(fe.port) for _ in range(4)]
        assert fe.pool.member("cas1").active == 2
        fe.pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        ended = 0
        for stream in streams:
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(b"a1 NOOP\r\n")
                ended += await ended_abortively(stream)
        assert ended == 2  # cas1's two clients; cas2's two got their NOOP answered
        assert fe.pool.member("cas1").active == 0
        async with await banner(fe.port):
            assert fe.pool.member("cas2").active == 1


async def test_the_connection_limit_holds_new_clients_in_the_backlog_until_one_ends() -> None:
    # HAProxy's maxconn: at the limit the frontend stops accepting; the kernel
    # completes the extra client's handshake and it is served once a slot frees.
    settings = TcpFrontendSettings("fe", max_connections=2)
    order: list[str] = []
    async with casfarm.running(servers=1, control=False) as farm, \
            front(farm, "imap", settings=settings) as fe:
        kept = [await banner(fe.port) for _ in range(2)]

        async def extra_client() -> None:
            stream = await banner(fe.port)
            order.append("extra served")
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(extra_client)
            await trio.sleep(0.3)  # room to misbehave: an early banner would come first
            order.append("first closed")
            await kept[0].aclose()
        await kept[1].aclose()
    assert order == ["first closed", "extra served"]
    assert fe.events.counts["refused", "fe", "", "limit"] == 0
    assert fe.events.counts["opened", "fe"] == 3
