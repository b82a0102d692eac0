"""Opening upstream connections, naming why one failed, and a stream's two addresses.

The default connector connects a bare trio socket to an IP literal: the
happy-eyeballs machinery of `trio.open_tcp_stream` costs a nursery and a
resolver call per connection, which an L4 frontend opening thousands per second
does not need. Host names still go through `open_tcp_stream`.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from lb.pool import Member

Connector = Callable[[Member, float], Awaitable[trio.abc.Stream]]
"""connector(member, timeout) → a connected stream; raises OSError or TimeoutError."""


async def open_plain(member: Member, timeout: float) -> trio.abc.Stream:
    """A plain TCP stream to `member`; unbounded, for callers that hold their own deadline.

    Raises:
        OSError: refused, unreachable, reset.
    """
    host, port = member.host, member.port
    family = _literal_family(host)
    if family is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@functools.lru_cache(maxsize=1024)
def _literal_family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP literal, None for a host name.

    Memoised: parsing the address on every connection cost more than the
    connect's own Python work, and a farm has few distinct server addresses.
    """
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def failure_reason(exc: BaseException) -> str:
    """A short, stable name for why an upstream attempt failed (a log and report reason)."""
    if isinstance(exc, TimeoutError | trio.TooSlowError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | trio.BrokenResourceError):
        return "reset"
    return "error"


@dataclass(frozen=True)
class Peer:
    """The client's and the frontend's addresses, when the stream is a socket."""

    client: tuple[str, int] | None
    local: tuple[str, int] | None

    @classmethod
    def of(cls, stream: trio.abc.Stream) -> Peer:
        """Both addresses, or None for both when the stream is no (longer a) socket."""
        if not isinstance(stream, trio.SocketStream):
            return cls(None, None)
        try:
            remote, local = stream.socket.getpeername(), stream.socket.getsockname()
        except OSError:
            return cls(None, None)
        return cls((remote[0], remote[1]), (local[0], local[1]))
