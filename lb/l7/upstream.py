"""Upstream connections: the pool interface the proxy needs, the connector, leases.

Theory of operation. A client connection uses at most one upstream connection
per pool at a time (lb.l7.backends); lb.l7.rebalance decides when it is left
for another server. When its client is done with it (the client connection
ends, or leaves it for another server) a connection whose last exchange ended
cleanly is *parked* in its frontend's idle set (lb.l7.sharing, rules in
lb.l7.idle) rather than closed, and a later replayable request of any client
connection whose pick is that server takes it. A connection that ever carried
NTLM or Negotiate (`pinned`) is private to its client for life and closed with
it: those authenticate the TCP connection (docs/exchange.md).

Each upstream connection holds a lease on its server for its whole life: the
pool counts it as active while it carries a client, not while it is parked
(`Pool.set_idle`), and may cancel the lease's scope to reset it (server DOWN, end
of a drain grace; a parked one also on a drain).

A lease's cancel scope can be entered only once and scopes must nest, yet an
upstream connection outlives each request, several can be open at once, and a
parked one outlives its client. So each one gets a small holder task in the
frontend's nursery (never a client connection's, which ends with its client):
it enters the lease and its scope, then sleeps until the connection is closed,
inside an idle scope whose deadline is the end of its idle life while parked.
When the pool cancels the scope, the holder wakes and closes the stream under
the proxy's feet; the proxy's pending read or write fails and it answers as
for any upstream failure (502 before a response byte, else an abort). When a
parked connection closes, whatever closed it, the holder tells its idle set
(`on_close`), which alone holds the set's membership.

A connect that fails for the balancer's own lack of fds or buffers
(probes/local_resources.py) raises `ConnectFailed` with `local` set: the
proxy then blames no server, tries no other, and answers 503; the condition
is logged here once per interval.
"""

from __future__ import annotations

import logging
import math
import select
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from lb.dial import DIRECT, Dial, open_tcp, socket_of
from lb.l7.adapter import HttpStream
from lb.l7.idle import Reuse
from lb.l7.poolview import Lease, Member, Pool
from lb.l7.rebalance import RECHECK_EVERY
from lb.l7.tlsresume import UpstreamSessions, session_key
from lb.l7.wire.connection import WireConnection
from lb.l7.wire.events import IDLE
from lb.retry import RetryPolicy, RetryTo
from lb.tls import FQDN_NAMES, UpstreamNames, certificate_matches
from probes.local_resources import OncePerInterval, is_local_resource_error

log = logging.getLogger("caslb.l7")
_out_of_resources = OncePerInterval()


Connector = Callable[[Member, float, Dial], Awaitable[trio.abc.Stream]]
"""connector(member, timeout, dial) → a connected (TLS if needed) stream to the member."""


class ConnectFailed(Exception):
    """Opening an upstream connection failed; the message names the server and why.

    Attributes:
        local: the balancer, not the server, ran out of fds or buffers.
    """

    def __init__(self, message: str, *, local: bool = False) -> None:
        super().__init__(message)
        self.local = local


@dataclass(frozen=True)
class UpstreamSettings:
    """How the proxy talks to one pool's servers.

    Attributes:
        connect_timeout: seconds for TCP connect plus TLS handshake.
        tls: client context for re-encryption, or None for plain HTTP.
        response_timeout: seconds a short request may wait for the response head.
        retries: how many retries a connect failure gets (and whether a failed
            idempotent request is replayed: not with none).
        idle_timeout: how long a kept-alive client of this pool may stay silent;
            None for its protocol's (the catalog's) or the frontend's.
        retry_to: which server a retry goes to (another, the same, or off).
        names: the SNI and verified name of re-encryption.
        proxy_protocol: the PROXY header version sent first on each new
            upstream connection, 0 for none.
        transparent: connect from the client's address (lb/dial.py).
        reuse: whether idle connections are shared between client
            connections (lb.l7.idle).
    """

    connect_timeout: float = 3.0
    tls: ssl.SSLContext | None = None
    response_timeout: float = 60.0
    retries: int = 2
    idle_timeout: float | None = None
    retry_to: RetryTo = RetryTo.ANOTHER
    names: UpstreamNames = FQDN_NAMES
    proxy_protocol: int = 0
    transparent: bool = False
    reuse: Reuse = Reuse.SAFE

    def __post_init__(self) -> None:
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, not {self.connect_timeout!r}")
        if not self.response_timeout > 0:
            raise ValueError(f"response_timeout must be positive, not {self.response_timeout!r}")
        if self.proxy_protocol not in (0, 1, 2):
            raise ValueError(f"proxy_protocol {self.proxy_protocol!r} is not 0, 1 or 2")
        object.__setattr__(self, "retry", RetryPolicy(self.retries, self.retry_to))

    retry: RetryPolicy = field(init=False, repr=False, compare=False)
    """Its retries and where they go (derived: read once per request)."""

    @property
    def client_bound(self) -> bool:
        """Whether each connection carries its client's address (PROXY header, transparent)."""
        return self.proxy_protocol != 0 or self.transparent


def tcp_connector(tls: ssl.SSLContext | None, names: UpstreamNames = FQDN_NAMES) -> Connector:
    """A connector over TCP (TCP_NODELAY, as trio sets by default), TLS-wrapped if `tls`
    (resuming each server's last TLS session: lb/l7/tlsresume.py).

    With TLS, SNI and the verified name follow `names` (by default both the
    member's FQDN, checked by ssl itself; else checked here after the handshake,
    the context having `check_hostname` off). The dial's preamble (a PROXY
    header) goes before the ClientHello.
    """

    sessions = UpstreamSessions()

    async def connect(member: Member, timeout: float, dial: Dial = DIRECT) -> trio.abc.Stream:
        with trio.move_on_after(timeout) as scope:
            tcp = await open_tcp(member.host, member.port, dial)
            if tls is None:
                return tcp
            sni, verified = names.for_server(member.fqdn)
            stream = trio.SSLStream(tcp, tls, server_hostname=sni, https_compatible=True)
            key = session_key(tls, sni, member.host, member.port)
            offered = sessions.offer(stream, key)
            try:
                await stream.do_handshake()
                if tls.verify_mode is not ssl.CERT_NONE and not tls.check_hostname:
                    _check_name(stream, verified)
            except BaseException:
                sessions.failed(key)
                await trio.aclose_forcefully(stream)
                raise
            sessions.handshaken(stream, key, offered)
            return stream
        assert scope.cancelled_caught
        raise TimeoutError(f"connect timeout after {timeout:g}s")

    return connect


def _check_name(stream: trio.SSLStream[trio.abc.Stream], name: str) -> None:
    cert = stream.getpeercert()
    if cert is None or not certificate_matches(cert, name):
        error = ssl.SSLCertVerificationError(f"certificate is not valid for {name!r}")
        error.verify_message = f"certificate is not valid for {name!r}"
        raise error


def describe_error(exc: BaseException) -> str:
    """A short, lowercase description of a connect or I/O failure for logs."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        exc = cause
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    text = str(exc) or type(exc).__name__
    return text[:200]


class _ReadableProbe:
    """Tells whether a connection's socket has bytes or EOF pending, without waiting.

    Asked before every reuse of an upstream connection, so the socket is found
    and the poll object registered once per connection, not per request.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._socket = socket_of(stream)
        self._poller: select.poll | None = None
        self._fd = -1

    def __call__(self) -> bool:
        if self._socket is None:
            return False
        fd = self._socket.fileno()
        if fd < 0:
            return True
        if fd != self._fd:  # first use: a connection keeps its fd until closed
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN)
            self._fd = fd
        assert self._poller is not None
        return bool(self._poller.poll(0))


class UpstreamConnection:
    """One upstream connection of one client connection, with its lease holder.

    Attributes:
        pool: the pool name.
        member: the server.
        io: the codec's client side of the connection.
        reset_by_pool: True once the pool cancelled the lease.
        pinned: bound to its client by NTLM or Negotiate (lb.l7.rebalance):
            never balanced away while usable.
        rebalance_at: trio time from which its client's next request is
            balanced afresh (lb.l7.rebalance.RECHECK_EVERY after the last time).
        lease: its lease, once the holder holds it.
        on_close: called once when it closes while parked (its idle set forgets it).
    """

    def __init__(
        self, pool: str, member: Member, stream: trio.abc.Stream, receive_size: int
    ) -> None:
        self.pool = pool
        self.member = member
        self.io = HttpStream(stream, WireConnection(server=False), receive_size=receive_size)
        self.reset_by_pool = False
        self.pinned = False
        self.rebalance_at = trio.current_time() + RECHECK_EVERY
        self._done = trio.Event()
        self._readable_now = _ReadableProbe(stream)
        self.lease: Lease | None = None
        self.on_close: Callable[[UpstreamConnection], None] | None = None
        self._idle: trio.CancelScope | None = None  # the holder's: its deadline ends a park

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.pool}/{self.member.name} {self.io!r}>"

    @property
    def closed(self) -> bool:
        """Whether the connection was closed (by the proxy or the pool)."""
        return self._done.is_set()

    def reusable(self, *, panic: bool = False) -> bool:
        """Whether the next request of the same client may go over this connection.

        With `panic` (no member of the pool is eligible, so the pool routes to
        all), an ineligible member's connection is kept rather than replaced.

        It must be `usable`, and its member eligible.
        """
        return (self.member.eligible or panic) and self.usable()

    def usable(self) -> bool:
        """Whether the connection itself can carry another request, whatever its server's state.

        Besides the codec's states, the socket must not be readable: an idle upstream
        connection that is readable was closed by the server (IIS closes idle
        ones after 2 minutes), and a POST sent over it would fail with nothing
        to retry.
        """
        c = self.io.conn
        return (
            not self.closed
            and c.our_state is IDLE
            and c.their_state is IDLE
            and not self._readable_now()
        )

    def finish_cycle(self) -> bool:
        """Ready the connection for another request if the last one ended cleanly.

        Bytes already received past the end of the response are not an answer to
        anything: read as the next response, they would answer another request
        of this client with what the server (or someone on its path) injected.
        Such a connection is not reused.
        """
        c = self.io.conn
        if self.io.buffered():
            return False
        if not self.closed and c.ready_for_next_cycle():
            c.start_next_cycle()
            return True
        return False

    @property
    def lease_valid(self) -> bool:
        """Whether the pool has neither reset its lease nor given it a deadline (a drain)."""
        lease = self.lease
        return (lease is not None and not lease.scope.cancel_called
                and lease.scope.deadline == math.inf)

    def idle_until(self, deadline: float) -> None:
        """Close the connection at `deadline` unless a client takes it first (`math.inf`)."""
        if self._idle is not None:
            self._idle.deadline = deadline

    def close(self) -> None:
        """Close the connection; the holder task closes the stream and ends the lease."""
        self._done.set()

    async def hold(self, pool: Pool, task_status: trio.TaskStatus[None]) -> None:
        """Hold the lease until `close`, the idle deadline, or the pool's reset (in a nursery)."""
        try:
            with pool.lease(self.member) as lease:
                self.lease = lease
                with lease.scope:
                    task_status.started()
                    with trio.CancelScope() as self._idle:
                        await self._done.wait()
                if lease.scope.cancelled_caught:
                    self.reset_by_pool = True
        finally:
            self._done.set()
            self._idle = None
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close(self)
            await trio.aclose_forcefully(self.io.stream)


async def open_upstream(
    nursery: trio.Nursery,
    pool: Pool,
    member: Member,
    connector: Connector,
    timeout: float,
    receive_size: int,
    dial: Dial = DIRECT,
) -> UpstreamConnection:
    """Connect to `member` (as `dial` says) and start the holder of its lease in `nursery`
    (the frontend's: the holder outlives the client connection if the connection is parked).

    Raises:
        ConnectFailed: naming the server and the cause.
    """
    try:
        with trio.fail_after(timeout):
            stream = await connector(member, timeout, dial)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError) as exc:
        message = f"{member.name}: {describe_error(exc)}"
        local = is_local_resource_error(exc)
        if local and (line := _out_of_resources.line(
                f"pool {pool.name}: requests refused with 503, the balancer is out of fds or "
                f"buffers (last: connect to {message})")) is not None:
            log.warning("%s", line)
        raise ConnectFailed(message, local=local) from exc
    upstream = UpstreamConnection(pool.name, member, stream, receive_size)
    try:
        await nursery.start(upstream.hold, pool)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return upstream
