"""The per-connection HTTP proxy loop: read a request, route it, relay it, repeat.

Theory of operation. One `ClientSession` serves one client connection. It
reads a request head with the codec, lb.l7.wire (under the idle and header timeouts), refuses
what must not be forwarded (lb.l7.heads, lb.l7.target), routes the normalised
path to a pool (lb.l7.routing) and relays the request over this client's
upstream connection to that pool (lb.l7.backends): kept, balanced afresh
unless NTLM pinned it, or, for a replayable request, taken idle from another
client (lb.l7.sharing). Requests of one client are strictly sequential, as
HTTP/1.1 without pipelining to the server demands; a pipelined request already
buffered waits for one scheduler turn, so that a pipelining flood cannot
starve others. This module is the driver: the I/O of an exchange is
lb.l7.relay's; keeping or moving the upstream is lb.l7.rebalance's decision,
and every other (replay, what the outcome says about the server, the error to
answer) lb.l7.policy's.

Failures (retried where the pool's retry policy says, lb.retry): a connect
failure is retried (nothing was sent); an idempotent request without a body
whose upstream fails before any response byte is replayed once, on a freshly
dialled connection (on the same server, unblamed, when it was a kept or shared
connection the server had just closed). Otherwise the client gets 502 (504 on
a response timeout) if no response byte reached it yet, else the connection
is cut. Every attempt's outcome feeds passive health and the pool's outlier
detector; an ejected server is excluded from picks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from lb.dial import UNKNOWN_PEER, Peer
from lb.l7 import events as l7_events
from lb.l7 import idle, policy, rebalance, responses
from lb.l7.adapter import HeaderTimeout, HttpStream, IdleTimeout
from lb.l7.backends import Backend, ClientUpstreams
from lb.l7.events import L7Events, Report, RequestLog, RequestRecord, Termination
from lb.l7.headers import Headers, declares_body, forwarded_request_headers, header_value
from lb.l7.heads import HeadLimits, forwarded_request, request_refusal, valid_field_value
from lb.l7.relay import PEER_ERRORS, Attempt, Relay, take_ready
from lb.l7.routing import TimeoutProfile, host_name, timeout_profile
from lb.l7.settings import HttpFrontendSettings
from lb.l7.sharing import SharedUpstreams
from lb.l7.target import Target, parse_target
from lb.l7.wire.connection import WireConnection
from lb.l7.wire.events import Request, WireError

__all__ = ["Backend", "ClientSession", "ProxyContext"]

log = logging.getLogger("caslb.l7")


@dataclass(frozen=True)
class ProxyContext:
    """What every client session of one frontend shares.

    Attributes:
        settings: the frontend's settings.
        backends: pool name → backend.
        report: passive health callback report(pool, server, ok, reason).
        events: metrics sink.
        connections: the frontend's open client connections now (for the access log).
        shared: the frontend's idle upstream connections (lb.l7.sharing).
    """

    settings: HttpFrontendSettings
    backends: Mapping[str, Backend]
    report: Report
    events: L7Events
    shared: SharedUpstreams
    connections: Callable[[], int] = int


@dataclass(frozen=True)
class Served:
    """How one request went, as the client saw it.

    Attributes:
        status: the status sent to the client, or None.
        termination: how it ended (None: complete).
        bytes_in: request body bytes from the client.
        bytes_out: response body bytes to the client.
        server: the server that answered, if any.
        retries: other servers tried.
        complete: the response was sent whole (keep-alive may go on).
        t_connect: seconds to open the upstream (0 reused, -1 none).
        t_response: seconds from sending the request to its response head (-1 none).
    """

    status: int | None
    termination: Termination | None
    bytes_in: int = 0
    bytes_out: int = 0
    server: str | None = None
    retries: int = 0
    complete: bool = False
    t_connect: float = -1.0
    t_response: float = -1.0


class ClientSession:
    """Serves one client connection until it closes or breaks.

    Args:
        ctx: the frontend's shared context.
        stream: the client stream (TLS already terminated).
        client: the client's address, for X-Forwarded-For, logs and source hashing.
        nursery: where its upstreams' lease holders run if the frontend's is not open.
        origin: the client's and the frontend's addresses (the access log's client
            port; PROXY headers and transparent connects carry them).
    """

    def __init__(
        self, ctx: ProxyContext, stream: trio.abc.Stream, client: str, nursery: trio.Nursery,
        *, origin: Peer = UNKNOWN_PEER,
    ) -> None:
        self.ctx = ctx
        s = ctx.settings
        conn = WireConnection(server=True, max_head_bytes=s.max_header_bytes)
        self.client = HttpStream(stream, conn, receive_size=s.receive_size)
        self.client_ip = client
        self.client_port = 0 if origin.client is None else origin.client[1]
        self.upstreams = ClientUpstreams(ctx.shared, nursery, client, s.receive_size,
                                         ctx.report, ctx.events, origin)
        self.requests = 0
        self.limits = HeadLimits(s.max_header_bytes, s.max_header_count)
        self.trusted = s.trusts(client)
        self.ip_ok = valid_field_value(client.encode("ascii", "replace"))  # for X-Forwarded-For

    def __repr__(self) -> str:
        return f"<ClientSession {self.client_ip} requests={self.requests} {self.upstreams!r}>"

    async def run(self) -> None:
        """Serve requests until the connection ends; then its upstreams are parked or closed
        (only closed after an error or a cancellation: their state is not known)."""
        clean = False
        try:
            await self._serve()
            clean = True
        finally:
            self.upstreams.close_all(park=clean)

    async def _serve(self) -> None:
        s = self.ctx.settings
        deadline = trio.current_time() + s.header_timeout
        while True:
            waiting = trio.current_time()
            head = await self._read_request(deadline)
            if head is None:
                return
            started = trio.current_time()
            self.requests += 1
            profile, keep = await self._handle(*head, started, started - waiting)
            if not keep or not self._next_cycle():
                return
            if self.client.buffered():
                # A pipelined request is already here and could be served without
                # ever blocking: let every other connection have its turn first.
                await trio.lowlevel.checkpoint()
            deadline = trio.current_time() + profile.idle_timeout

    async def _read_request(self, deadline: float) -> tuple[Request, Target] | None:
        s = self.ctx.settings
        try:
            event = await self.client.next_request(deadline, s.header_timeout)
        except IdleTimeout:
            return None
        except HeaderTimeout:
            await self._refuse(responses.request_timeout(), Termination.HEADER_TIMEOUT)
            return None
        except WireError as exc:
            if exc.status == 431:
                events = responses.headers_too_large(f"over {s.max_header_bytes} bytes")
                await self._refuse(events, Termination.HEADERS_TOO_LARGE)
            else:
                await self._refuse(responses.bad_request(str(exc)), Termination.BAD_REQUEST)
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not isinstance(event, Request):
            return None  # ConnectionClosed: the client is done
        verdict = request_refusal(event, self.limits)
        if verdict is None:
            target = parse_target(event.method, event.target)
            if isinstance(target, Target):
                return event, target
            verdict = target
        term = Termination.HEADERS_TOO_LARGE if verdict.status == 431 else Termination.BAD_REQUEST
        await self._refuse(responses.refused(verdict.status, verdict.reason), term)
        return None

    async def _refuse(self, events: responses.ErrorEvents, term: Termination) -> None:
        """Answer a request the proxy rejects on its own (the connection then closes)."""
        with contextlib.suppress(*PEER_ERRORS):
            await self.client.send(*events)
        self._finish(
            RequestRecord(
                frontend=self.ctx.settings.name, client=self.client_ip, method="-", path="-",
                pool=None, server=None, status=events[0].status_code, bytes_in=0, bytes_out=0,
                duration=0.0, termination=term,
            )
        )

    def _next_cycle(self) -> bool:
        c = self.client.conn
        if c.ready_for_next_cycle():
            c.start_next_cycle()
            return True
        return False

    async def _handle(
        self, request: Request, target: Target, started: float, waited: float
    ) -> tuple[TimeoutProfile, bool]:
        s = self.ctx.settings
        fields = request.headers
        if target.host is not None:  # absolute-form: its authority is the Host (RFC 9112 §3.2.2)
            fields = [(b"host", target.host), *(f for f in fields if f[0] != b"host")]
        pool_name = s.routes.pool_for(target.route_path, host_name(header_value(fields, b"host")))
        backend = None if pool_name is None else self.ctx.backends.get(pool_name)
        response_timeout = 60.0 if backend is None else backend.settings.response_timeout
        profile = timeout_profile(
            request.method,
            target.path,
            response_timeout=response_timeout,
            default_idle_timeout=s.default_idle_timeout,
            pool_idle_timeout=None if backend is None else backend.settings.idle_timeout,
        )
        if backend is None or pool_name is None:
            served = await self._answer(responses.no_route(target.path), Termination.NO_ROUTE)
        else:
            served = await self._forward(request, target, fields, pool_name, backend, profile)
        self._finish(
            RequestRecord(
                frontend=s.name,
                client=self.client_ip,
                method=request.method.decode("latin-1"),
                path=target.path,
                pool=pool_name,
                server=served.server,
                status=served.status,
                bytes_in=served.bytes_in,
                bytes_out=served.bytes_out,
                duration=trio.current_time() - started,
                termination=served.termination or Termination.COMPLETE,
                retries=served.retries,
                log=self._log_view(request, fields, waited, served, backend)
                if l7_events.access_log_on() else None,
            )
        )
        # Keep-alive needs a complete response; _next_cycle then checks the codec agrees.
        return profile, served.complete

    def _log_view(
        self, request: Request, fields: Headers, waited: float, served: Served,
        backend: Backend | None,
    ) -> RequestLog:
        members = () if backend is None else backend.pool.members
        return RequestLog(
            client_port=self.client_port,
            accepted=time.time() - (trio.current_time() - waited),
            t_request=waited,
            t_connect=served.t_connect,
            t_response=served.t_response,
            version=request.http_version.decode("latin-1"),
            host=(header_value(fields, b"host") or b"").decode("latin-1"),
            user_agent=(header_value(fields, b"user-agent") or b"").decode("latin-1"),
            fe_conn=self.ctx.connections(),
            be_conn=sum(m.active for m in members),
            srv_conn=next((m.active for m in members if m.name == served.server), 0),
        )

    def _finish(self, record: RequestRecord) -> None:
        self.ctx.events.request_finished(record)
        l7_events.log_access(record)

    async def _answer(
        self, events: responses.ErrorEvents, term: Termination | None = None, retries: int = 0
    ) -> Served:
        """Answer a routed request on the balancer's own behalf (404, 503)."""
        # Swallow the rest of the request if it is already here (a bodiless request's
        # end always is), so that the connection can stay alive.
        take_ready(self.client, [])
        status = events[0].status_code
        try:
            await self.client.send(*events)
        except PEER_ERRORS:
            return Served(status, Termination.CLIENT_ABORT, retries=retries)
        return Served(status, term, retries=retries, complete=True)

    async def _forward(
        self,
        request: Request,
        target: Target,
        fields: Headers,
        pool_name: str,
        backend: Backend,
        profile: TimeoutProfile,
    ) -> Served:
        has_body = declares_body(fields)
        headers = forwarded_request_headers(
            fields, client_ip=self.client_ip, scheme=self.ctx.settings.scheme,
            keep_chain=self.trusted,
        )
        pins = rebalance.request_pins(header_value(fields, b"authorization"))
        may_retry = backend.settings.retry.attempts > 1
        share = idle.may_take(reuse=backend.settings.reuse, replayable=policy.replayable(
            method=request.method, has_body=has_body, may_retry=may_retry),
            client_bound=backend.settings.client_bound)
        tried: list[str] = []
        retries = 0
        # The failed attempt a replay stands in for, and how it ended.
        replayed: tuple[Attempt, Termination | None] | None = None
        while True:
            picked = await self.upstreams.get(pool_name, backend, tried, share=share,
                                              fresh=replayed is not None)
            retries += picked.retries
            connect = picked.connect_time
            upstream = picked.upstream
            if upstream is None and replayed is not None:
                # No other server to replay on: the client hears what went wrong.
                return await self._conclude(*replayed, pool_name, retries)
            if upstream is None:
                if picked.last_error:
                    log.warning(
                        "pool %s: no server could be reached (%s)", pool_name, picked.last_error
                    )
                events = responses.no_server(pool_name)
                return await self._answer(events, Termination.NO_SERVER, retries)
            upstream.pinned |= pins  # NTLM or Negotiate on it: it stays with this client
            sent = headers
            if header_value(headers, b"host") is None:  # HTTP/1.0 without Host: name the server
                sent = [(b"host", upstream.member.fqdn.encode("ascii", "replace")), *headers]
            ok = sent is headers and self.ip_ok  # else the Host caslb added is checked
            head = forwarded_request(request.method, target.forward, sent, parsed=ok,
                                     length=request.length)
            relay = Relay(self.client, upstream, profile, self.limits)
            sent_at = trio.current_time()
            attempt = await relay.run(head, has_body)
            termination = policy.termination_after(
                attempt.termination, reset_by_pool=upstream.reset_by_pool
            )
            stale = policy.closed_while_kept(reused=picked.reused, termination=termination,
                                             response_started=attempt.response.started)
            self._after_attempt(pool_name, backend, relay, attempt, termination, blame=not stale)
            if policy.should_replay(
                method=request.method,
                has_body=has_body,
                response_started=attempt.response.started,
                replayed=replayed is not None,
                termination=termination,
                may_retry=may_retry,
            ):
                replayed = (attempt, termination)
                if not stale:  # else the same server, on a fresh connection
                    tried.append(upstream.member.name)
                retries += 1
                self.ctx.events.retried(pool_name, upstream.member.name, "upstream_error")
                continue
            server = upstream.member.name
            head_at = attempt.response.head_at
            return await self._conclude(attempt, termination, pool_name, retries, server,
                                        (connect, head_at - sent_at if head_at else -1.0))

    async def _conclude(
        self,
        attempt: Attempt,
        termination: Termination | None,
        pool_name: str,
        retries: int,
        server: str | None = None,
        timers: tuple[float, float] = (-1.0, -1.0),
    ) -> Served:
        """How the request ends after its last attempt (an error answer if nothing was sent)."""
        status = attempt.response.status
        if not attempt.response.started:
            failure = policy.failure_response(termination, pool_name, attempt.detail)
            if failure is not None:
                status = failure[0].status_code
                with contextlib.suppress(*PEER_ERRORS):
                    await self.client.send(*failure)
        return Served(status, termination, attempt.request.bytes_in, attempt.response.bytes_out,
                      server, retries, attempt.response.done, *timers)

    def _after_attempt(self, pool_name: str, backend: Backend, relay: Relay, attempt: Attempt,
                       termination: Termination | None, *, blame: bool = True) -> None:
        upstream = relay.upstream
        kept = termination is None and attempt.response.done and upstream.finish_cycle()
        if not kept:  # else kept for this client's next request
            self.upstreams.drop(pool_name)
        upstream.pinned |= attempt.response.pins  # its next request answers the challenge here
        outcome = policy.outcome_of(termination, attempt.response.status)
        if outcome is not None and blame:
            reason = termination.value if termination else f"status {attempt.response.status}"
            self.upstreams.observe(pool_name, backend, upstream.member, outcome, reason)
