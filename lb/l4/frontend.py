"""The L4 frontend: accept, route (by SNI if asked), try servers, then relay.

Theory of operation, per accepted connection:

1. Admission: the accept policy of lb/listeners.py. At `max_connections` the
   frontend stops accepting and new clients wait in the kernel's backlog
   (back-pressure, as HAProxy's maxconn); it also pauses while the process's
   fds are within the reserve, or accept fails for lack of fds or buffers. A
   stream handed to `handle` directly over the limit is closed and counted as
   refused ("limit").
2. Routing: a plain frontend has one route. An SNI frontend reads the client's
   first bytes (bounded by `sni_timeout` and the first-flight limit) until
   `parse_client_hello` gives a final answer, and looks the name up (exact,
   then one-label wildcard "*.example.com"); anything else goes to the default
   route, and with no default the client is reset. The bytes read are not lost:
   they become the start of the first flight.
3. Attempts: pick a server (by the pool's retry policy: one not tried yet, or the
   one that just failed), lease it, connect under the pool's connect timeout,
   send the PROXY header if asked, replay the first flight and wait for the
   server's first bytes (lb/l4/first_response.py). A refused, reset or timed-out
   connect, a server that closes or resets first, and a server silent past the
   first-response timeout are reported to passive detection and the next attempt
   made, at most 1 + retries. A lease the pool cancels before the server
   answered (DOWN, MAINT) drops the attempt; the next is made without a report.
4. Relay: once the server answered, its first bytes go to the client and the
   pump takes over (splice for socket pairs). From here there is no replay.
   When the lease scope is cancelled (reset on DOWN) or hits its deadline
   (drain grace), both ends are reset so clients reconnect elsewhere. An idle
   relay is handed to the frontend's parker without a task (lb/l4/parked.py):
   the connection's slot, its lease and its log line go with it, and the
   same bounds keep reaching it.

When every try failed the client is reset, as a dead server would have done.
A connect that fails for the balancer's own lack of fds or buffers is no
server's fault: it is not reported, no other server is tried (they would fail
alike), the client is closed, and the condition is logged once per interval.
The whole connection runs under an idle timer (the frontend's idle timeout, or
the pool's once routed). Its end writes its tcplog line (lb/l4/events.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from lb import proxy_protocol
from lb.boundary import log_internal_error
from lb.dial import dial_for
from lb.l4 import events as connlog
from lb.l4.closing import close, close_after, reset
from lb.l4.connection import Connection, Resolved, Route
from lb.l4.connector import BOUNDS_ITSELF, Connector, failure_reason, open_plain
from lb.l4.events import ConnectionRecord, L4Events
from lb.l4.first_response import FirstFlight, Outcome, Verdict, read_server_name, run_attempt
from lb.l4.idle_timer import IdleTimer
from lb.l4.parked import Relay, account_relay, note_idle_timeout, note_pool_reset
from lb.l4.parking import Parker
from lb.l4.pump import PEER_ERRORS
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.listeners import UNGUARDED, AcceptGuard, accept_loop
from lb.pool import Held, Member, Pool
from lb.tls import match_server_name
from probes.local_resources import OncePerInterval, is_local_resource_error

__all__ = ["Report", "Route", "TcpFrontend"]  # Route is defined in lb/l4/connection.py

log = logging.getLogger("caslb.l4")

Report = Callable[[str, str, bool, str], None]
"""report(pool, server, ok, reason): feeds passive health detection."""

_CONNECT_ERRORS = (OSError, TimeoutError, trio.TooSlowError)


class _OutOfResources(Exception):
    """An upstream connect failed for the balancer's own lack of fds or buffers."""


class TcpFrontend:
    """An L4 frontend over injected listeners.

    Args:
        settings: the frontend's own settings.
        default: the route for a plain frontend, or the SNI default (None: refuse).
        sni: lowercased server name (or "*.suffix") → route; None for a plain
            TCP frontend that never peeks.
        events: counters (lb.metrics.Metrics in production).
        report: passive health feed: report(pool, server, ok, reason).
        connector: opens upstream streams; plain TCP by default. The frontend
            bounds every call by the pool's connect timeout itself.
        guard: the process's accept guard (fd reserve, pause counter).
    """

    def __init__(
        self,
        settings: TcpFrontendSettings,
        *,
        default: Route | None,
        sni: Mapping[str, Route] | None = None,
        events: L4Events,
        report: Report,
        connector: Connector | None = None,
        guard: AcceptGuard = UNGUARDED,
    ) -> None:
        if sni is None and default is None:
            raise ValueError(f"frontend {settings.name!r}: a tcp frontend needs a route")
        self.settings = settings
        self._default = default
        self._sni = None if sni is None else {k.lower(): v for k, v in sni.items()}
        self._events = events
        self._report = report
        self._connector = connector or open_plain
        self._guard = guard
        self._limiter = trio.CapacityLimiter(settings.max_connections)
        self._out_of_resources = OncePerInterval()
        self.parker = Parker(events, settings.park_sweep)  # its parked ones count as active too
        self.active = 0

    @property
    def name(self) -> str:
        """The frontend's name."""
        return self.settings.name

    @property
    def events(self) -> L4Events:
        """Its counters (a parked relay counts its bytes there)."""
        return self._events

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until cancelled; connections run in the same nursery."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.parker.run)
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def handle(self, client: trio.abc.Stream) -> None:
        """Serve one client connection accepted elsewhere; over the limit it is closed."""
        token = object()
        try:
            self._limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            self._events.refused(self.name, "", "limit")
            await close(client)
            return
        try:
            await self._serve_accepted(client)
        finally:
            self._limiter.release_on_behalf_of(token)

    async def _accept_loop(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery) -> None:
        await accept_loop(listener, self._serve_accepted, nursery, name=f"frontend {self.name}",
                          limiter=self._limiter, guard=self._guard)

    async def _serve_accepted(self, client: trio.abc.Stream) -> None:
        # One frame, not two: a parked connection holds every frame of its chain.
        self.active += 1
        self._events.frontend_connection_opened(self.name)
        # A plain frontend's route is known now: its idle timeout is set once.
        route = self._default if self._sni is None else None
        policy = None
        with contextlib.suppress(Exception):  # asked again inside the failure boundary below
            policy = None if route is None else route.current_policy()
        timeout = policy.idle_timeout if policy is not None else None
        idle = IdleTimer(None, timeout or self.settings.idle_timeout)
        conn = Connection(client, FirstFlight(self.settings.first_flight_limit), idle,
                           self.name)
        try:
            with idle.scope:
                await self._route_and_serve(conn, route, policy)
            if idle.scope.cancelled_caught:
                note_idle_timeout(conn.record)
        except PEER_ERRORS as exc:
            conn.record.termination = connlog.CLIENT_ERROR
            log.debug("frontend %s: client error %r", self.name, exc)
        except Exception as exc:  # the failure boundary: this connection ends, nothing else
            conn.record.termination = connlog.INTERNAL_ERROR
            log_internal_error(log, f"frontend {self.name}: a connection", exc)
            self._events.internal_error("l4")
        finally:
            if not conn.parked:  # else the relay owns the client and the bookkeeping
                # Bookkeeping first: closing a non-socket stream can still raise Cancelled.
                self._closed(conn.record)
                await close(client)

    def _closed(self, record: ConnectionRecord) -> None:
        record.fe_conn = record.fe_conn or self.active
        self.active -= 1
        self._events.frontend_connection_closed(self.name)
        connlog.log_connection(record)

    def relay_ended(self, record: ConnectionRecord) -> None:
        """A connection handed to the parker ended: its slot is free again."""
        self._limiter.total_tokens += 1
        self._closed(record)

    async def _route_and_serve(
        self, conn: Connection, route: Route | None, policy: UpstreamPolicy | None
    ) -> None:
        if self._sni is not None:
            route = self._lookup(await read_server_name(conn.client, conn.flight,
                                                        self.settings.sni_timeout))
        if route is None:
            conn.record.termination = connlog.NO_ROUTE
            self._events.refused(self.name, "", "no_route")
            await reset(conn.client)
            return
        if policy is None:
            policy = route.current_policy()
            conn.idle.retime(policy.idle_timeout or self.settings.idle_timeout)
        conn.record.pool = route.pool.name
        try:
            await self._attempts(conn, route.pool, policy)
        except _OutOfResources:
            conn.record.termination = connlog.OUT_OF_RESOURCES
            await close(conn.client)

    def _lookup(self, name: str | None) -> Route | None:
        assert self._sni is not None
        route = None if name is None else match_server_name(self._sni, name)
        return route or self._default

    async def _attempts(self, conn: Connection, pool: Pool, policy: UpstreamPolicy) -> None:
        route = Resolved(pool, policy)
        retry = policy.retry
        for _ in range(retry.attempts):
            exclude = retry.exclude(conn.tried, (m.name for m in pool.members))
            member = pool.pick(trio.current_time(), client=_host(conn), exclude=exclude)
            if member is None:
                break
            if conn.tried:
                self._events.redispatched(pool.name, conn.tried[-1])
            conn.tried.append(member.name)
            conn.record.retries = len(conn.tried) - 1
            if await self._attempt(conn, route, member):
                return
        if not conn.tried:
            self._events.refused(self.name, pool.name, "no_server")
        log.info("frontend %s: pool %s: no server answered (tried %s)", self.name, pool.name,
                 ", ".join(conn.tried) or "none")
        await reset(conn.client)

    async def _attempt(self, conn: Connection, route: Resolved, member: Member) -> bool:
        """One server; True when the connection is finished, False to try another."""
        server: trio.abc.Stream | None = None
        conn.committed = False
        held = route.pool.lease(member)
        try:
            with held as lease:
                _chosen(conn.record, self.active, route.pool, member)
                with lease.scope:
                    server = await self._connect(conn, route, member)
                    if server is None:
                        return False
                    outcome = await self._run_attempt(conn, route, member, server)
                    if outcome.relay is None:
                        await reset(server)
                        return outcome.verdict is Verdict.CLIENT_GONE
                    if outcome.parked is not None and self._hand_over(conn, held, outcome):
                        server = None  # the relay's now
                        return True
                    account_relay(self._events, conn.record, outcome.replayed_bytes,
                                  outcome.relay)
                    await close_after(outcome.relay, conn.client, server)
                    return True
                # The pool cancelled the lease: DOWN with reset, MAINT, or a drain deadline.
                note_pool_reset(conn.record)
                if server is not None:
                    await reset(server)
                if conn.committed:
                    await reset(conn.client)
                return conn.committed
        finally:
            if server is not None:
                await close(server)

    def _hand_over(self, conn: Connection, held: Held, outcome: Outcome) -> bool:
        """Give an idle relay to the parker; False when it stopped (shutdown): close it here."""
        assert outcome.parked is not None
        relay = Relay(outcome.parked, conn.record, held, outcome.replayed_bytes, self.parker,
                      self)
        if not relay.park():
            return False
        held.keep()
        conn.parked = True
        # The relay keeps the connection's slot: this task's token goes back to the
        # limiter as it ends, so the total shrinks by one until the relay ends.
        self._limiter.total_tokens -= 1
        return True

    async def _connect(
        self, conn: Connection, route: Resolved, member: Member
    ) -> trio.abc.Stream | None:
        pool, timeout = route.pool.name, route.policy.connect_timeout
        start = trio.current_time()
        server = None
        try:
            dial = dial_for(conn.peer, transparent=route.policy.transparent)
            if self._connector in BOUNDS_ITSELF:  # a scope costs 50 Python calls
                server = await self._connector(member, timeout, dial)
            else:
                with trio.CancelScope(deadline=start + timeout):
                    server = await self._connector(member, timeout, dial)
                if server is None:
                    raise TimeoutError()
        except _CONNECT_ERRORS as exc:
            if is_local_resource_error(exc):
                line = self._out_of_resources.line(
                    f"frontend {self.name}: connections closed, the balancer is out of fds or "
                    f"buffers (last: connect to {pool}/{member.name}: {exc})")
                if line is not None:
                    log.warning("%s", line)
                raise _OutOfResources() from exc
            reason = failure_reason(exc)
            log.info("frontend %s: %s/%s: connect %s", self.name, pool, member.name, reason)
            conn.record.termination = (connlog.CONNECT_TIMEOUT if reason == "timeout"
                                       else connlog.NO_SERVER)
            self._report(pool, member.name, False, reason)
            self._events.connect_failed(pool, member.name)
            self._events.retried(pool, member.name, "connect")
            return None
        conn.record.t_connect = trio.current_time() - start
        self._events.server_connected(pool, member.name, conn.record.t_connect)
        return server

    async def _run_attempt(
        self, conn: Connection, route: Resolved, member: Member, server: trio.abc.Stream
    ) -> Outcome:
        pool, policy = route.pool.name, route.policy
        if conn.flight_sent:
            self._events.replayed(pool, member.name)
        preamble = b""
        if policy.proxy_protocol:
            preamble = proxy_protocol.encode(
                policy.proxy_protocol, conn.peer.client, conn.peer.local
            )

        outcome = await run_attempt(
            conn.client,
            server,
            conn.flight,
            preamble=preamble,
            timeout=policy.first_response_timeout,
            server_speaks_first=policy.server_speaks_first,
            idle=conn.idle,
            # A partial, not a closure: it lives as long as a parked connection.
            on_commit=functools.partial(self._committed, conn, pool, member.name),
            parker=self.parker if self.parker.running else None,
        )
        conn.flight_sent = conn.flight_sent or conn.flight.total > 0 or conn.flight.eof
        self._account(conn.record, pool, member, outcome)
        return outcome

    def _committed(self, conn: Connection, pool: str, server: str, verdict: Verdict) -> None:
        conn.committed = True
        if verdict is Verdict.ANSWERED:
            self._report(pool, server, True, "answered")

    def _account(self, record: ConnectionRecord, pool: str, member: Member, out: Outcome) -> None:
        """Report a failed attempt to passive detection, the counters and the log record."""
        record.termination = connlog.NORMAL
        if out.verdict is Verdict.SILENT:
            record.termination = connlog.SERVER_SILENT
            log.info("frontend %s: %s/%s: silent past the first-response timeout",
                     self.name, pool, member.name)
            self._report(pool, member.name, False, Verdict.SILENT.value)
            self._events.first_response_timeout(pool, member.name)
            self._events.retried(pool, member.name, Verdict.SILENT.value)
        elif out.verdict is Verdict.CLOSED:
            record.termination = connlog.NO_SERVER
        elif out.verdict is Verdict.CLIENT_GONE:
            record.termination = connlog.CLIENT_ABORT
            log.info("frontend %s: %s/%s: closed before answering (%s)",
                     self.name, pool, member.name, out.reason)
            self._report(pool, member.name, False, out.reason)
            self._events.retried(pool, member.name, out.reason)


def _chosen(record: ConnectionRecord, fe_conn: int, pool: Pool, member: Member) -> None:
    """Note the server an attempt leased, and the connection counts as it was chosen."""
    record.server = member.name
    record.fe_conn, record.srv_conn = fe_conn, member.active
    record.be_conn = sum(m.active for m in pool.members)


def _host(conn: Connection) -> str | None:
    return None if conn.peer.client is None else conn.peer.client[0]
