"""The L7 frontend: accept connections, terminate TLS, run a proxy session on each.

Accepting follows lb/listeners.py: bounded by `max_connections` (a token is
taken before accept, so excess clients wait in the kernel's backlog, not in
memory), paused while the process's fds are within the reserve or accept
lacks fds or buffers. Each connection's
handler contains its own failures: a TLS handshake that fails or stalls past
`handshake_timeout` costs that connection and a counter; any other error is
logged and closes that connection only. The listener never dies from a peer.

Upstream connections' lease holders run in the frontend's own nursery (the
one `serve` opens), not in a nursery per client connection: a connection its
client left may be parked for another client (lb.l7.sharing), and a retired
frontend's parked connections close when that nursery is cancelled after its
last client connection ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Mapping, Sequence

import trio

from lb.boundary import log_internal_error
from lb.dial import Peer, socket_of
from lb.l7 import tlsstream
from lb.l7.backends import Ejector
from lb.l7.events import L7Events, NullEvents, Report
from lb.l7.poolview import Pool
from lb.l7.proxy import Backend, ClientSession, ProxyContext
from lb.l7.settings import HttpFrontendSettings
from lb.l7.sharing import SharedUpstreams
from lb.l7.upstream import (
    Connector,
    UpstreamSettings,
    describe_error,
    tcp_connector,
)
from lb.listeners import UNGUARDED, AcceptGuard, accept_loop

log = logging.getLogger("caslb.l7")

def _ignore_report(pool: str, server: str, ok: bool, reason: str) -> None:
    return None


def peer_name(stream: trio.abc.Stream) -> str:
    """The client address of `stream` ("-" when it has none, e.g. in memory)."""
    sock = socket_of(stream)
    if sock is None:
        return "-"
    try:
        addr = sock.getpeername()
    except OSError:
        return "-"
    return str(addr[0]) if isinstance(addr, tuple) else str(addr)


class HttpFrontend:
    """One L7 frontend: settings, pools and the proxy sessions over them.

    Args:
        settings: the frontend's settings (routes, TLS, limits, timeouts).
        pools: pool name → pool, for every pool a route names.
        upstream: how to talk to the servers: one UpstreamSettings for all
            pools, or one per pool name (pools not named get the defaults).
        connector: opens upstream streams; by default TCP, TLS-wrapped with the
            pool's `UpstreamSettings.tls` context.
        report: passive health callback report(pool, server, ok, reason).
        events: metrics sink.
        ejections: pool name → that pool's outlier ejections (shared with every
            frontend routing to the pool); pools not named run without.
        guard: the process's accept guard (fd reserve, pause counter).

    Raises:
        ValueError: when a route names a pool that is not in `pools`.
    """

    def __init__(
        self,
        settings: HttpFrontendSettings,
        pools: Mapping[str, Pool],
        *,
        upstream: UpstreamSettings | Mapping[str, UpstreamSettings] | None = None,
        connector: Connector | None = None,
        report: Report | None = None,
        events: L7Events | None = None,
        ejections: Mapping[str, Ejector] | None = None,
        guard: AcceptGuard = UNGUARDED,
    ) -> None:
        missing = sorted(settings.routes.pools() - set(pools))
        if missing:
            raise ValueError(f"frontend {settings.name!r}: routes name unknown pools {missing}")
        self.settings = settings
        self.events: L7Events = events or NullEvents()
        backends = {
            name: self._backend(
                pool, _settings_for(upstream, name), connector, (ejections or {}).get(name)
            )
            for name, pool in pools.items()
        }
        self.limiter = trio.CapacityLimiter(settings.max_connections)
        self.open_connections = 0  # those being served, however they were accepted
        self.shared = SharedUpstreams(settings.name, self.events)
        self.context = ProxyContext(settings, backends, report or _ignore_report, self.events,
                                    self.shared, lambda: self.open_connections)
        self.guard = guard

    @staticmethod
    def _backend(
        pool: Pool,
        settings: UpstreamSettings,
        connector: Connector | None,
        outliers: Ejector | None,
    ) -> Backend:
        return Backend(
            pool=pool,
            settings=settings,
            connector=connector or tcp_connector(settings.tls, settings.names),
            outliers=outliers,
        )

    def __repr__(self) -> str:
        return (
            f"<HttpFrontend {self.settings.name} pools={sorted(self.context.backends)} "
            f"connections={self.limiter.borrowed_tokens}>"
        )

    def ejected(self, pool: str, now: float) -> frozenset[str]:
        """The servers outlier detection keeps out of `pool` at time `now`."""
        backend = self.context.backends[pool]
        return frozenset() if backend.outliers is None else backend.outliers.ejected(now)

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until cancelled (its parked upstreams close then)."""
        try:
            async with trio.open_nursery() as nursery:
                self.shared.nursery = nursery
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            self.shared.nursery = None

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery
    ) -> None:
        async with listener:
            await accept_loop(listener, self._handle_accepted, nursery,
                              name=f"frontend {self.settings.name}", limiter=self.limiter,
                              guard=self.guard)

    async def _handle_accepted(self, stream: trio.abc.Stream) -> None:
        await self.handle(stream, peer_name(stream))

    async def handle(self, stream: trio.abc.Stream, client: str) -> None:
        """Serve one client connection to its end; never raises for a peer's fault.

        Args:
            stream: the accepted stream (TLS is terminated here when configured).
            client: the client's address.
        """
        self.events.frontend_connection_opened(self.settings.name)
        self.open_connections += 1
        try:
            await self._serve_connection(stream, client)
        except Exception as exc:  # the failure boundary: this connection ends, nothing else
            log_internal_error(log, f"frontend {self.settings.name}: connection from {client}", exc)
            self.events.internal_error("l7")
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)
            self.events.frontend_connection_closed(self.settings.name)

    async def _serve_connection(self, stream: trio.abc.Stream, client: str) -> None:
        origin = Peer.of(stream)
        if self.settings.tls is not None:
            tls = await self._handshake(stream, self.settings.tls)
            if tls is None:
                return
            stream = tls
        if self.shared.nursery is not None:  # serving: the upstreams' holders run there
            await ClientSession(self.context, stream, client, self.shared.nursery,
                                origin=origin).run()
        else:  # called outside `serve`: this connection's upstreams are its own
            async with trio.open_nursery() as nursery:
                try:
                    await ClientSession(self.context, stream, client, nursery,
                                        origin=origin).run()
                finally:
                    nursery.cancel_scope.cancel()
        with trio.move_on_after(1.0):
            await stream.aclose()  # a clean TLS close_notify when the client is still there

    async def _handshake(
        self, stream: trio.abc.Stream, ctx: ssl.SSLContext
    ) -> trio.abc.Stream | None:
        # caslb's own TLS on a real socket (lb/l7/tlsstream.py: the request path's
        # syscall-first reads and writes); trio's for any other stream (tests'
        # in-memory pairs).
        tls: tlsstream.TlsStream | trio.SSLStream[trio.abc.Stream] = (
            tlsstream.TlsStream(stream, ctx) if isinstance(stream, trio.SocketStream)
            else trio.SSLStream(stream, ctx, server_side=True, https_compatible=True))
        reason = ""
        with trio.move_on_after(self.settings.handshake_timeout) as scope:
            try:
                await tls.do_handshake()
                _acknowledge_now(stream)
                return tls
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                reason = describe_error(exc)
        if scope.cancelled_caught:
            reason = f"handshake timeout after {self.settings.handshake_timeout:g}s"
        self.events.tls_handshake_failed(self.settings.name, reason)
        log.info("frontend %s: TLS handshake failed: %s", self.settings.name, reason)
        return None


def _acknowledge_now(stream: trio.abc.Stream) -> None:
    """ACK the client's last handshake flight now rather than in 40 ms.

    A TLS 1.3 client sends its Finished and then its first request; with Nagle on
    (Windows, curl without TCP_NODELAY) the request waits for the Finished to be
    acknowledged. The server has nothing to send until it reads that request, so
    the kernel's delayed ACK held every new connection's first request ~40 ms."""
    sock = socket_of(stream)
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _settings_for(
    upstream: UpstreamSettings | Mapping[str, UpstreamSettings] | None, pool: str
) -> UpstreamSettings:
    if upstream is None:
        return UpstreamSettings()
    if isinstance(upstream, UpstreamSettings):
        return upstream
    return upstream.get(pool, UpstreamSettings())
