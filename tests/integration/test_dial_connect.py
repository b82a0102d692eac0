"""lb/dial.py's own connect over real loopback sockets: connected, refused, timed out;
and the L4 default connector, which the frontend trusts to keep its timeout."""

from __future__ import annotations

import socket

import pytest
import trio

from lb.config import ServerConfig
from lb.dial import open_tcp
from lb.l4.connector import BOUNDS_ITSELF, open_plain
from lb.pool import Member


async def test_a_connect_loopback_completes_at_once_is_a_usable_stream() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        stream = await open_tcp("127.0.0.1", listener.getsockname()[1],
                                deadline=trio.current_time() + 5)
        accepted, _ = listener.accept()
        with accepted:
            await stream.send_all(b"ping")
            assert accepted.recv(4) == b"ping"
        await stream.aclose()


async def test_a_refused_connect_raises_connection_refused() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]  # bound, never listening: the kernel refuses
        with pytest.raises(ConnectionRefusedError):
            await open_tcp("127.0.0.1", port, deadline=trio.current_time() + 5)


async def _connect_until_it_hangs(port: int) -> tuple[float, list[trio.abc.Stream]]:
    """Connect through `connect` until one times out: (how long that one took, the others)."""
    opened: list[trio.abc.Stream] = []
    member = Member(ServerConfig("cas1", "127.0.0.1", port, "cas1"))
    start = trio.current_time()
    try:
        for _ in range(8):  # the backlog holds one or two
            start = trio.current_time()
            opened.append(await open_plain(member, 3.0))
    except TimeoutError:
        return trio.current_time() - start, opened
    raise AssertionError("eight connects to a full backlog all connected")


async def test_a_connect_nobody_answers_times_out_at_its_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A listener whose backlog is full drops further SYNs: the connect hangs. The
    # default connector keeps the pool's timeout itself (the frontend adds no scope).
    assert open_plain in BOUNDS_ITSELF
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        with trio.fail_after(10):  # a connector without its own bound fails here, not hangs
            took, opened = await _connect_until_it_hangs(listener.getsockname()[1])
        assert took == pytest.approx(3, abs=0.01)
        for stream in opened:
            await stream.aclose()
