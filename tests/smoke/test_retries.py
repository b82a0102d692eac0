"""A pool's retries through the whole balancer over real sockets: which servers get
the attempts, for `retries = N` and `retry_to = "another" | "same" | "off"`.

Every server here counts its connections, reads what comes and resets. How that
fails an attempt depends on the wing:

- L4 (`tcp` frontend): the server closed before answering; retried while
  nothing reached the client, up to 1 + retries attempts.
- L7 re-encrypting: the TLS handshake fails, a connect failure; retried the same.
- L7 plain: the request was sent and the server reset before any response
  byte; a bodiless GET is replayed once (never more), unless retries are 0 or off.

Counts are compared sorted: which server the pool picks first is round robin's
business, how many attempts go where is the policy's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from lb.app import Balancer
from lb.l4.closing import reset
from tests.farmclient import HttpClient
from tests.smoke.test_app_l7 import serving

pytestmark = pytest.mark.smoke

REQUEST = b"GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Server:
    """A server that counts connections; it resets each after reading, or answers 200."""

    def __init__(self, *, answers: bool = False) -> None:
        self.answers = answers
        self.connections = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await stream.receive_some(65536)
            if self.answers:
                await stream.send_all(ANSWER)
                await stream.aclose()
                return
        except trio.BrokenResourceError:
            pass
        await reset(stream)


@asynccontextmanager
async def balanced(servers: list[Server], pool: str, mode: str) -> AsyncIterator[Balancer]:
    """`servers` on loopback behind one frontend of `mode` and the pool settings `pool`."""
    async with trio.open_nursery() as nursery:
        members = []
        for number, server in enumerate(servers, 1):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            members.append(f'{{ name = "cas{number}", address = "127.0.0.1:{port}" }}')
            nursery.start_soon(trio.serve_listeners, server.handle, listeners)
        route = "pool" if mode == "tcp" else "default_pool"
        config = f"""
[frontends.front]
bind = "127.0.0.1:9443"
mode = "{mode}"
{route} = "p"

[pools.p]
servers = [{", ".join(members)}]
{pool}
"""
        async with serving(config) as app:
            yield app
        nursery.cancel_scope.cancel()


async def l4_exchange(app: Balancer) -> bytes:
    """Send one request through the tcp frontend; every byte that came back."""
    stream = await trio.open_tcp_stream(*app.addresses["front"])
    received = b""
    try:
        await stream.send_all(REQUEST)
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:  # reset: as a dead server would have done
        pass
    finally:
        await stream.aclose()
    return received


async def l7_status(app: Balancer) -> int:
    """The status of one GET through the http frontend."""
    client = HttpClient(await trio.open_tcp_stream(*app.addresses["front"]), "mail.contoso.test")
    try:
        return (await client.request("GET", "/owa/")).status
    finally:
        await client.aclose()


def policy(retries: int, to: str) -> str:
    """A pool's retry settings, as TOML lines."""
    return f'retries = {retries}\nretry_to = "{to}"'


COUNTED = [  # pool settings → connections per server, sorted
    pytest.param(policy(2, "another"), [1, 1, 1], id="2-another"),
    pytest.param(policy(1, "another"), [0, 1, 1], id="1-another"),
    pytest.param(policy(2, "same"), [0, 0, 3], id="2-same"),
    pytest.param(policy(1, "same"), [0, 0, 2], id="1-same"),
    pytest.param(policy(3, "off"), [0, 0, 1], id="3-off"),
    pytest.param(policy(0, "another"), [0, 0, 1], id="0-another"),
]


@pytest.mark.parametrize(("pool", "counts"), COUNTED)
async def test_l4_attempts_go_where_the_retry_policy_says(pool: str, counts: list[int]) -> None:
    servers = [Server() for _ in range(3)]
    async with balanced(servers, pool, "tcp") as app:
        assert await l4_exchange(app) == b""
    assert sorted(s.connections for s in servers) == counts


@pytest.mark.parametrize(("pool", "counts"), COUNTED)
async def test_l7_connect_failures_go_where_the_retry_policy_says(
    pool: str, counts: list[int]
) -> None:
    servers = [Server() for _ in range(3)]
    async with balanced(servers, pool + "\ntls = { verify = false }", "http") as app:
        assert await l7_status(app) == 503
    assert sorted(s.connections for s in servers) == counts


@pytest.mark.parametrize(("pool", "counts"), [
    pytest.param(policy(3, "another"), [0, 1, 1], id="3-another"),
    pytest.param(policy(3, "same"), [0, 0, 2], id="3-same"),
    pytest.param(policy(3, "off"), [0, 0, 1], id="3-off"),
    pytest.param(policy(0, "another"), [0, 0, 1], id="0-another"),
])
async def test_l7_a_reset_request_is_replayed_once_where_the_policy_says(
    pool: str, counts: list[int]
) -> None:
    servers = [Server() for _ in range(3)]
    async with balanced(servers, pool, "http") as app:
        assert await l7_status(app) == 502
    assert sorted(s.connections for s in servers) == counts


@pytest.mark.parametrize(("mode", "servers"), [
    ("tcp", 2),  # at L4 each retry may go on
    ("http", 1),  # at L7 one replay
])
async def test_a_retry_on_another_server_serves_the_client(mode: str, servers: int) -> None:
    good = Server(answers=True)
    failing = [Server() for _ in range(servers)]
    async with balanced([*failing, good], policy(2, "another"), mode) as app:
        for _ in range(servers + 1):  # round robin: each server is the first pick once
            if mode == "tcp":
                assert (await l4_exchange(app)).endswith(b"\r\n\r\nok")
            else:
                assert await l7_status(app) == 200
    assert good.connections == servers + 1
