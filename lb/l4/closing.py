"""How an L4 relay's two ends are closed: at once, abortively, or each as the relay ended."""

from __future__ import annotations

import contextlib
import socket
import struct

import trio

from lb.l4.pump import RelayResult, Side

_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST


async def reset(stream: trio.abc.Stream) -> None:
    """Close a stream abortively: an RST for sockets, so the peer sees a failure."""
    if isinstance(stream, trio.SocketStream):
        drop(stream, abort=True)
    else:
        await close(stream)


def drop(stream: trio.SocketStream, *, abort: bool = False) -> None:
    """Close a socket stream now, with an RST when `abort`.

    Synchronous, for the parker, which ends a parked relay outside any task
    (lb/l4/parking.py). Closing twice is harmless.
    """
    if abort:
        with contextlib.suppress(OSError):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    stream.socket.close()


async def close(stream: trio.abc.Stream) -> None:
    """Close a stream now, without waiting on the peer (like trio.aclose_forcefully).

    A socket stream is closed synchronously: `SocketStream.aclose` does nothing
    more, and skipping the cancel scope and checkpoint matters when thousands of
    connections close per second. This also never raises Cancelled, so it is
    safe in `finally` blocks of cancelled tasks.
    """
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    else:
        await trio.aclose_forcefully(stream)


async def close_after(
    result: RelayResult, client: trio.abc.Stream, server: trio.abc.Stream
) -> None:
    """Close both ends the way the relay ended: a failure on one side resets the other.

    Passing a reset on (instead of a clean FIN) keeps a truncated transfer from
    looking complete to the peer that is still there.
    """
    for side, stream in ((Side.CLIENT, client), (Side.SERVER, server)):
        if result.failed is None or result.failed is side:
            await close(stream)
        else:
            await reset(stream)
