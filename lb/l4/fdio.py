"""Non-blocking fd I/O for the relay, beside trio's stream wrappers rather than through them.

A relay moves bytes between sockets it knows are plain and non-blocking, so it
calls the kernel on their fds directly and goes through trio only to wait:
`SocketStream.send_all` and `receive_some` cost about 60 Python calls each
(conflict detection, error translation, a checkpoint), `os.write` one. Each
helper tries the syscall first and waits for readiness only on EAGAIN.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

import trio

SPLICE_PIPE_SIZE = 1 << 20

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class Pipe:
    """A non-blocking pipe used as the splice buffer of one flow."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.size = fcntl.fcntl(self.write_fd, _F_GETPIPE_SZ)
        self.held = 0

    def grow(self) -> None:
        # Refused above /proc/sys/fs/pipe-max-size or the per-user page budget;
        # the flow then keeps the smaller pipe, which is slower but correct.
        with contextlib.suppress(OSError):
            self.size = fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, SPLICE_PIPE_SIZE)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


async def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the non-blocking `fd`, waiting only while its buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
            continue
        except BlockingIOError:
            pass
        await trio.lowlevel.wait_writable(fd)  # not in the except, as in _copy_until_bulk


async def read_some(stream: trio.abc.Stream, limit: int) -> bytes:
    """Up to `limit` bytes from `stream` (b"" at EOF): on the fd itself for a socket."""
    if not isinstance(stream, trio.SocketStream):
        return bytes(await stream.receive_some(limit))
    fd = stream.socket.fileno()
    while True:
        try:
            return os.read(fd, limit)
        except BlockingIOError:
            pass
        await trio.lowlevel.wait_readable(fd)  # outside the except: no exception kept alive


def try_splice(src_fd: int, dst_fd: int, count: int) -> int:
    """Bytes spliced, 0 at EOF, -1 when the kernel would block."""
    try:
        return os.splice(src_fd, dst_fd, count, flags=_SPLICE_FLAGS)
    except (BlockingIOError, InterruptedError):
        return -1
