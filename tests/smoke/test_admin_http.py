"""Admin API over real loopback sockets: routing errors, tokens, malformed peers."""

from __future__ import annotations

import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import h11
import pytest
import trio
from prometheus_client import CollectorRegistry

from lb.admin import AdminBindError, check_bind, serve_admin
from lb.metrics import Metrics

pytestmark = pytest.mark.smoke

HOST = "127.0.0.1"
# Only a bound on a broken test; no assertion depends on it.
SAFETY = 10
MARKED = (("x-caslb-request", "1"),)


async def start_admin(
    nursery: trio.Nursery, pools: Mapping[str, Any] | None = None, *, token: str | None = None
) -> tuple[int, Metrics]:
    metrics = Metrics(CollectorRegistry())
    listeners = await nursery.start(
        lambda task_status: serve_admin(
            (HOST, 0), pools=pools or {}, metrics=metrics, token=token, task_status=task_status
        )
    )
    return listeners[0].socket.getsockname()[1], metrics


async def http(
    port: int, method: str, target: str, *, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; returns status, headers, body."""
    with trio.fail_after(SAFETY):
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            return await exchange(stream, h11.Connection(h11.CLIENT), method, target, headers)


def host_of(stream: trio.abc.Stream) -> str:
    """The Host value naming the listener a client stream is connected to."""
    assert isinstance(stream, trio.SocketStream)
    host, port = stream.socket.getpeername()[:2]
    return f"{host}:{port}"


async def exchange(
    stream: trio.abc.Stream, conn: h11.Connection, method: str, target: str,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[int, dict[str, str], bytes]:
    # The Host this socket was sent to, and the marker every state change needs.
    head = [("host", host_of(stream)), ("content-length", "0"), *MARKED, *headers]
    await stream.send_all(
        conn.send(h11.Request(method=method, target=target, headers=head))
        + (conn.send(h11.EndOfMessage()) or b"")
    )
    status, got, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            got = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, got, body


async def raw(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, read until the server closes."""
    with trio.fail_after(SAFETY):
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            await stream.send_all(data)
            await stream.send_eof()
            chunks = []
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
            return b"".join(chunks)


@pytest.fixture
async def admin(nursery: trio.Nursery) -> AsyncIterator[int]:
    port, _ = await start_admin(nursery)
    yield port


async def test_status_of_nothing_is_an_empty_document(admin: int) -> None:
    status, headers, body = await http(admin, "GET", "/status")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"pools": {}, "frontends": {}}


@pytest.mark.parametrize(
    ("method", "target", "code", "allow", "message"),
    [
        ("POST", "/metrics", 405, "GET", "method POST not allowed on /metrics"),
        ("DELETE", "/status", 405, "GET", "method DELETE not allowed"),
        ("GET", "/servers/cas1/drain", 405, "POST", "method GET not allowed"),
        ("GET", "/nowhere", 404, None, "no such path '/nowhere'"),
        ("POST", "/servers/cas1/explode", 400, None, "unknown action 'explode'"),
        ("POST", "/servers/cas1/drain", 404, None, "unknown server 'cas1'"),
        ("POST", "/servers/cas1/drain?pool=owa", 404, None, "unknown pool 'owa'"),
        ("POST", "/servers/cas1/drain?protocol=ews", 404, None, "no pool serves protocol 'ews'"),
        ("POST", "/servers/cas1/drain?pool=a&protocol=b", 400, None, "not both"),
        ("POST", "/servers/cas1/drain?colour=red", 400, None, "unknown query parameter 'colour'"),
        ("GET", "*", 400, None, "bad request target '*'"),
    ],
)
async def test_bad_requests_get_a_named_error(
    admin: int, method: str, target: str, code: int, allow: str | None, message: str
) -> None:
    status, headers, body = await http(admin, method, target)
    assert status == code
    assert message in json.loads(body)["error"]
    assert headers.get("allow") == allow


async def test_keep_alive_serves_several_requests_on_one_connection(admin: int) -> None:
    with trio.fail_after(SAFETY):
        stream = await trio.open_tcp_stream(HOST, admin)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            for target in ("/status", "/metrics", "/"):
                status, _, body = await exchange(stream, conn, "GET", target)
                assert status == 200 and body
                conn.start_next_cycle()


async def test_head_gets_an_answer_without_body_and_the_connection_goes_on(admin: int) -> None:
    with trio.fail_after(SAFETY):
        stream = await trio.open_tcp_stream(HOST, admin)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            status, _, body = await exchange(stream, conn, "HEAD", "/status")
            assert (status, body) == (405, b"")
            conn.start_next_cycle()
            status, _, _ = await exchange(stream, conn, "GET", "/status")
            assert status == 200


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        (b"POST /servers/a/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n"
         + b"b" * 20_000, b"413"),
    ],
)
async def test_malformed_requests_get_4xx_and_a_close_and_the_server_keeps_serving(
    admin: int, garbage: bytes, code: bytes
) -> None:
    answer = await raw(admin, garbage)
    assert answer.startswith(b"HTTP/1.1 " + code), answer[:80]
    assert b"connection: close" in answer.lower()
    status, _, _ = await http(admin, "GET", "/status")
    assert status == 200


async def test_peers_that_vanish_do_not_stop_the_server(admin: int) -> None:
    assert await raw(admin, b"") == b""  # connect, close at once
    # Half a head, then EOF: the half-closed peer can still read why it failed.
    assert (await raw(admin, b"GET /status HTTP/1.1\r\nHo")).startswith(b"HTTP/1.1 400")
    # A peer that resets mid-request.
    with trio.fail_after(SAFETY):
        stream = await trio.open_tcp_stream(HOST, admin)
        await stream.send_all(b"GET /status HTTP/1.1\r\n")
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
    status, _, _ = await http(admin, "GET", "/status")
    assert status == 200


async def test_token_guards_actions_but_not_reads(nursery: trio.Nursery) -> None:
    port, _ = await start_admin(nursery, token="s3cret")
    status, headers, body = await http(port, "POST", "/servers/cas1/drain")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    wrong = (("authorization", "Bearer nope"),)
    assert (await http(port, "POST", "/servers/cas1/drain", headers=wrong))[0] == 401
    basic = (("authorization", "Basic s3cret"),)
    assert (await http(port, "POST", "/servers/cas1/drain", headers=basic))[0] == 401
    right = (("authorization", "Bearer s3cret"),)
    status, _, body = await http(port, "POST", "/servers/cas1/drain", headers=right)
    assert status == 404  # past the token: the server name is what is wrong now
    assert "unknown server 'cas1'" in json.loads(body)["error"]
    assert (await http(port, "GET", "/status"))[0] == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "admin.example"])
def test_binding_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(AdminBindError, match=f"refusing to bind the admin API to '{host}'"):
        check_bind(host, None)
    check_bind(host, "s3cret")  # allowed once a token protects it


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    check_bind(host, None)


async def test_serve_admin_refuses_a_public_address_before_binding() -> None:
    with pytest.raises(AdminBindError):
        await serve_admin(("0.0.0.0", 0), pools={}, metrics=Metrics(CollectorRegistry()))


async def test_metrics_are_gzipped_for_a_scraper_that_asks(admin: int) -> None:
    _, plain_headers, plain = await http(admin, "GET", "/metrics")
    status, headers, body = await http(admin, "GET", "/metrics",
                                       headers=(("accept-encoding", "gzip"),))
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain_headers and plain_headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body).split(b"\n")[:3] == plain.split(b"\n")[:3]
    assert len(body) < len(plain) / 3
    _, refused, _ = await http(admin, "GET", "/metrics",
                               headers=(("accept-encoding", "gzip;q=0, identity"),))
    assert "content-encoding" not in refused
