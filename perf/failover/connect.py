"""How a client reaches a service: the addresses it resolved, tried in turn.

Theory of operation. A client is given the addresses its name resolved to: one
for a balancer's virtual IP, one per CAS server for DNS round robin. It tries
them in order, each under its own connect timeout, the way Windows' socket
layer does: a refused connection (RST) moves on at once, a silent host costs
the whole connect timeout (about 21 s on Windows: SYN retries at 3, 6 and 12 s)
before the next address is tried. Where the rotation starts is the caller's
choice (DNS servers rotate the answer), so clients spread over the servers.

Errors are mapped once, here, to short kinds the measures count.
"""

from __future__ import annotations

import errno
import functools
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import trio

Address = tuple[str, int]


class ClientError(Exception):
    """A client-visible failure, with a short kind ("refused", "timeout", ...).

    Attributes:
        kind: what the measures count it as.
        before_response: True when nothing of the response had arrived, so a
            client may safely retry on a fresh connection.
    """

    def __init__(self, kind: str, detail: str = "", *, before_response: bool = True) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.before_response = before_response


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects for one protocol.

    Attributes:
        addresses: what the name resolved to, tried in this order after rotation.
        server_name: the name the client asks for (TLS SNI and HTTP Host).
        tls: True when TLS starts at the first byte.
    """

    addresses: tuple[Address, ...]
    server_name: str
    tls: bool = True

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError(f"endpoint {self.server_name!r} has no address")
        for host, _ in self.addresses:
            if not host.startswith("127."):
                raise ValueError(f"address {host!r} is not loopback")


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """TLS for the harness clients: SNI sent, certificates not verified.

    The clients measure availability, not trust; each design's own checks
    decide about server certificates. One context is shared: building one loads
    the CA store (tens of ms), too dear for dozens of new connections a second.
    Sharing it resumes no session (the client side only resumes when asked to),
    so every connection still does a full handshake.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def map_os_error(exc: BaseException) -> ClientError:
    """Translate a socket or TLS failure into the kind a measure counts."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        return map_os_error(exc.__cause__)
    if isinstance(exc, ConnectionRefusedError):
        return ClientError("refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return ClientError("reset")
    if isinstance(exc, ssl.SSLError):
        return ClientError("tls", exc.__class__.__name__)
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return ClientError("reset")
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
        return ClientError("reset")
    if isinstance(exc, OSError):
        return ClientError("oserror", errno.errorcode.get(exc.errno or 0, str(exc.errno)))
    return ClientError("error", type(exc).__name__)


async def _connect_one(address: Address, timeout: float) -> trio.SocketStream:
    with trio.move_on_after(timeout) as scope:
        try:
            return await trio.open_tcp_stream(*address)
        except OSError as exc:
            # open_tcp_stream wraps every attempt's error; the first says why
            raise map_os_error(exc.__cause__ or exc) from exc
    assert scope.cancelled_caught
    raise ClientError("connect-timeout", f"{address[0]}:{address[1]}")


async def open_stream(
    endpoint: Endpoint, connect_timeout: float, start: int = 0
) -> tuple[trio.abc.Stream, Address]:
    """Connect (and handshake TLS) to the first address that answers.

    Args:
        endpoint: where to go.
        connect_timeout: per address, as the client's OS would apply it.
        start: index of the first address to try (the DNS rotation).

    Returns:
        The open stream and the address it reached.

    Raises:
        ClientError: the last address's failure when none answered.
    """
    order = _rotated(endpoint.addresses, start)
    last = ClientError("refused")
    for address in order:
        try:
            sock = await _connect_one(address, connect_timeout)
        except ClientError as exc:
            last = exc
            continue
        if not endpoint.tls:
            return sock, address
        stream = trio.SSLStream(sock, client_tls_context(), server_hostname=endpoint.server_name)
        try:
            with trio.fail_after(connect_timeout):
                await stream.do_handshake()
        except BaseException as exc:
            # closed whatever ended the handshake, cancellation included
            await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.TooSlowError):
                raise ClientError("tls-timeout") from None
            if isinstance(exc, OSError | trio.BrokenResourceError | ssl.SSLError):
                raise map_os_error(exc) from exc
            raise
        return stream, address
    raise last


def _rotated(addresses: Sequence[Address], start: int) -> list[Address]:
    k = start % len(addresses)
    return [*addresses[k:], *addresses[:k]]
