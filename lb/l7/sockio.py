"""The socket calls the L7 data path makes itself, on the fd, and the errors they raise.

`lb.l7.adapter` (plain sockets) and `lb.l7.tlsstream` (TLS it terminates)
read and write with `os.read` and `os.write` on the socket's fd and wait on
trio only when the kernel says EAGAIN (the adapter's docstring says why).
Both need the fd read afresh before each call and trio's own stream errors
for a failed call, so that the callers above them see what a SocketStream
would have raised.
"""

from __future__ import annotations

import errno

import trio


def open_fd(sock: trio.socket.SocketType) -> int:
    """The socket's fd now; ClosedResourceError once it was closed.

    Read afresh before each call: a pool reset closes a socket from another
    task, and a stale number could by then belong to another file.
    """
    fd = sock.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("socket was already closed")
    return fd


def stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """The stream error trio's SocketStream raises for `exc`."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
