"""Idle upstream connections shared between client connections: the pure rules.

No I/O and no clock here: times are passed in, and decisions come back as
values (what to hand out, what to close) for lb.l7.sharing to act on.

What may be parked (`may_park`): a connection whose last exchange ended
cleanly (its codec idle both ways, nothing buffered, the server has not closed
it), that never carried NTLM or Negotiate (such a connection is private to its
client for life: lb.l7.rebalance), whose lease the pool has not reset or given
a drain deadline, to a server that is eligible for new traffic and not ejected
by outlier detection, in a pool whose
`reuse` is "safe".

What may take one (`may_take`): only a request the proxy may replay on a fresh
connection (bodiless, idempotent, and the pool retries at all), because a
server may close an idle connection just as a request crosses it; that is
HAProxy's reason for "safe". HAProxy keeps a client's first request on a
connection of its own so that the browser may retry it; caslb replays it
itself instead (lb.l7.policy.closed_while_kept), so a first request may take an
idle connection too, and a request with a body never does.

The set of one server (`IdleSet`) hands out the connection parked last (the
warmest: least likely to have been closed by the server), holds at most
MAX_IDLE_PER_SERVER (parking one more closes the oldest) and none longer than
IDLE_LIFE seconds.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

MAX_IDLE_PER_SERVER = 64
"""Idle connections kept per (frontend, pool, server); HAProxy bounds its own per server too."""

IDLE_LIFE = 60.0
"""Seconds a connection may stay parked. Half IIS's idle close (connectionTimeout,
120 s), so the server rarely closes a connection caslb is about to hand out."""

C = TypeVar("C", bound=Hashable)


class Reuse(enum.Enum):
    """A pool's `reuse` setting: whether its idle upstream connections are shared."""

    SAFE = "safe"  # parked for other client connections, taken by replayable requests
    NEVER = "never"  # each client connection's upstream connections are its own


def may_park(
    *,
    reuse: Reuse,
    client_bound: bool,
    private: bool,
    usable: bool,
    lease_valid: bool,
    eligible: bool,
    ejected: bool = False,
) -> bool:
    """Whether a connection its client is done with is parked rather than closed.

    Args:
        reuse: the pool's setting.
        client_bound: the pool's connections carry their client's address
            (`UpstreamSettings.client_bound`).
        private: it ever carried NTLM or Negotiate (`UpstreamConnection.pinned`).
        usable: idle both ways, unread, open (`UpstreamConnection.usable`).
        lease_valid: the pool has neither reset its lease nor set it a deadline.
        eligible: its server may take new traffic now.
        ejected: outlier detection has its server out (no pick would take it).
    """
    return (reuse is Reuse.SAFE and not client_bound and not private and usable
            and lease_valid and eligible and not ejected)


def may_take(*, reuse: Reuse, client_bound: bool, replayable: bool) -> bool:
    """Whether a request may go over a connection another client connection left.

    Args:
        reuse: the pool's setting.
        client_bound: the pool's connections carry their client's address.
        replayable: the proxy would replay the request on a fresh connection if
            it failed before a response byte (lb.l7.policy.replayable).
    """
    return reuse is Reuse.SAFE and not client_bound and replayable


class IdleSet(Generic[C]):
    """The parked connections of one server, oldest first."""

    def __init__(self, limit: int = MAX_IDLE_PER_SERVER, life: float = IDLE_LIFE) -> None:
        if limit < 1 or not life > 0:
            raise ValueError(f"an idle set needs limit ≥ 1 and life > 0, not {limit}, {life}")
        self.limit = limit
        self.life = life
        self._parked: deque[tuple[C, float]] = deque()

    def __len__(self) -> int:
        return len(self._parked)

    def __contains__(self, conn: object) -> bool:
        return any(c is conn for c, _ in self._parked)

    def park(self, conn: C, now: float) -> list[C]:
        """Park `conn`; returns those to close (the oldest, beyond the limit)."""
        self._parked.append((conn, now))
        evicted: list[C] = []
        while len(self._parked) > self.limit:
            evicted.append(self._parked.popleft()[0])
        return evicted

    def expires_at(self, parked_at: float) -> float:
        """When a connection parked at `parked_at` must be closed."""
        return parked_at + self.life

    def take(self, now: float) -> tuple[C | None, list[C]]:
        """The connection parked last, if one is still within its life; and the expired ones."""
        expired = self.expire(now)
        if not self._parked:
            return None, expired
        return self._parked.pop()[0], expired

    def expire(self, now: float) -> list[C]:
        """Remove and return those parked IDLE_LIFE ago or more."""
        expired: list[C] = []
        while self._parked and now >= self._parked[0][1] + self.life:
            expired.append(self._parked.popleft()[0])
        return expired

    def remove(self, conn: C) -> bool:
        """Forget `conn` (it closed while parked); whether it was here."""
        for i, (c, _) in enumerate(self._parked):
            if c is conn:
                del self._parked[i]
                return True
        return False

    def clear(self) -> list[C]:
        """Remove and return every parked connection."""
        out = [c for c, _ in self._parked]
        self._parked.clear()
        return out
