"""The L4 connector type, its default (lb/dial.py opens the socket), and why one failed."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

import trio

from lb.dial import DIRECT, Dial, open_tcp
from lb.pool import Member

Connector = Callable[[Member, float, Dial], Awaitable[trio.abc.Stream]]
"""connector(member, timeout, dial) → a connected stream; raises OSError or TimeoutError.
A connector need not keep `timeout`: the frontend bounds the call unless it is in
`BOUNDS_ITSELF`."""


async def open_plain(member: Member, timeout: float, dial: Dial = DIRECT) -> trio.abc.Stream:
    """A plain TCP stream to `member`, bounded by `timeout` itself (`BOUNDS_ITSELF`).

    Raises:
        OSError: refused, unreachable, reset.
        TimeoutError: not connected within `timeout`.
    """
    deadline = trio.current_time() + timeout
    return await open_tcp(member.host, member.port, dial, deadline=deadline)


BOUNDS_ITSELF = frozenset({open_plain})
"""Connectors that keep their timeout themselves, so the frontend opens no scope of its own:
open_plain waits (and bounds a wait) only when the kernel did not connect at once."""


# An admin reading "connect error" has to guess; these name the usual causes:
# a local firewall or a transparent pool without CAP_NET_ADMIN (EPERM/EACCES),
# and a route that is gone.
_ERRNO_REASONS = {
    errno.EPERM: "denied",
    errno.EACCES: "denied",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}


def failure_reason(exc: BaseException) -> str:
    """A short, stable name for why an upstream attempt failed (a log and report reason)."""
    if isinstance(exc, TimeoutError | trio.TooSlowError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | trio.BrokenResourceError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    return "error"
