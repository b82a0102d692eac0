"""The admin API's guards over real loopback sockets: Host, Origin, the marker, the token.

Each request is written byte for byte, as a browser, a rebinding page or a
careless script would send it, and must leave the pools untouched when refused.
"""

from __future__ import annotations

import json

import pytest
import trio
from prometheus_client import CollectorRegistry

from lb.admin import ReloadHook, serve_admin
from lb.metrics import Metrics
from lb.pool import Pool
from probes.state import AdminState
from tests.smoke.test_admin_http import SAFETY
from tests.smoke.test_admin_pools import make_pools

pytestmark = pytest.mark.smoke

FORM = b"content-type: application/x-www-form-urlencoded\r\n"
MARKER = b"x-caslb-request: 1\r\n"


class Admin:
    """An admin server on 127.0.0.1 over real pools, spoken to in raw bytes."""

    def __init__(self, port: int, pools: dict[str, Pool]) -> None:
        self.port, self.pools = port, pools
        self.host = f"127.0.0.1:{port}".encode()

    async def send(self, head: bytes, body: bytes = b"") -> tuple[int, str]:
        """One request (`head`: request line and fields); returns the status and any error."""
        with trio.fail_after(SAFETY):
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with stream:
                length = f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
                await stream.send_all(head + length + b"\r\n" + body)
                chunks = []
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
        answer = b"".join(chunks)
        head, _, body = answer.partition(b"\r\n\r\n")
        error = json.loads(body).get("error", "") if b"application/json" in head else ""
        return int(answer[9:12]), str(error)

    async def drain(self, fields: bytes, body: bytes = b"", *, host: bytes | None = None
                    ) -> tuple[int, str]:
        """POST a drain of cas1 in pool owa with these extra `fields`."""
        named = self.host if host is None else host
        head = b"POST /servers/cas1/drain?pool=owa HTTP/1.1\r\nhost: " + named + b"\r\n"
        return await self.send(head + fields, body)

    def admin_state(self) -> AdminState:
        return self.pools["owa"].member("cas1").admin


async def start(nursery: trio.Nursery, *, token: str | None = None,
                hosts: tuple[str, ...] = (), on_reload: ReloadHook | None = None) -> Admin:
    pools = make_pools()
    listeners = await nursery.start(
        lambda task_status: serve_admin(
            ("127.0.0.1", 0), pools=pools, metrics=Metrics(CollectorRegistry()),
            token=token, hosts=hosts, on_reload=on_reload, task_status=task_status,
        )
    )
    return Admin(listeners[0].socket.getsockname()[1], pools)


@pytest.fixture
async def admin(nursery: trio.Nursery) -> Admin:
    return await start(nursery)


@pytest.mark.parametrize(
    "fields",
    [b"", FORM, b"content-type: text/plain\r\n", b"x-caslb-request: yes\r\n"],
    ids=["no-type", "form", "text", "marker-wrong-value"],
)
async def test_a_state_change_without_the_marker_is_refused(admin: Admin, fields: bytes) -> None:
    status, error = await admin.drain(fields, b"a=1" if fields == FORM else b"")
    assert status == 403
    assert "application/json or X-Caslb-Request: 1" in error
    assert admin.admin_state() is AdminState.READY


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        (MARKER, b""),
        (b"content-type: application/json\r\n", b""),
        (b"content-type: application/json\r\n", b"{}"),
        (b"Content-Type: Application/JSON; charset=utf-8\r\n", b" {} "),
    ],
)
async def test_a_marked_state_change_is_served(admin: Admin, fields: bytes, body: bytes) -> None:
    assert (await admin.drain(fields, body))[0] == 200
    assert admin.admin_state() is AdminState.DRAIN


@pytest.mark.parametrize("body", [b'{"pool": "ews"}', b"[]", b"a=1", b"\xff"])
async def test_a_json_action_body_other_than_an_empty_object_is_a_bad_request(
    admin: Admin, body: bytes
) -> None:
    status, error = await admin.drain(b"content-type: application/json\r\n", body)
    assert (status, admin.admin_state()) == (400, AdminState.READY)
    assert "send {} or nothing" in error


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null",
                                    b"https://127.0.0.1:{port}", b"http://localhost:{port}"])
async def test_a_foreign_origin_is_refused_for_reads_and_writes(
    admin: Admin, origin: bytes
) -> None:
    line = b"origin: " + origin.replace(b"{port}", str(admin.port).encode()) + b"\r\n"
    status, error = await admin.drain(line + MARKER)
    assert status == 403 and "may not use this admin API" in error
    assert admin.admin_state() is AdminState.READY
    read = b"GET /status HTTP/1.1\r\nhost: " + admin.host + b"\r\n" + line
    assert (await admin.send(read))[0] == 403


async def test_the_admin_api_s_own_origin_is_served(admin: Admin) -> None:
    same = b"origin: http://" + admin.host + b"\r\n"
    assert (await admin.drain(same + MARKER))[0] == 200
    assert admin.admin_state() is AdminState.DRAIN


@pytest.mark.parametrize(
    "host", [b"evil.example", b"evil.example:{port}", b"127.0.0.1", b"127.0.0.1:1",
             b"localhost", b"127.0.0.2:{port}", b""],
)
async def test_a_host_that_does_not_name_the_listener_is_misdirected(
    admin: Admin, host: bytes
) -> None:
    named = host.replace(b"{port}", str(admin.port).encode())
    status, error = await admin.drain(MARKER, host=named)
    assert (status, admin.admin_state()) == (421, AdminState.READY)
    assert "is not this admin API" in error
    read = b"GET /metrics HTTP/1.1\r\nhost: " + named + b"\r\n"
    assert (await admin.send(read))[0] == 421


@pytest.mark.parametrize("host", [b"127.0.0.1", b"localhost", b"LocalHost", b"[::1]"])
async def test_loopback_names_of_the_listener_are_served(admin: Admin, host: bytes) -> None:
    named = host + b":" + str(admin.port).encode()
    read = b"GET /metrics HTTP/1.1\r\nhost: " + named + b"\r\n"
    assert (await admin.send(read))[0] == 200


async def test_configured_names_are_served(nursery: trio.Nursery) -> None:
    admin = await start(nursery, hosts=("lb1.lab.example",))
    named = b"lb1.lab.example:" + str(admin.port).encode()
    assert (await admin.send(b"GET /status HTTP/1.1\r\nhost: " + named + b"\r\n"))[0] == 200
    assert (await admin.drain(MARKER, host=b"lb2.lab.example"))[0] == 421


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer s3cr\xc3\xa9t", b"Bearer \xff\xfe", b"Bearer", b"Bearer ", b"s3cret",
     b"Bearer s3cret2", b"Basic czNjcmV0", b"Bearer  \t"],
)
async def test_a_wrong_or_malformed_token_is_401_never_500(
    nursery: trio.Nursery, authorization: bytes
) -> None:
    admin = await start(nursery, token="s3cret")
    status, error = await admin.drain(MARKER + b"authorization: " + authorization + b"\r\n")
    assert (status, admin.admin_state()) == (401, AdminState.READY)
    assert "bearer token" in error


async def test_a_non_ascii_token_matches_its_utf8_bytes(nursery: trio.Nursery) -> None:
    admin = await start(nursery, token="s3crét")
    assert (await admin.drain(MARKER + "authorization: Bearer s3crét\r\n".encode()))[0] == 200
    assert admin.admin_state() is AdminState.DRAIN


async def test_the_token_does_not_replace_the_marker(nursery: trio.Nursery) -> None:
    admin = await start(nursery, token="s3cret")
    status, _ = await admin.drain(FORM + b"authorization: Bearer s3cret\r\n", b"a=1")
    assert (status, admin.admin_state()) == (403, AdminState.READY)


async def test_reload_is_a_guarded_post_and_only_where_something_reloads(
    nursery: trio.Nursery,
) -> None:
    asked: list[str] = []
    admin = await start(nursery, token="s3cret", on_reload=lambda: asked.append("reload"))
    head = b"POST /reload HTTP/1.1\r\nhost: " + admin.host + b"\r\n"
    assert (await admin.send(head + MARKER))[0] == 401
    assert (await admin.send(head + b"authorization: Bearer s3cret\r\n"))[0] == 403
    assert asked == []
    assert (await admin.send(b"GET /reload HTTP/1.1\r\nhost: " + admin.host + b"\r\n"))[0] == 405
    assert (await admin.send(head + MARKER + b"authorization: Bearer s3cret\r\n"))[0] == 202
    assert asked == ["reload"]
    without = await start(nursery)
    head = b"POST /reload HTTP/1.1\r\nhost: " + without.host + b"\r\n"
    assert (await without.send(head + MARKER)) == (404, "no such path '/reload'")
