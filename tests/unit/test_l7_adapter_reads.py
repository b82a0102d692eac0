"""HttpStream over a real socket pair: bytes already there are read without a wait,
and the idle and header deadlines still hold (mock clock, so times are exact)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from lb.l7.adapter import HeaderTimeout, HttpStream, IdleTimeout
from lb.l7.wire.connection import WireConnection
from lb.l7.wire.events import NEED_DATA, Data, EndOfMessage, Request, Response

HEAD = b"GET /owa/ HTTP/1.1\r\nHost: mail.contoso.com\r\n\r\n"


@contextlib.contextmanager
def _pair(*, server: bool = True) -> Iterator[tuple[HttpStream, trio.socket.SocketType]]:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        yield HttpStream(trio.SocketStream(ours), WireConnection(server=server)), theirs


async def test_a_request_already_on_the_socket_is_read_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with _pair() as (io, peer):
        await peer.send(HEAD)
        start = trio.current_time()
        event = await io.next_request(start + 30, 10)
        assert isinstance(event, Request)
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
    with _pair(server=False) as (io, peer):
        io.conn.send(Request(b"GET", b"/", [(b"host", b"x")]))
        io.conn.send(EndOfMessage())
        assert await io.event_now() is NEED_DATA
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        response = await io.event_now()
        assert isinstance(response, Response)
        assert response.status_code == 200



async def _body_chunks(io: HttpStream) -> list[int]:
    """The sizes of one request's body events, then a 204 so the next cycle starts."""
    sizes = []
    assert isinstance(await io.next_event(), Request)
    while isinstance(event := await io.next_event(), Data):
        sizes.append(len(event.data))
    assert isinstance(event, EndOfMessage)
    io.conn.send(Response(204, []))
    io.conn.send(EndOfMessage())
    io.conn.start_next_cycle()
    return sizes


def _post(size: int) -> bytes:
    head = f"POST /ews/ HTTP/1.1\r\nHost: mail.contoso.com\r\nContent-Length: {size}\r\n\r\n"
    return head.encode() + b"x" * size


async def test_a_bulk_body_is_read_in_growing_reads_and_a_small_one_in_a_first_size_read(
) -> None:
    # the TLS path (a stream, not a socket): every byte is there before the first read
    send, receive = trio.testing.memory_stream_one_way_pair()
    io = HttpStream(receive, WireConnection(server=True), receive_size=256 * 1024)
    mib = 1024 * 1024
    await send.send_all(_post(mib))
    first = await _body_chunks(io)
    assert sum(first) == mib
    # reads of 64 KiB, 128 KiB, then 256 KiB: 6 events where a fixed 64 KiB made 16
    assert len(first) <= 6
    assert max(first) == 256 * 1024
    await send.send_all(_post(100))
    assert await _body_chunks(io) == [100]
    # the small request's short read brought the read size back to the first size
    await send.send_all(_post(mib))
    again = await _body_chunks(io)
    assert sum(again) == mib
    assert again[0] <= 64 * 1024
