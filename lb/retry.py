"""Where a failed attempt goes next: a pool's retry policy, shared by both wings.

HAProxy retries a failed connect `retries` times, on the same server unless
`option redispatch` sends the retry elsewhere. caslb defaults to another server
(a connect failure says the server is in trouble) and lets a pool keep retries
on the same one (a server behind its own NAT that drops a SYN now and then) or
turn them off (a client that must see the first failure).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class RetryTo(enum.Enum):
    """Which server a retry goes to."""

    ANOTHER = "another"  # one not tried yet for this connection or request
    SAME = "same"  # the one that just failed, while it stays eligible
    OFF = "off"  # none: the first failure is final


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries a failed attempt gets, and on which server.

    Attributes:
        count: further attempts after the first (ignored when `to` is OFF).
        to: where they go.
    """

    count: int = 3
    to: RetryTo = RetryTo.ANOTHER

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"retries must not be negative, not {self.count!r}")

    @property
    def attempts(self) -> int:
        """Attempts in all, the first included."""
        return 1 if self.to is RetryTo.OFF else 1 + self.count

    def exclude(self, tried: Sequence[str], members: Iterable[str]) -> set[str]:
        """The servers the next pick must avoid, after the servers `tried` failed in order.

        Args:
            tried: servers already tried, oldest first.
            members: every server of the pool.
        """
        if not tried:
            return set()
        if self.to is RetryTo.SAME:
            return {name for name in members if name != tried[-1]}
        return set(tried)
