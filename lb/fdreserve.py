"""The fd reserve: frontends stop accepting before the balancer runs out of fds.

Why the reserve is enforced at accept and measured the way it is: clients
are the only unbounded consumer of fds (each accepted connection costs about
two: itself and its upstream), so gating accept bounds them, and a check at
accept costs nothing on the connections already served. Counting open fds
means listing /proc/self/fd, O(open fds), too dear for every accept, so a
count buys a *budget*: (limit - reserve - open) // 2 accepts. The process
recounts when the budget is spent or a quarter second has passed (fds opened
elsewhere, e.g. by L7 connections to a second pool, and fds closed, both show
up then). Where the fd table cannot be read (no /proc) there is no reserve.
The reserve is shared by every frontend of the process (one fd table), and
is `CASLB_FD_RESERVE` fds when set, else a quarter of the limit capped at 64.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import trio

FDS_PER_CONNECTION = 2
"""A client connection's own fd plus its upstream's."""
RECOUNT_AFTER = 0.25
"""Seconds a count of open fds is trusted for, whatever budget is left."""
RESERVE_CAP = 64
RESERVE_ENV = "CASLB_FD_RESERVE"


def default_reserve(limit: int) -> int:
    """The fds kept back by default under a soft limit of `limit`."""
    return max(1, min(RESERVE_CAP, limit // 4))


def accept_budget(open_fds: int, limit: int, reserve: int) -> int:
    """How many connections frontends may accept before the reserve is reached."""
    return max(0, (limit - reserve - open_fds) // FDS_PER_CONNECTION)


def count_open_fds() -> int | None:
    """This process's open fds, or None where the fd table cannot be listed."""
    for table in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(table)) - 1  # listing it opened one more
        except OSError:
            continue
    return None


def soft_fd_limit() -> int | None:
    """RLIMIT_NOFILE's soft limit, None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def reserve_from_environment() -> int | None:
    """`CASLB_FD_RESERVE` as a count of fds, None when unset.

    Raises:
        ValueError: the variable is not a whole number >= 0.
    """
    text = os.environ.get(RESERVE_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{RESERVE_ENV}={text!r}: want a whole number of fds (0 disables)")
    return int(text)


class FdReserve:
    """Keeps frontends from taking the process's last fds.

    Args:
        reserve: fds to keep free; None follows `default_reserve` of the limit.
        count_open: counts open fds (None: unknown, no reserve).
        fd_limit: the soft fd limit (None: unlimited, no reserve).
        clock: the time source (trio's by default).
    """

    def __init__(
        self,
        reserve: int | None = None,
        *,
        count_open: Callable[[], int | None] = count_open_fds,
        fd_limit: Callable[[], int | None] = soft_fd_limit,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if reserve is not None and reserve < 0:
            raise ValueError(f"fd reserve must not be negative, not {reserve!r}")
        self.reserve = reserve
        self._count_open, self._fd_limit, self._clock = count_open, fd_limit, clock
        self._budget = 0
        self._taken = 0  # accepts since the last count
        self._counted_at: float | None = None
        self.open_fds: int | None = None
        self.limit: int | None = None

    def kept(self) -> int:
        """The fds this reserve keeps under the current limit."""
        if self.limit is None:
            return 0
        return default_reserve(self.limit) if self.reserve is None else self.reserve

    def take(self) -> bool:
        """Take room for one accept; False while open fds are within the reserve."""
        now = self._clock()
        stale = self._counted_at is None or now - self._counted_at >= RECOUNT_AFTER
        if self._budget <= 0 or stale:
            self._recount(now)
        if self._budget <= 0:
            return False
        self._budget -= 1
        self._taken += 1
        return True

    def _recount(self, now: float) -> None:
        # Connections accepted since the last count may not have opened their
        # upstream yet (a burst takes dozens in one turn): their fd is owed.
        owed, self._taken = self._taken, 0
        self._counted_at = now
        self.open_fds, self.limit = self._count_open(), self._fd_limit()
        if self.open_fds is None or self.limit is None or self.kept() == 0:
            self._budget = 1 << 30
        else:
            self._budget = accept_budget(self.open_fds + owed, self.limit, self.kept())

    def describe(self) -> str:
        """The state for a log line: "230 of 256 fds open, 64 kept for the admin API and probes"."""
        return (f"{self.open_fds} of {self.limit} fds open, "
                f"{self.kept()} kept for the admin API and probes")
