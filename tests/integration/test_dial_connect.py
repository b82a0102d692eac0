"""lb/dial.py's own connect over real loopback sockets: connected, refused, timed out."""

from __future__ import annotations

import socket

import pytest
import trio

from lb.dial import open_tcp


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


async def test_a_connect_nobody_answers_times_out_at_its_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A listener whose backlog is full drops further SYNs: the connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        opened: list[trio.abc.Stream] = []
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            for _ in range(8):  # the backlog holds one or two
                start = trio.current_time()
                opened.append(await open_tcp("127.0.0.1", port, deadline=start + 3))
        assert trio.current_time() - start == pytest.approx(3, abs=0.01)
        assert len(opened) < 8
        for stream in opened:
            await stream.aclose()
