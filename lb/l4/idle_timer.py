"""The idle timeout of a connection, as a cancel scope's deadline kept ahead of activity."""

from __future__ import annotations

import trio


class IdleTimer:
    """Keeps a cancel scope's deadline `idle` seconds after the latest activity.

    Moving a trio deadline on every transfer would churn the deadline heap, so
    the deadline is pushed `idle + slack` ahead only once it is closer than
    `idle`: the scope fires between `idle` and `idle + slack` after the last
    byte, never early.

    Args:
        scope: the scope to time, or None for a new one (made with its first
            deadline: a deadline set later costs trio a context manager).
        idle: seconds of inactivity allowed.
    """

    __slots__ = ("_slack", "idle", "scope")

    def __init__(self, scope: trio.CancelScope | None, idle: float) -> None:
        if scope is not None:
            self.scope = scope
            self.retime(idle)
            return
        self._set(idle)
        self.scope = trio.CancelScope(deadline=trio.current_time() + idle + self._slack)

    def _set(self, idle: float) -> None:
        if idle <= 0:
            raise ValueError(f"idle timeout {idle!r} must be positive")
        self.idle = idle
        self._slack = idle / 16

    def retime(self, idle: float) -> None:
        """Switch to another idle timeout, counted from now."""
        self._set(idle)
        self.scope.deadline = trio.current_time() + idle + self._slack

    def renew(self) -> None:
        """A fresh scope with the same deadline, for a relay resumed by another task
        (a trio scope is entered once; lb/l4/parking.py)."""
        self.scope = trio.CancelScope(deadline=self.scope.deadline)

    def touch(self) -> None:
        """Record activity now."""
        now = trio.current_time()
        if self.scope.deadline < now + self.idle:
            self.scope.deadline = now + self.idle + self._slack
