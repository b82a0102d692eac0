"""One listening port of a simulated server, kept across crashes and black holes.

Theory of operation: a slot owns a (host, port). It is OPEN (a listener and an
accept loop), CLOSED (nothing bound: SYNs are answered by RST, as after a
crash) or BLACKHOLE. Linux loopback cannot drop packets without privileges, so
a black hole is made from the accept queue: a socket listening with backlog 0
holds one queued connection; once our own filler connection occupies it, the
kernel drops every further SYN (tcp_abort_on_overflow is 0 by default), and
clients' connect() calls time out. The port is chosen once (port 0 → an
ephemeral port) and reused on every reopen, so clearing a fault brings the
server back where clients expect it. Every transition is synchronous, which
lets the farm's inject/clear be plain calls.
"""

from __future__ import annotations

import enum
import errno
import select
import socket
from collections.abc import Awaitable, Callable

import trio

AcceptHandler = Callable[[str, trio.SocketStream], Awaitable[None]]

_BACKLOG = 1024
_MAX_FILLERS = 8


class SlotMode(enum.Enum):
    """What a port currently does with a SYN."""

    OPEN = "open"
    CLOSED = "closed"
    BLACKHOLE = "blackhole"


def _bound_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _fill_accept_queue(host: str, port: int) -> list[socket.socket]:
    """Connect to a backlog-0 listener until a SYN goes unanswered.

    On loopback the handshake of a connection the kernel accepts completes
    inside connect(), so a socket still not writable right after it shows that
    the queue is full. That last socket keeps retrying its SYN harmlessly until
    it is closed.
    """
    fillers: list[socket.socket] = []
    for _ in range(_MAX_FILLERS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        fillers.append(sock)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, f"cannot fill the accept queue of {host}:{port}")
        _, writable, _ = select.select([], [sock], [], 0)
        if not writable:
            return fillers
    return fillers


class ListenerSlot:
    """One listening port of one server.

    Args:
        kind: the listener's name ("https", "imap", ...), passed to `on_accept`.
        host: the loopback address to bind.
        port: the port to bind (0: pick one on first open, then keep it).
        on_accept: runs one accepted connection.
        nursery: where accept loops and connection tasks run.
    """

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        on_accept: AcceptHandler,
        nursery: trio.Nursery,
    ) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self._on_accept = on_accept
        self._nursery = nursery
        self.mode = SlotMode.CLOSED
        self._listener: trio.SocketListener | None = None
        self._hole: list[socket.socket] = []

    def set_mode(self, mode: SlotMode) -> None:
        """Move the port to `mode` (a no-op when already there).

        Raises:
            OSError: when the port cannot be bound again.
        """
        if mode is self.mode:
            return
        self._release()
        if mode is SlotMode.OPEN:
            self._open()
        elif mode is SlotMode.BLACKHOLE:
            self._blackhole()
        self.mode = mode

    def close(self) -> None:
        """Release the port for good."""
        self._release()
        self.mode = SlotMode.CLOSED

    def _open(self) -> None:
        sock = _bound_socket(self.host, self.port, _BACKLOG)
        self.port = sock.getsockname()[1]
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._listener = listener
        self._nursery.start_soon(self._accept_loop, listener)

    def _blackhole(self) -> None:
        sock = _bound_socket(self.host, self.port, 0)
        self.port = sock.getsockname()[1]
        self._hole = [sock]
        try:
            self._hole += _fill_accept_queue(self.host, self.port)
        except OSError:
            self._release()
            raise

    def _release(self) -> None:
        if self._listener is not None:
            # trio's close() wakes the accept loop, which then ends.
            self._listener.socket.close()
            self._listener = None
        for sock in self._hole:
            sock.close()
        self._hole = []

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                await trio.sleep(0.1)  # out of descriptors: let connections finish
                continue
            self._nursery.start_soon(self._on_accept, self.kind, stream)
