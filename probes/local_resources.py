"""Telling the balancer's own exhaustion apart from a server's fault.

Theory of operation
-------------------
A connect can fail because the server refused, reset or ignored it, or
because *this* process ran out of something: file descriptors (EMFILE,
ENFILE) or kernel memory (ENOBUFS, ENOMEM). The first kind is evidence
against the server; the second is not, and counting it as such lets a client
that exhausts the balancer's fds eject every healthy server. So every place
that turns a connect failure into a verdict (L4 and L7 upstream connects, the
probes) asks `is_local_resource_error` first and, when it says yes, refuses
the client or skips the probe result instead of blaming the server.

The condition comes in bursts (every connect fails while it lasts), so it is
logged through `OncePerInterval`: one line per interval with a count, never a
line per failure.

This module lives in probes/ because probes import nothing from lb, while lb
may import probes: both sides share the one classification.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""errnos meaning "this process or host is out of fds or buffers", not "the peer failed"."""

_WORDING = {
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.ENOBUFS: "no buffer space",
    errno.ENOMEM: "out of memory",
}


def local_resource_errno(exc: BaseException) -> int | None:
    """The resource errno found in `exc`, its exception groups or its causes, else None.

    trio wraps the per-address failures of `open_tcp_stream` in a group under a
    generic OSError, and TLS layers raise BrokenResourceError from the socket's
    error, so the walk goes through groups and `__cause__` links.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif isinstance(current, OSError) and current.errno in RESOURCE_ERRNOS:
            return current.errno
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return None


def is_local_resource_error(exc: BaseException) -> bool:
    """Whether `exc` says the balancer, not the peer, ran out of fds or memory."""
    return local_resource_errno(exc) is not None


def describe_errno(number: int) -> str:
    """Short lowercase wording for a resource errno ("too many open files")."""
    return _WORDING.get(number) or os.strerror(number).lower()


class OncePerInterval:
    """Counts a recurring condition and says when a log line about it is due.

    The first occurrence is due at once; later ones are counted silently until
    `interval` has passed since the last line, and the next occurrence then
    reports everything counted since.

    Args:
        interval: seconds between two lines.
        clock: the time source (injected in tests).
    """

    def __init__(
        self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._count = 0

    def note(self) -> tuple[int, float] | None:
        """Count one occurrence; (count, seconds covered) when a line is due, else None."""
        now = self._clock()
        self._count += 1
        if self._last is not None and now - self._last < self.interval:
            return None
        covered = self.interval if self._last is None else now - self._last
        count, self._count, self._last = self._count, 0, now
        return count, covered

    def line(self, what: str) -> str | None:
        """Count one occurrence of `what`; the log line when due, e.g.
        "accept paused: too many open files (37 times in the last 10s)"."""
        due = self.note()
        if due is None:
            return None
        count, covered = due
        times = "once" if count == 1 else f"{count} times"
        return f"{what} ({times} in the last {covered:.0f}s)"
