"""A client's upstream connections, one per pool: reuse or pick, connect, observe.

A client connection keeps at most one upstream connection per pool at a time.
For each request the kept connection is reused when policy allows it: a
pinned one while its server serves (lb.l7.rebalance.keep_pinned), another
while it is reusable (lb.l7.policy.keep_upstream) and, once a second, a fresh
pick does not move it (lb.l7.rebalance.moves). Otherwise a server is picked
from the pool, excluding those outlier detection ejected and, by the pool's
retry policy (lb.retry), the servers this request already tried (or, retrying
on the same server, every other); a replayable request then takes an idle
connection to that server that another client connection left
(lb.l7.sharing), else one is dialled, with the pool's connect retries.

A connection this client leaves (moved away, or the client connection ends)
is parked for others when lb.l7.idle.may_park allows, else closed: one that
carried NTLM or Negotiate never is. A connection to another pool stays this
client's while it uses a second pool: parking it at each switch would cost
its next request with a body (which never takes a shared one) a connect.

Every attempt's outcome is observed here: it goes to passive health (the
report callback) and to the pool's outlier ejections (an `Ejector`, owned by
the pool and shared with every frontend that routes to it), which may eject
the server. An outcome carries the client's address, so that one client alone
cannot eject a server; a connect failure carries none, as no request of any
client caused it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import trio

from lb.dial import UNKNOWN_PEER, Peer, dial_for
from lb.l7 import policy, rebalance
from lb.l7.events import L7Events, Report
from lb.l7.poolview import Member, Pool
from lb.l7.sharing import SharedUpstreams
from lb.l7.upstream import (
    ConnectFailed,
    Connector,
    UpstreamConnection,
    UpstreamSettings,
    open_upstream,
)
from probes.outlier import Ejection, Outcome

log = logging.getLogger("caslb.l7")


class Ejector(Protocol):
    """A pool's outlier ejections as the proxy uses them (lb.ejection.PoolEjections is one)."""

    def is_ejected(self, server: str, now: float) -> bool:
        """Whether `server` is ejected at `now`."""

    def ejected(self, now: float) -> frozenset[str]:
        """The servers ejected at `now`."""

    def record(
        self, server: str, outcome: Outcome, now: float, *, client: str | None
    ) -> Ejection | None:
        """Count one attempt's outcome (client None: nobody's request caused it)."""


@dataclass(frozen=True)
class Backend:
    """Everything the proxy needs about one pool.

    Attributes:
        pool: the pool (picks and leases members).
        settings: how to talk to its servers.
        connector: opens a stream to one of its servers.
        outliers: its pool's outlier ejections, or None when detection is off.
    """

    pool: Pool
    settings: UpstreamSettings
    connector: Connector
    outliers: Ejector | None


@dataclass(frozen=True)
class Picked:
    """The result of asking for an upstream connection.

    Attributes:
        upstream: the connection, or None when no server could be had.
        retries: connect retries spent on other servers.
        last_error: the last connect error, if any.
        connect_time: seconds the connect took (0 for a reused connection).
        reused: the connection carried an earlier request (of this client, or
            of another when it was parked).
    """

    upstream: UpstreamConnection | None
    retries: int
    last_error: str = ""
    connect_time: float = 0.0
    reused: bool = False


def _ejected(backend: Backend, now: float) -> frozenset[str]:
    return frozenset() if backend.outliers is None else backend.outliers.ejected(now)


class ClientUpstreams:
    """One client's upstream connections, keyed by pool name.

    Args:
        shared: the frontend's idle connections; lease holders run in its nursery.
        client: the client's address (source-hash picks use it).
        receive_size: the most bytes read from an upstream at once.
        report: passive health callback.
        events: metrics sink.
        origin: the client's and the frontend's addresses, for the pools that
            send a PROXY header or connect from the client's address.
    """

    def __init__(
        self,
        shared: SharedUpstreams,
        nursery: trio.Nursery,
        client: str,
        receive_size: int,
        report: Report,
        events: L7Events,
        origin: Peer = UNKNOWN_PEER,
    ) -> None:
        self._shared = shared
        self._nursery = nursery
        self._origin = origin
        self._client = client
        self._receive_size = receive_size
        self._report = report
        self._events = events
        self._open: dict[str, tuple[UpstreamConnection, Backend]] = {}

    def __repr__(self) -> str:
        return f"<ClientUpstreams {list(self._open)}>"

    async def get(
        self, pool_name: str, backend: Backend, tried: list[str], *, share: bool = False,
        fresh: bool = False,
    ) -> Picked:
        """This client's connection to `pool_name`: kept, taken idle, or opened (with
        connect retries).

        Args:
            share: the request may take a connection another client parked
                (lb.l7.idle.may_take).
            fresh: dial a new connection (a replay after a failure).
            tried: servers that fail to connect are appended to it.
        """
        opened = self._open.get(pool_name)
        now = trio.current_time()
        member: Member | None = None  # this request's fresh pick, once made
        if opened is not None:
            kept, member = self._keeps(opened[0], backend, now)
            if kept:
                return Picked(opened[0], 0, reused=True)
            self._leave(pool_name)
        retries, last_error = 0, ""
        retry = backend.settings.retry
        for attempt in range(retry.attempts):
            if member is None:
                names = (m.name for m in backend.pool.members)
                exclude = retry.exclude(tried, names) | _ejected(backend, now)
                member = backend.pool.pick(now, client=self._client, exclude=exclude)
                if member is None:
                    break
            if share and not fresh and (idle := self._shared.take(backend.pool, member)):
                idle.rebalance_at = now + rebalance.RECHECK_EVERY
                self._open[pool_name] = (idle, backend)
                return Picked(idle, retries, reused=True)
            if attempt:
                retries += 1
            started = trio.current_time()
            try:
                upstream = await open_upstream(
                    self._shared.nursery or self._nursery,
                    backend.pool,
                    member,
                    backend.connector,
                    backend.settings.connect_timeout,
                    self._receive_size,
                    dial_for(self._origin, transparent=backend.settings.transparent,
                             proxy_protocol=backend.settings.proxy_protocol),
                )
            except ConnectFailed as exc:
                if exc.local:  # the balancer's own fds ran out: no server's fault, 503
                    return Picked(None, retries)
                last_error = str(exc)
                tried.append(member.name)
                self._events.connect_failed(pool_name, member.name)
                self.observe(pool_name, backend, member, Outcome.GATEWAY_FAILURE, "connect",
                             requested=False)
                self._events.retried(pool_name, member.name, "connect")
                log.warning("pool %s: connect to %s failed: %s", pool_name, member.name, exc)
                now, member = trio.current_time(), None
                continue
            took = trio.current_time() - started
            self._events.server_connected(pool_name, member.name, took)
            self._open[pool_name] = (upstream, backend)
            return Picked(upstream, retries, connect_time=took)
        return Picked(None, retries, last_error)

    def _keeps(
        self, current: UpstreamConnection, backend: Backend, now: float
    ) -> tuple[bool, Member | None]:
        """Whether `current` carries the next request; else the server picked instead, if any."""
        member, pool = current.member, backend.pool
        ejected = backend.outliers is not None and backend.outliers.is_ejected(member.name, now)
        if current.pinned:
            keep = rebalance.keep_pinned(usable=current.usable(), serving=member.serving,
                                         ejected=ejected)
            return keep, None
        panic = policy.in_panic(
            member_eligible=member.eligible, eligible=(m.eligible for m in pool.members)
        )
        if not policy.keep_upstream(reusable=current.reusable(panic=panic), ejected=ejected):
            return False, None
        if now < current.rebalance_at:
            return True, None
        current.rebalance_at = now + rebalance.RECHECK_EVERY
        picked = pool.pick(now, client=self._client, exclude=_ejected(backend, now))
        if picked is None or picked is member:
            return True, None
        if rebalance.moves(pool.candidate(member, now), pool.candidate(picked, now),
                           sticky=pool.sticky):
            return False, picked
        return True, None

    def drop(self, pool_name: str) -> None:
        """Close the connection to `pool_name`, if any (its exchange did not end cleanly)."""
        opened = self._open.pop(pool_name, None)
        if opened is not None:
            opened[0].close()

    def _leave(self, pool_name: str, *, park: bool = True) -> None:
        """Let go of the connection to `pool_name`: parked for others if it may be, else closed."""
        upstream, backend = self._open.pop(pool_name)
        ejected = backend.outliers is not None and backend.outliers.is_ejected(
            upstream.member.name, trio.current_time())
        if not (park and self._shared.park(upstream, backend.pool, backend.settings,
                                           ejected=ejected)):
            upstream.close()

    def close_all(self, *, park: bool = True) -> None:
        """Let go of every connection (the client connection ended): parked or closed."""
        for pool_name in list(self._open):
            self._leave(pool_name, park=park)

    def observe(
        self,
        pool_name: str,
        backend: Backend,
        member: Member,
        outcome: Outcome,
        reason: str,
        *,
        requested: bool = True,
    ) -> None:
        """Feed one attempt's outcome to passive health and outlier detection.

        Args:
            requested: this client's request got the outcome; False when no
                request was sent yet (a connect failure), so nobody caused it.
        """
        self._report(pool_name, member.name, outcome is Outcome.SUCCESS, reason)
        if backend.outliers is None:
            return
        ejection = backend.outliers.record(
            member.name, outcome, trio.current_time(),
            client=self._client if requested else None,
        )
        if ejection is not None:
            log.warning(
                "pool %s: ejecting %s for %.0fs (%s, ejection #%d)",
                pool_name,
                member.name,
                ejection.until - trio.current_time(),
                ejection.reason,
                ejection.times_ejected,
            )
            self._events.ejected(pool_name, ejection)

