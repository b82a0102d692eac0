"""Opening one upstream TCP connection, for both wings: from where, and what goes first.

A server behind the balancer sees the balancer's address unless it is told
the client's. Two ways exist, and a pool picks either or both:

- the PROXY protocol header (lb/proxy_protocol.py), sent before any other
  byte (before the TLS ClientHello when re-encrypting), to servers that
  parse it;
- a transparent source address (HAProxy's `source 0.0.0.0 usesrc clientip`):
  the upstream socket sets IP_TRANSPARENT and binds to the client's address
  before connecting, so the server sees the client itself. The kernel lets a
  socket bind a foreign address only with CAP_NET_ADMIN (or CAP_NET_RAW),
  and the servers' replies reach the balancer only if the network routes the
  client's addresses through it and the balancer delivers them locally
  (docs/operations.md, "Transparent source addresses").

The socket is connected directly for an IP literal: the happy-eyeballs
machinery of `trio.open_tcp_stream` costs a nursery and a resolver call per
connection, which a balancer opening thousands per second does not need.
"""

from __future__ import annotations

import errno
import math
import os
import socket
from dataclasses import dataclass

import trio

from lb.l7.tlsstream import TlsStream
from lb.proxy_protocol import encode
from probes.wire import literal_family

# Not exported by Python's socket module; <linux/in6.h>.
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)


@dataclass(frozen=True)
class Peer:
    """The client's and the frontend's addresses, when the stream is a socket."""

    client: tuple[str, int] | None
    local: tuple[str, int] | None

    @classmethod
    def of(cls, stream: trio.abc.Stream) -> Peer:
        """Both addresses, or None for both when the stream is no (longer a) socket."""
        sock = socket_of(stream)
        if sock is None:
            return cls(None, None)
        try:
            remote, local = sock.getpeername(), sock.getsockname()
        except OSError:
            return cls(None, None)
        return cls((remote[0], remote[1]), (local[0], local[1]))


UNKNOWN_PEER = Peer(None, None)


@dataclass(frozen=True)
class Dial:
    """How one upstream connection is opened, beyond where to.

    Attributes:
        source: the address to bind transparently (the client's), None for
            the kernel's choice.
        preamble: bytes to send first (a PROXY header), before TLS if any.
    """

    source: str | None = None
    preamble: bytes = b""


DIRECT = Dial()


def dial_for(peer: Peer, *, transparent: bool, proxy_protocol: int = 0) -> Dial:
    """How to open a connection on behalf of the client `peer`.

    Args:
        transparent: bind to the client's address (nothing when it is unknown).
        proxy_protocol: the PROXY header version to send first, 0 for none.
    """
    source = peer.client[0] if transparent and peer.client is not None else None
    preamble = b""
    if proxy_protocol:
        preamble = encode(proxy_protocol, peer.client, peer.local)
    return DIRECT if source is None and not preamble else Dial(source, preamble)


async def open_tcp(
    host: str, port: int, dial: Dial = DIRECT, *, deadline: float = math.inf
) -> trio.abc.Stream:
    """A TCP stream to (host, port), from `dial.source`, with `dial.preamble` sent.

    Args:
        deadline: when to give up connecting (trio's clock); the default, never,
            is for callers that hold their own deadline.

    Raises:
        OSError: refused, unreachable, reset; or the transparent bind refused
            (no CAP_NET_ADMIN, or a source of the other family).
        TimeoutError: not connected by `deadline`.
    """
    family = literal_family(host)
    if family is None and dial.source is None:
        with trio.move_on_at(deadline):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            return await _send_preamble(stream, dial.preamble)
        raise TimeoutError(f"connect to {host}:{port} timed out")
    if family is None:
        host, family = await _resolve(host, port)
    stream = trio.SocketStream(await _connect(family, host, port, dial.source, deadline))
    return await _send_preamble(stream, dial.preamble)


async def _send_preamble(stream: trio.abc.Stream, preamble: bytes) -> trio.abc.Stream:
    if preamble:
        try:
            await stream.send_all(preamble)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return stream


async def _connect(
    family: socket.AddressFamily, host: str, port: int, source: str | None, deadline: float
) -> trio.socket.SocketType:
    # The stdlib socket, not trio's: trio's connect costs twice the Python calls
    # (address re-resolution, checkpoints) of this try-then-wait, and its bind of a
    # literal address has nothing to wait for.
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if source is not None:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TRANSPARENT, 1)
            sock.bind((source, 0))
        err = sock.connect_ex((host, port))
        if err == errno.EINPROGRESS:
            err = 0 if _connected(sock) else await _wait_connected(sock, deadline)
        if err:
            raise OSError(err, os.strerror(err))  # the errno's subclass: ConnectionRefusedError…
    except BaseException:
        sock.close()
        raise
    return trio.socket.from_stdlib_socket(sock)


async def _wait_connected(sock: socket.socket, deadline: float) -> int:
    """The connect's errno (0: connected) once it is decided.

    Raises:
        TimeoutError: undecided at `deadline`.
    """
    with trio.CancelScope(deadline=deadline) as bound:  # only here: most connects never wait
        await trio.lowlevel.wait_writable(sock)
    if bound.cancelled_caught:
        raise TimeoutError("connect timed out")
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def _connected(sock: socket.socket) -> bool:
    """True once the handshake is done: on loopback or a LAN it often is as connect returns."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


async def _resolve(host: str, port: int) -> tuple[str, socket.AddressFamily]:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} resolves to no address")
    family, _, _, _, address = infos[0]
    return str(address[0]), family


def socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under `stream` (through TLS layers), or None when it has none."""
    inner: object = stream
    while isinstance(inner, trio.SSLStream | TlsStream):
        inner = inner.transport_stream
    return inner.socket if isinstance(inner, trio.SocketStream) else None
