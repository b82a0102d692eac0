"""H11Stream over a real socket pair: bytes already there are read without a wait,
and the idle and header deadlines still hold (mock clock, so times are exact)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import h11
import pytest
import trio
import trio.testing

from lb.l7.adapter import H11Stream, HeaderTimeout, IdleTimeout

HEAD = b"GET /owa/ HTTP/1.1\r\nHost: mail.contoso.com\r\n\r\n"


@contextlib.contextmanager
def _pair(role: type[h11.SERVER] | type[h11.CLIENT] = h11.SERVER
          ) -> Iterator[tuple[H11Stream, trio.socket.SocketType]]:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        yield H11Stream(trio.SocketStream(ours), h11.Connection(role)), theirs


async def test_a_request_already_on_the_socket_is_read_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with _pair() as (io, peer):
        await peer.send(HEAD)
        start = trio.current_time()
        event = await io.next_request(start + 30, 10)
        assert isinstance(event, h11.Request)
        assert event.target == b"/owa/"
        assert trio.current_time() == start


async def test_bytes_that_arrive_past_the_idle_deadline_are_an_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with _pair() as (io, peer):
        await peer.send(HEAD)
        with pytest.raises(IdleTimeout):
            await io.next_request(trio.current_time() - 1, 10)


async def test_a_silent_client_times_out_at_the_idle_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with _pair() as (io, _peer):
        start = trio.current_time()
        with pytest.raises(IdleTimeout):
            await io.next_request(start + 30, 10)
        assert trio.current_time() == start + 30


async def test_a_started_head_must_finish_within_the_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with _pair() as (io, peer):
        start = trio.current_time()

        async def slow_client() -> None:
            await trio.sleep(5)
            await peer.send(b"GET /owa/ HTTP/1.1\r\n")
            await trio.sleep(8)
            await peer.send(b"Host: mail.contoso.com\r\n")  # still no blank line

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_client)
            with pytest.raises(HeaderTimeout):
                await io.next_request(start + 30, 10)
        assert trio.current_time() == start + 5 + 10


async def test_event_now_answers_need_data_rather_than_wait() -> None:
    with _pair(h11.CLIENT) as (io, peer):
        io.conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        io.conn.send(h11.EndOfMessage())
        assert await io.event_now() is h11.NEED_DATA
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        response = await io.event_now()
        assert isinstance(response, h11.Response)
        assert response.status_code == 200
