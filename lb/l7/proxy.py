"""The per-connection HTTP proxy loop: read a request, route it, relay it, repeat.

Theory of operation. One `ClientSession` serves one client connection. It
reads a request head with h11 (under the idle and header timeouts), routes it
to a pool (lb.l7.routing) and relays it over that pool's upstream connection
of this client, opening one if needed (lb.l7.upstream). Requests of one client
are strictly sequential, as HTTP/1.1 without pipelining to the server demands.

Relaying streams both ways at once and never buffers a body. A request with a
body runs two loops concurrently: the request pump (client → server) and the
response reader (server → client). Neither waits for the other: Outlook's
RPC_IN_DATA streams a 1 GB body and never gets a response while healthy, and
a server may answer (an error, a 401) before the body ends. A request without
a body takes a single-task fast path: head and end go upstream in one write.
Each Data event is forwarded as soon as it is parsed, so a chunked response
(MAPI `PENDING`, EWS streaming) reaches the client chunk by chunk; a response
head and whatever body is already buffered go out in one write.

Timeouts: the response head of a short request must arrive within the
response timeout after the request ends; long-lived protocols get none. Every
read during an exchange is bounded by the protocol's idle timeout instead.

Failures: a connect failure is retried on another server (nothing was sent).
An idempotent request without a body whose upstream fails before any response
byte is retried once on another server. Otherwise the client gets 502 (504 on
a response timeout) if no response byte reached it yet, else the connection
is cut. Every attempt's outcome feeds the passive report callback and the
pool's outlier detector; an ejected server is excluded from picks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import h11
import trio

from lb.l7 import responses
from lb.l7.adapter import H11Stream, HeaderTimeout, IdleTimeout, deadline_after
from lb.l7.events import L7Events, Report, RequestRecord, Termination, log_access
from lb.l7.framing import ambiguous_framing
from lb.l7.headers import (
    HOP_BY_HOP,
    Headers,
    declares_body,
    forwarded_request_headers,
    forwarded_response_headers,
    header_value,
)
from lb.l7.routing import TimeoutProfile, host_name, request_path, timeout_profile
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import (
    ConnectFailed,
    Connector,
    Member,
    Pool,
    UpstreamConnection,
    UpstreamSettings,
    describe_error,
    open_upstream,
)
from probes.outlier import Outcome, OutlierDetector

log = logging.getLogger("caslb.l7")

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_UPSTREAM_ERRORS = (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)
_CLIENT_ERRORS = (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)
_GATEWAY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Backend:
    """Everything the proxy needs about one pool.

    Attributes:
        pool: the pool (picks and leases members).
        settings: how to talk to its servers.
        connector: opens a stream to one of its servers.
        outliers: its outlier detector, or None when detection is off.
    """

    pool: Pool
    settings: UpstreamSettings
    connector: Connector
    outliers: OutlierDetector | None


@dataclass(frozen=True)
class ProxyContext:
    """What every client session of one frontend shares.

    Attributes:
        settings: the frontend's settings.
        backends: pool name → backend.
        report: passive health callback report(pool, server, ok, reason).
        events: metrics sink.
    """

    settings: HttpFrontendSettings
    backends: Mapping[str, Backend]
    report: Report
    events: L7Events


class _Relay:
    """Mutable state of one attempt to relay a request (shared by the two loops)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "detail",
        "head_wait",
        "request_done",
        "response_done",
        "response_started",
        "status",
        "termination",
        "upstream_write_failed",
    )

    def __init__(self) -> None:
        self.status: int | None = None
        self.termination: Termination | None = None
        self.detail = ""
        self.response_started = False
        self.response_done = False
        self.request_done = False
        self.upstream_write_failed = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.head_wait: trio.CancelScope | None = None

    def fail(self, termination: Termination, detail: str) -> None:
        if self.termination is None:  # the first failure is the cause
            self.termination = termination
            self.detail = detail

    @property
    def ok(self) -> bool:
        return self.termination is None and self.response_done


class ClientSession:
    """Serves one client connection until it closes or breaks.

    Args:
        ctx: the frontend's shared context.
        stream: the client stream (TLS already terminated).
        client: the client's address, for X-Forwarded-For, logs and source hashing.
        nursery: where the lease holders of this session's upstreams run.
    """

    def __init__(
        self, ctx: ProxyContext, stream: trio.abc.Stream, client: str, nursery: trio.Nursery
    ) -> None:
        self.ctx = ctx
        s = ctx.settings
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=s.max_header_bytes)
        self.client = H11Stream(stream, conn, receive_size=s.receive_size)
        self.client_ip = client
        self.nursery = nursery
        self.upstreams: dict[str, UpstreamConnection] = {}
        self.requests = 0

    def __repr__(self) -> str:
        pools = list(self.upstreams)
        return f"<ClientSession {self.client_ip} requests={self.requests} upstreams={pools}>"

    async def run(self) -> None:
        """Serve requests until the connection ends; upstreams are closed on return."""
        try:
            await self._serve()
        finally:
            for upstream in self.upstreams.values():
                upstream.close()
            self.upstreams.clear()

    async def _serve(self) -> None:
        s = self.ctx.settings
        deadline = trio.current_time() + s.header_timeout
        while True:
            request = await self._read_request(deadline)
            if request is None:
                return
            started = trio.current_time()
            self.requests += 1
            profile, keep = await self._handle(request, started)
            if not keep or not self._next_cycle():
                return
            deadline = trio.current_time() + profile.idle_timeout

    async def _read_request(self, deadline: float) -> h11.Request | None:
        s = self.ctx.settings
        try:
            event = await self.client.next_request(deadline, s.header_timeout)
        except IdleTimeout:
            return None
        except HeaderTimeout:
            await self._refuse(responses.request_timeout(), Termination.HEADER_TIMEOUT, "-")
            return None
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                events = responses.headers_too_large(f"over {s.max_header_bytes} bytes")
                await self._refuse(events, Termination.HEADERS_TOO_LARGE, "-")
            else:
                await self._refuse(responses.bad_request(str(exc)), Termination.BAD_REQUEST, "-")
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed: the client is done
        # h11 bounds only heads that arrive in pieces; a whole head read at once is checked here.
        # (raw_items() is a plain list: iterating h11's Headers itself costs a call per field.)
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers.raw_items())
        if size > s.max_header_bytes:
            detail = f"{size} bytes, limit {s.max_header_bytes}"
            await self._refuse(
                responses.headers_too_large(detail), Termination.HEADERS_TOO_LARGE, "-"
            )
            return None
        framing = ambiguous_framing(event.headers.raw_items())
        if framing is not None:
            await self._refuse(responses.bad_request(framing), Termination.BAD_REQUEST, "-")
            return None
        if len(event.headers) > s.max_header_count:
            detail = f"{len(event.headers)} header fields, limit {s.max_header_count}"
            await self._refuse(
                responses.headers_too_large(detail), Termination.HEADERS_TOO_LARGE, "-"
            )
            return None
        return event

    async def _refuse(self, events: responses.ErrorEvents, term: Termination, path: str) -> None:
        """Answer a request the proxy rejects on its own (the connection then closes)."""
        with contextlib.suppress(*_CLIENT_ERRORS):
            await self.client.send(*events)
        self._finish(
            RequestRecord(
                self.ctx.settings.name,
                self.client_ip,
                "-",
                path,
                None,
                None,
                events[0].status_code,
                0,
                0,
                0.0,
                term,
            )
        )

    def _next_cycle(self) -> bool:
        c = self.client.conn
        if c.our_state is h11.DONE and c.their_state is h11.DONE:
            c.start_next_cycle()
            return True
        return False

    async def _handle(self, request: h11.Request, started: float) -> tuple[TimeoutProfile, bool]:
        s = self.ctx.settings
        # The header fields as one plain list, read by every step below: h11's
        # Headers is a Sequence whose iteration costs a method call per field.
        fields: Headers = list(request.headers)
        path = request_path(request.target)
        pool_name = s.routes.pool_for(path, host_name(header_value(fields, b"host")))
        backend = None if pool_name is None else self.ctx.backends.get(pool_name)
        response_timeout = 60.0 if backend is None else backend.settings.response_timeout
        profile = timeout_profile(
            request.method,
            path,
            response_timeout=response_timeout,
            default_idle_timeout=s.default_idle_timeout,
        )
        if backend is None or pool_name is None:
            relay, server, retries = await self._answer(responses.no_route(path)), None, 0
        else:
            relay, server, retries = await self._forward(
                request, fields, pool_name, backend, profile
            )
        self._finish(
            RequestRecord(
                s.name,
                self.client_ip,
                request.method.decode("latin-1"),
                path,
                pool_name,
                server,
                relay.status,
                relay.bytes_in,
                relay.bytes_out,
                trio.current_time() - started,
                relay.termination or Termination.COMPLETE,
                retries,
            )
        )
        # Keep-alive needs a complete response; _next_cycle then checks h11 agrees.
        return profile, relay.response_done

    def _finish(self, record: RequestRecord) -> None:
        self.ctx.events.request_finished(record)
        log_access(record)

    async def _answer(
        self, events: responses.ErrorEvents, term: Termination | None = None
    ) -> _Relay:
        relay = _Relay()
        relay.status = events[0].status_code
        # Swallow the rest of the request if it is already here (a bodiless request's
        # end always is), so that the connection can stay alive.
        _take_ready(self.client, [])
        try:
            await self.client.send(*events)
            relay.response_done = True
        except _CLIENT_ERRORS as exc:
            relay.fail(Termination.CLIENT_ABORT, describe_error(exc))
        if term is not None:
            relay.fail(term, "")
        return relay

    # -- upstream choice -------------------------------------------------------------

    async def _upstream(
        self, pool_name: str, backend: Backend, tried: set[str]
    ) -> tuple[UpstreamConnection | None, int, str]:
        """This client's connection to `pool_name`, reused or opened (with connect retries).

        Returns the connection (None when no server could be had), the number of
        retries spent, and the last connect error.
        """
        current = self.upstreams.get(pool_name)
        now = trio.current_time()
        if current is not None:
            ejected = backend.outliers is not None and backend.outliers.is_ejected(
                current.member.name, now
            )
            # Panic (no eligible member) matters only when this member is not eligible.
            panic = not current.member.eligible and not any(
                m.eligible for m in backend.pool.members
            )
            if current.reusable(panic=panic) and not ejected:
                return current, 0, ""
            self._drop(pool_name)
        retries, last_error = 0, ""
        for attempt in range(backend.settings.retries + 1):
            exclude = set(tried)
            if backend.outliers is not None:
                exclude |= backend.outliers.ejected(now)
            member = backend.pool.pick(now, client=self.client_ip, exclude=exclude)
            if member is None:
                break
            if attempt:
                retries += 1
            try:
                upstream = await open_upstream(
                    self.nursery,
                    backend.pool,
                    member,
                    backend.connector,
                    backend.settings.connect_timeout,
                    self.ctx.settings.receive_size,
                )
            except ConnectFailed as exc:
                if exc.local:  # the balancer's own fds ran out: no server's fault, 503
                    return None, retries, ""
                last_error = str(exc)
                tried.add(member.name)
                self._observe(pool_name, backend, member, Outcome.GATEWAY_FAILURE, "connect")
                self.ctx.events.retried(pool_name, member.name, "connect")
                log.warning("pool %s: connect to %s failed: %s", pool_name, member.name, exc)
                now = trio.current_time()
                continue
            self.upstreams[pool_name] = upstream
            return upstream, retries, ""
        return None, retries, last_error

    def _drop(self, pool_name: str) -> None:
        upstream = self.upstreams.pop(pool_name, None)
        if upstream is not None:
            upstream.close()

    def _observe(
        self, pool_name: str, backend: Backend, member: Member, outcome: Outcome, reason: str
    ) -> None:
        self.ctx.report(pool_name, member.name, outcome is Outcome.SUCCESS, reason)
        if backend.outliers is None:
            return
        size = _pool_size(backend.pool)
        ejection = backend.outliers.record(
            member.name, outcome, trio.current_time(), pool_size=size
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
            self.ctx.events.ejected(pool_name, ejection)

    # -- forwarding ------------------------------------------------------------------

    async def _forward(
        self,
        request: h11.Request,
        fields: Headers,
        pool_name: str,
        backend: Backend,
        profile: TimeoutProfile,
    ) -> tuple[_Relay, str | None, int]:
        has_body = declares_body(fields)
        replayable = not has_body and request.method.upper() in IDEMPOTENT_METHODS
        tried: set[str] = set()
        retries = 0
        replayed = False
        while True:
            upstream, spent, last_error = await self._upstream(pool_name, backend, tried)
            retries += spent
            if upstream is None:
                if last_error:
                    log.warning("pool %s: no server could be reached (%s)", pool_name, last_error)
                relay = await self._answer(responses.no_server(pool_name), Termination.NO_SERVER)
                return relay, None, retries
            relay = await self._relay(upstream, request, fields, profile, has_body)
            self._after_attempt(pool_name, backend, upstream, relay)
            if (
                replayable
                and not relay.response_started
                and not replayed
                and relay.termination in (Termination.UPSTREAM_ERROR, Termination.SERVER_RESET)
            ):
                replayed = True
                tried.add(upstream.member.name)
                retries += 1
                self.ctx.events.retried(pool_name, upstream.member.name, "upstream_error")
                continue
            if not relay.response_started and relay.termination is not None:
                await self._fail_response(relay, pool_name)
            return relay, upstream.member.name, retries

    def _after_attempt(
        self, pool_name: str, backend: Backend, upstream: UpstreamConnection, relay: _Relay
    ) -> None:
        if upstream.reset_by_pool and relay.termination is not None:
            relay.termination = Termination.SERVER_RESET
        if relay.termination is None and relay.response_done and upstream.finish_cycle():
            pass  # kept for the next request of this client
        else:
            self._drop(pool_name)
        outcome = _outcome(relay)
        if outcome is not None:
            reason = relay.termination.value if relay.termination else f"status {relay.status}"
            self._observe(pool_name, backend, upstream.member, outcome, reason)

    async def _fail_response(self, relay: _Relay, pool_name: str) -> None:
        """Tell the client its request failed upstream, if it is still there."""
        if relay.termination in (Termination.CLIENT_ABORT, Termination.IDLE_TIMEOUT):
            return
        if relay.termination is Termination.UPSTREAM_TIMEOUT:
            events = responses.gateway_timeout(pool_name)
        elif relay.termination is Termination.BAD_REQUEST:
            events = responses.bad_request(relay.detail)
        else:
            events = responses.bad_gateway(pool_name, relay.detail or "upstream failed")
        relay.status = events[0].status_code
        with contextlib.suppress(*_CLIENT_ERRORS):
            await self.client.send(*events)

    async def _relay(
        self,
        upstream: UpstreamConnection,
        request: h11.Request,
        fields: Headers,
        profile: TimeoutProfile,
        has_body: bool,
    ) -> _Relay:
        relay = _Relay()
        headers = forwarded_request_headers(
            fields, client_ip=self.client_ip, scheme=self.ctx.settings.scheme
        )
        if header_value(headers, b"host") is None:
            headers.insert(0, (b"host", upstream.member.fqdn.encode("ascii", "replace")))
        head = h11.Request(method=request.method, target=request.target, headers=headers)
        if not has_body:
            await self._relay_bodiless(upstream, relay, head, profile)
            return relay
        try:
            await upstream.io.send(head)
        except _UPSTREAM_ERRORS as exc:
            relay.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
            return relay
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_request, upstream, relay, profile, nursery.cancel_scope)
            await self._relay_response(upstream, relay, profile, nursery.cancel_scope)
            # The response is over: stop pumping. If the body was not finished, h11's
            # states forbid reuse of either connection, so both get closed.
            nursery.cancel_scope.cancel()
        return relay

    async def _relay_bodiless(
        self,
        upstream: UpstreamConnection,
        relay: _Relay,
        head: h11.Request,
        profile: TimeoutProfile,
    ) -> None:
        end: h11.Event = h11.EndOfMessage()
        if self.client.conn.their_state is not h11.DONE:  # not consumed by an earlier attempt
            try:
                end = await self.client.next_event()  # parsed already: no body to wait for
            except _CLIENT_ERRORS as exc:
                relay.fail(Termination.CLIENT_ABORT, describe_error(exc))
                return
        if not isinstance(end, h11.EndOfMessage):
            relay.fail(
                Termination.BAD_REQUEST, f"unexpected {type(end).__name__} after request head"
            )
            return
        try:
            await upstream.io.send(head, end)
        except _UPSTREAM_ERRORS as exc:
            relay.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
            return
        relay.request_done = True
        await self._relay_response(upstream, relay, profile, None)

    async def _pump_request(
        self,
        upstream: UpstreamConnection,
        relay: _Relay,
        profile: TimeoutProfile,
        cancel: trio.CancelScope,
    ) -> None:
        """Client → server body pump; runs beside the response reader."""
        while True:
            with trio.move_on_after(profile.idle_timeout) as idle:
                try:
                    event = await self.client.next_event()
                except h11.RemoteProtocolError as exc:
                    # A body cut short by the client leaving is an abort; anything
                    # else (bad chunk framing) is a bad request.
                    left = self.client.peer_closed
                    relay.fail(
                        Termination.CLIENT_ABORT if left else Termination.BAD_REQUEST,
                        describe_error(exc),
                    )
                    cancel.cancel()
                    return
                except _CLIENT_ERRORS as exc:
                    relay.fail(Termination.CLIENT_ABORT, describe_error(exc))
                    cancel.cancel()
                    return
            if idle.cancelled_caught:
                relay.fail(Termination.IDLE_TIMEOUT, "request body stalled")
                cancel.cancel()
                return
            if isinstance(event, h11.ConnectionClosed):
                relay.fail(Termination.CLIENT_ABORT, "client closed mid-body")
                cancel.cancel()
                return
            batch = [event]
            _take_ready(self.client, batch)
            relay.bytes_in += sum(len(e.data) for e in batch if isinstance(e, h11.Data))
            finished = isinstance(batch[-1], h11.EndOfMessage)
            try:
                await upstream.io.send(*batch)
            except _UPSTREAM_ERRORS:
                # The reader may still get the server's answer (e.g. an RPC 503): let it.
                relay.upstream_write_failed = True
                self._arm_head_wait(relay, profile)
                return
            if finished:
                relay.request_done = True
                self._arm_head_wait(relay, profile)
                return

    @staticmethod
    def _arm_head_wait(relay: _Relay, profile: TimeoutProfile) -> None:
        if relay.head_wait is not None and not relay.response_started:
            relay.head_wait.deadline = trio.current_time() + _head_wait(profile)

    async def _relay_response(
        self,
        upstream: UpstreamConnection,
        relay: _Relay,
        profile: TimeoutProfile,
        cancel: trio.CancelScope | None,
    ) -> None:
        """Server → client: the response head, then each body event as it arrives."""
        response = await self._read_head(upstream, relay, profile)
        if response is None:
            if cancel is not None:
                cancel.cancel()
            return
        framing = ambiguous_framing(response.headers.raw_items())
        if framing is not None:
            # Never relayed, and the upstream is dropped: its next bytes cannot be trusted.
            relay.fail(Termination.UPSTREAM_ERROR, f"server sent {framing}")
            if cancel is not None:
                cancel.cancel()
            return
        relay.status = response.status_code
        relay.response_started = True
        head = response
        if any(name in HOP_BY_HOP for name, _ in response.headers):
            head = h11.Response(
                status_code=response.status_code,
                headers=forwarded_response_headers(response.headers),
                reason=response.reason,
            )
        # else: h11 events are immutable, so the parsed head is relayed as it is
        # (skipping a second validation of every header).
        batch: list[h11.Event] = [head]
        while True:
            _take_ready(upstream.io, batch)
            try:
                await self.client.write(self._encode_batch(relay, batch))
            except _CLIENT_ERRORS as exc:
                relay.fail(Termination.CLIENT_ABORT, describe_error(exc))
                return
            if relay.response_done:
                return
            with trio.move_on_after(profile.idle_timeout) as idle:
                try:
                    event = await upstream.io.next_event()
                except _UPSTREAM_ERRORS as exc:
                    relay.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
                    return
            if idle.cancelled_caught:
                relay.fail(Termination.IDLE_TIMEOUT, "response body stalled")
                return
            if isinstance(event, h11.ConnectionClosed):
                relay.fail(Termination.UPSTREAM_ERROR, "server closed mid-response")
                return
            batch = [event]

    def _encode_batch(self, relay: _Relay, batch: list[h11.Event]) -> bytes:
        """Encode a response head and/or body events for the client, counting body bytes."""
        for event in batch:
            if isinstance(event, h11.Data):
                relay.bytes_out += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                relay.response_done = True
        return self.client.encode(*batch)

    async def _read_head(
        self, upstream: UpstreamConnection, relay: _Relay, profile: TimeoutProfile
    ) -> h11.Response | None:
        # Until the request ends the pump arms this wait (`_arm_head_wait`).
        wait = _head_wait(profile) if relay.request_done else None
        with trio.CancelScope(deadline=deadline_after(wait)) as scope:
            relay.head_wait = scope
            while True:
                try:
                    event = await upstream.io.next_event()
                except _UPSTREAM_ERRORS as exc:
                    relay.fail(Termination.UPSTREAM_ERROR, describe_error(exc))
                    return None
                if isinstance(event, h11.InformationalResponse):
                    if not await self._forward_informational(event, relay):
                        return None
                    continue
                if isinstance(event, h11.Response):
                    return event
                relay.fail(Termination.UPSTREAM_ERROR, "server closed before responding")
                return None
        relay.head_wait = None
        if relay.upstream_write_failed:
            relay.fail(Termination.UPSTREAM_ERROR, "server stopped reading the request")
        else:
            relay.fail(Termination.UPSTREAM_TIMEOUT, f"no response within {_head_wait(profile):g}s")
        return None

    async def _forward_informational(self, event: h11.InformationalResponse, relay: _Relay) -> bool:
        if event.status_code == 101:
            relay.fail(Termination.UPSTREAM_ERROR, "unrequested protocol switch")
            return False
        info = h11.InformationalResponse(
            status_code=event.status_code,
            headers=forwarded_response_headers(event.headers),
            reason=event.reason,
        )
        try:
            await self.client.send(info)
        except _CLIENT_ERRORS as exc:
            relay.fail(Termination.CLIENT_ABORT, describe_error(exc))
            return False
        return True


def _head_wait(profile: TimeoutProfile) -> float:
    """Seconds a finished request waits for the response head (the idle bound when long-lived)."""
    return profile.response_timeout or profile.idle_timeout


def _take_ready(io: H11Stream, batch: list[h11.Event]) -> None:
    """Append the body events `io` has already parsed, up to the end of the message."""
    if batch and isinstance(batch[-1], h11.EndOfMessage):
        return
    while True:
        try:
            event = io.ready_event()
        except h11.RemoteProtocolError:
            return  # h11 is in ERROR now: the caller's next read raises it where it is handled
        if not isinstance(event, h11.Data | h11.EndOfMessage):
            return
        batch.append(event)
        if isinstance(event, h11.EndOfMessage):
            return


def _outcome(relay: _Relay) -> Outcome | None:
    """What an attempt says about the server, or None when it says nothing."""
    if relay.termination in (
        Termination.CLIENT_ABORT,
        Termination.SERVER_RESET,
        Termination.BAD_REQUEST,
        Termination.IDLE_TIMEOUT,
    ):
        return None
    if relay.termination in (Termination.UPSTREAM_ERROR, Termination.UPSTREAM_TIMEOUT):
        return Outcome.GATEWAY_FAILURE
    if relay.status is not None and relay.status >= 500:
        return (
            Outcome.GATEWAY_FAILURE if relay.status in _GATEWAY_STATUSES else Outcome.SERVER_ERROR
        )
    return Outcome.SUCCESS


def _pool_size(pool: Pool) -> int:
    """How many servers `pool` has (at least 1)."""
    return max(1, len(pool.members))
