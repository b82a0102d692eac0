"""The idle upstream connections of one L7 frontend, shared by its client connections.

Why. A client that opens a connection per request (a browser's new TLS
connection, a monitoring probe, the failover harness's 160 a second) would
otherwise cost a new upstream connection each time, and with re-encryption an
upstream TLS handshake. HAProxy's `http-reuse safe` (its default) hands such a
client an idle server connection it already holds; this is caslb's.

Ownership. `SharedUpstreams` alone holds which connections are parked, one
lb.l7.idle.IdleSet per (pool, server); each connection still owns its lease and
stream (its holder task, in the frontend's nursery, `nursery` here). Parking
tells the pool the lease is no longer load (`Pool.set_idle`); taking one back
counts it again. A parked connection closes when its idle life ends (its
holder's idle deadline), when the pool resets its lease (its server went
DOWN, drained, into maintenance or out of the config), when the set overflows
or when the frontend stops (a retired frontend's nursery is cancelled once its
last client is gone); in every case its holder calls `_forget`.

Failure boundary. Anything unexpected while parking or taking is logged in one
line and counted as an internal error, and costs that connection only: it is
closed, and the caller dials afresh.
"""

from __future__ import annotations

import logging
import math

import trio

from lb.boundary import log_internal_error
from lb.l7.events import L7Events
from lb.l7.idle import IdleSet, may_park
from lb.l7.poolview import Member, Pool
from lb.l7.upstream import UpstreamConnection, UpstreamSettings

log = logging.getLogger("caslb.l7")

Key = tuple[str, str]  # (pool, server)


class SharedUpstreams:
    """Parked upstream connections per (pool, server), for one frontend.

    Args:
        frontend: the frontend's name, for logs.
        events: metrics sink (reuses, the idle gauge, internal errors).

    Attributes:
        nursery: where upstream holders run: the frontend's, set while it
            serves; None otherwise, and then nothing is parked.
    """

    def __init__(self, frontend: str, events: L7Events) -> None:
        self._frontend = frontend
        self._events = events
        self._sets: dict[Key, IdleSet[UpstreamConnection]] = {}
        self.nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        parked = {f"{p}/{s}": len(idle) for (p, s), idle in self._sets.items() if idle}
        return f"<SharedUpstreams {self._frontend} {parked}>"

    def parked(self, pool: str, server: str) -> int:
        """How many connections to `server` of `pool` are parked now."""
        idle = self._sets.get((pool, server))
        return 0 if idle is None else len(idle)

    def park(self, conn: UpstreamConnection, pool: Pool, settings: UpstreamSettings, *,
             ejected: bool = False) -> bool:
        """Park `conn` if lb.l7.idle.may_park allows; whether it was (else close it).

        Args:
            ejected: outlier detection has its server out now.
        """
        if self.nursery is None:
            return False
        try:
            return self._park(conn, pool, settings, ejected)
        except Exception as exc:  # the failure boundary: this connection, nothing else
            self._failed(f"parking {conn!r}", exc)
            conn.on_close = None
            idle = self._sets.get((conn.pool, conn.member.name))
            if idle is not None and idle.remove(conn):  # the caller closes it
                self._events.idle_changed(conn.pool, conn.member.name, -1)
            return False

    def _park(self, conn: UpstreamConnection, pool: Pool, settings: UpstreamSettings,
              ejected: bool) -> bool:
        member, lease = conn.member, conn.lease
        if lease is None or not may_park(
            reuse=settings.reuse, client_bound=settings.client_bound, private=conn.pinned,
            usable=conn.usable(), lease_valid=conn.lease_valid, eligible=member.eligible,
            ejected=ejected,
        ):
            return False
        key = (conn.pool, member.name)
        idle = self._sets.get(key)
        if idle is None:
            idle = self._sets[key] = IdleSet()
        now = trio.current_time()
        pool.set_idle(lease)
        evicted = idle.park(conn, now)
        self._events.idle_changed(conn.pool, member.name, 1)
        conn.on_close = self._forget
        conn.idle_until(idle.expires_at(now))
        for old in evicted:
            self._discard(old)
        return True

    def take(self, pool: Pool, member: Member) -> UpstreamConnection | None:
        """A parked connection to `member` the server has not closed, or None (dial one)."""
        idle = self._sets.get((pool.name, member.name))
        if not idle:
            return None
        try:
            return self._take(idle, pool, member)
        except Exception as exc:  # the failure boundary: the request dials afresh
            self._failed(f"reusing a connection to {pool.name}/{member.name}", exc)
            return None

    def _take(
        self, idle: IdleSet[UpstreamConnection], pool: Pool, member: Member
    ) -> UpstreamConnection | None:
        while True:
            conn, expired = idle.take(trio.current_time())
            for old in expired:
                self._discard(old)
            if conn is None:
                return None
            conn.on_close = None
            try:
                self._events.idle_changed(pool.name, member.name, -1)
                # The liveness check: a parked connection the server closed is readable
                # (EOF, or a TLS close_notify) and must not carry a request.
                if conn.lease is None or conn.member is not member or not conn.lease_valid \
                        or not conn.usable():
                    conn.close()
                    continue
                pool.set_idle(conn.lease, False)
                conn.idle_until(math.inf)
                self._events.connection_reused(pool.name, member.name)
            except BaseException:  # out of the set already: it must not be left open
                conn.close()
                raise
            return conn

    def _discard(self, conn: UpstreamConnection) -> None:
        """Close a connection the set already let go of (evicted or expired)."""
        conn.on_close = None
        self._events.idle_changed(conn.pool, conn.member.name, -1)
        conn.close()

    def _forget(self, conn: UpstreamConnection) -> None:
        """A parked connection closed (idle life over, pool reset, frontend stop)."""
        try:
            idle = self._sets.get((conn.pool, conn.member.name))
            if idle is not None and idle.remove(conn):
                self._events.idle_changed(conn.pool, conn.member.name, -1)
        except Exception as exc:  # in a holder's finally: never into the frontend's nursery
            self._failed(f"forgetting {conn!r}", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        log_internal_error(log, f"frontend {self._frontend}: {what}", exc)
        self._events.internal_error("l7")
