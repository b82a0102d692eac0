"""One simulated CAS server at run time: listeners, connections, state, faults.

Theory of operation: a `ServerRuntime` owns one `ListenerSlot` per port kind
and tracks every live connection. Component states and faults are immutable
values it swaps on each change; handlers read them per request, so a change
applies to the next request on a kept-alive connection too. Faults that touch
sockets are applied at once and synchronously:

- crash: every slot CLOSED, every connection (and any parked one) reset;
- blackhole: every slot BLACKHOLE, live connections frozen: their tasks stop
  and their sockets stay open and silent (parked) until the fault clears;
- hang / slow: `gate()` holds each answer (hang until cleared, slow for its
  seconds); hang_tls holds new TLS handshakes the same way;
- bad_cert: the certificate is chosen per new TLS connection.

A connection task never lets a peer's misbehaviour escape: broken streams,
TLS errors and protocol errors end that connection only. An unexpected error
is counted and logged, never raised into the farm.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

import h11
import trio

from casfarm.auth import LAB_USERS, ConnectionAuth
from casfarm.certs import ServerTls
from casfarm.components import (
    Component,
    ComponentState,
    ComponentStates,
    HealthCache,
    Requester,
)
from casfarm.counters import Counters
from casfarm.ewsstream import EwsStore
from casfarm.faults import Fault, FaultKind, FaultSet, HealthAnswer, healthcheck_answer, stamped
from casfarm.gate import FarmAuth
from casfarm.http import IIS_CONNECTION_TIMEOUT, HttpExchange, next_request_id, serve_http
from casfarm.listeners import ListenerSlot
from casfarm.mail import serve_imap, serve_pop, serve_smtp
from casfarm.mailbox import Mailbox
from casfarm.slotplan import slot_mode
from casfarm.traffic import answer
from casfarm.trafficprofile import TrafficProfile
from casfarm.vdirs import Vdir
from casfarm.wire import LineTooLong, ResetConnection, reset_now

log = logging.getLogger("casfarm")

PORT_KINDS: tuple[str, ...] = ("https", "imap", "imaps", "pop", "pops", "smtp", "submission")
TLS_KINDS = frozenset({"https", "imaps", "pops"})
_PEER_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
    ssl.SSLError,
    ConnectionError,
    LineTooLong,
)


@dataclass(frozen=True)
class FarmServer:
    """Where one simulated server lives.

    Attributes:
        name: short name, e.g. "cas1".
        fqdn: e.g. "cas1.lab.local"; its certificate and health body name it.
        host: the loopback address it binds, e.g. "127.0.0.11".
        ports: bound port by kind: https, imap, imaps, pop, pops, smtp, submission.
    """

    name: str
    fqdn: str
    host: str
    ports: dict[str, int] = field(hash=False)

    def address(self, kind: str = "https") -> tuple[str, int]:
        """(host, port) of one listener kind."""
        return (self.host, self.ports[kind])


@dataclass(eq=False)
class _Connection:
    raw: trio.SocketStream
    scope: trio.CancelScope
    frozen: bool = False


class ServerRuntime:
    """The live side of one simulated server.

    Args:
        name: short name ("cas1").
        fqdn: fully qualified name.
        host: loopback address to bind.
        ports: wanted port per kind (0: ephemeral, kept across restarts).
        namespace: the shared client namespace, e.g. "mail.lab.local".
        tls: the server's certificates.
        profile: timing of long-lived answers.
        health_cache_delay: seconds before a component change shows.
        nursery: where listeners and connections run.
        auth: the farm's accounts and sessions (None: every request anonymous).
        mailbox: FQDN of the mailbox (back-end) server every front end proxies
            the lab user's requests to, e.g. "mbx1.lab.local".
        idle_close: seconds an idle keep-alive HTTP connection stays open (IIS
            connectionTimeout).
        ews: the farm's mailbox, shared by every server (None: one of its own).
    """

    def __init__(
        self,
        *,
        name: str,
        fqdn: str,
        host: str,
        ports: dict[str, int],
        namespace: str,
        tls: ServerTls,
        profile: TrafficProfile,
        health_cache_delay: float,
        nursery: trio.Nursery,
        auth: FarmAuth | None = None,
        mailbox: str = "mbx1.lab.local",
        idle_close: float = IIS_CONNECTION_TIMEOUT,
        ews: EwsStore | None = None,
    ) -> None:
        self.name = name
        self.mailbox = mailbox
        self.idle_close = idle_close
        self.auth = auth
        self.ews = ews or EwsStore(Mailbox.for_users(LAB_USERS, fqdn.split(".", 1)[-1]))
        self.fqdn = fqdn
        self.host = host
        self.namespace = namespace
        self.tls = tls
        self.profile = profile
        self.counters = Counters()
        self.faults = FaultSet()
        self._health = HealthCache(delay=health_cache_delay)
        self._changed = trio.Event()
        self._connections: set[_Connection] = set()
        self._parked: list[trio.SocketStream] = []
        self._nursery = nursery
        self._started = False
        self._slots = {
            kind: ListenerSlot(kind, host, ports.get(kind, 0), self._serve_connection, nursery)
            for kind in PORT_KINDS
        }

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Bind every port and start accepting (the mail ports whose service runs)."""
        self._started = True
        self._apply_slots()

    def stop(self) -> None:
        """Release every port and reset every connection."""
        self._started = False
        for slot in self._slots.values():
            slot.close()
        self._reset_connections()

    @property
    def info(self) -> FarmServer:
        """Where this server lives."""
        ports = {kind: slot.port for kind, slot in self._slots.items()}
        return FarmServer(self.name, self.fqdn, self.host, ports)

    # -- component states --------------------------------------------------

    @property
    def states(self) -> ComponentStates:
        """The component states as set (before the health-cache delay)."""
        return self._health.current

    def set_component(
        self, component: Component, state: ComponentState, requester: Requester
    ) -> None:
        """Record one requester's state for one component, effective now."""
        now = trio.current_time()
        self._health = self._health.record(self.states.set(component, state, requester, now), now)
        self._apply_slots()
        if self._health.delay > 0:
            # The services see the change only once the cache does.
            self._nursery.start_soon(self._apply_slots_after, self._health.delay)

    async def _apply_slots_after(self, delay: float) -> None:
        await trio.sleep(delay)
        self._apply_slots()

    def _apply_slots(self) -> None:
        if not self._started:
            return
        seen = self.visible_states()
        for kind, slot in self._slots.items():
            slot.set_mode(slot_mode(kind, self.faults, seen))

    def visible_states(self) -> ComponentStates:
        """The states the health responder acts on now (after the cache delay)."""
        return self._health.visible(trio.current_time())

    def health_answer(self, vdir: Vdir) -> HealthAnswer:
        """How a health check of `vdir` is answered right now."""
        return healthcheck_answer(self.visible_states(), self.faults, vdir, trio.current_time())

    # -- faults ------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Put `fault` in force (replacing one of the same kind and vdir)."""
        self._set_faults(self.faults.with_fault(stamped(fault, trio.current_time())))

    def clear(self, kind: FaultKind | None = None, vdir: str | None = None) -> None:
        """Clear faults of `kind` (every fault when None), of one vdir if given."""
        self._set_faults(self.faults.without(kind, vdir))

    def _set_faults(self, faults: FaultSet) -> None:
        before = self.faults
        self.faults = faults
        crashed = faults.has(FaultKind.CRASH)
        holed = faults.has(FaultKind.BLACKHOLE)
        if crashed and not before.has(FaultKind.CRASH):
            self._reset_connections()
        elif holed and not before.has(FaultKind.BLACKHOLE):
            self._freeze_connections()
        if not holed:
            self._reset_parked()
        self._apply_slots()
        # Wake answers held by hang/hang_tls so they re-read the faults.
        self._changed.set()
        self._changed = trio.Event()

    def _reset_connections(self) -> None:
        for conn in list(self._connections):
            reset_now(conn.raw)
            conn.scope.cancel()
        self._reset_parked()

    def _freeze_connections(self) -> None:
        for conn in list(self._connections):
            conn.frozen = True
            conn.scope.cancel()

    def _reset_parked(self) -> None:
        for raw in self._parked:
            reset_now(raw)
        self._parked.clear()

    async def gate(self) -> None:
        """Hold an answer as the hang and slow faults say."""
        await self._hold_while(FaultKind.HANG)
        latency = self.faults.added_latency()
        if latency > 0:
            await trio.sleep(latency)

    async def _hold_while(self, kind: FaultKind) -> None:
        while self.faults.has(kind):
            await self._changed.wait()

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers every application response carries, as Exchange stamps them."""
        return [
            ("Server", "Microsoft-IIS/10.0"),
            ("request-id", next_request_id()),
            ("X-FEServer", self.name.upper()),
            ("X-Powered-By", "ASP.NET"),
        ]

    def backend_headers(self) -> list[tuple[str, str]]:
        """What a proxied answer adds: the mailbox server it was proxied to.

        Any front end proxies a mailbox's requests to the same back end, so these
        name the mailbox server, never this front end.
        """
        return [
            ("X-CalculatedBETarget", self.mailbox),
            ("X-BEServer", self.mailbox.split(".", 1)[0].upper()),
        ]

    # -- connections -------------------------------------------------------

    def connection_count(self) -> int:
        """Connections being served now (parked black-holed ones excluded)."""
        return len(self._connections)

    async def _serve_connection(self, kind: str, raw: trio.SocketStream) -> None:
        # Accepted before a crash or blackhole but started after it (on a busy
        # loop, a whole batch can be): _reset_connections never saw it, and
        # serving it would count requests on a server that is down.
        if self.faults.has(FaultKind.CRASH):
            reset_now(raw)
            return
        if self.faults.has(FaultKind.BLACKHOLE):
            self._parked.append(raw)
            return
        self.counters.connection(kind)
        conn = _Connection(raw, trio.CancelScope())
        self._connections.add(conn)
        try:
            with conn.scope:
                await self._serve(kind, raw)
        except ResetConnection:
            reset_now(raw)
        except _PEER_ERRORS:
            pass  # the peer went away or spoke nonsense: this connection only
        except Exception:
            self.counters.error()
            log.exception("%s: %s connection failed", self.name, kind)
        finally:
            self._connections.discard(conn)
            if conn.frozen and raw.socket.fileno() != -1:
                self._parked.append(raw)
            else:
                await trio.aclose_forcefully(raw)

    async def _serve(self, kind: str, raw: trio.SocketStream) -> None:
        stream: trio.abc.Stream = raw
        if kind in TLS_KINDS:
            await self._hold_while(FaultKind.HANG_TLS)
            stream = self.wrap_tls(raw)
            await stream.do_handshake()
        if kind == "https":
            conn = ConnectionAuth()  # NTLM authenticates this connection, and only it

            async def answer_on_this_connection(exchange: HttpExchange) -> None:
                await answer(exchange, self, conn)

            await serve_http(
                stream, answer_on_this_connection, self.response_headers, self.idle_close,
                on_idle_close=lambda: self.counters.idle_closed(),
            )
        elif kind in ("imap", "imaps"):
            await serve_imap(stream, self, starttls=kind == "imap")
        elif kind in ("pop", "pops"):
            await serve_pop(stream, self, starttls=kind == "pop")
        else:
            await serve_smtp(stream, self, submission=kind == "submission")
        if isinstance(stream, trio.SSLStream):
            with trio.move_on_after(1):
                await stream.aclose()

    def wrap_tls(self, transport: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        """A server-side TLS stream with the certificate the faults call for."""
        ctx = self.tls.context(self.faults.cert_mode())
        return trio.SSLStream(transport, ctx, server_side=True, https_compatible=True)
