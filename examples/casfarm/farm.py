"""The farm: N simulated CAS servers, their certificates and the control API.

`running()` is the one way in. It makes the CA and certificates, binds every
server's ports (each server on its own loopback address, or all on 127.0.0.1
with their own ports), starts the control API, and yields a `Farm` whose
methods set component states, inject and clear faults and read counters. All
of them are plain calls from inside the trio run that owns the farm.
"""

from __future__ import annotations

import logging
import math
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from casfarm.auth import LAB_USERS
from casfarm.certs import FarmCA
from casfarm.components import Component, ComponentState, HealthCache, Requester
from casfarm.counters import ServerCounts
from casfarm.ewsstream import EwsStore
from casfarm.ewsxml import SAMPLE_REQUEST, SAMPLE_REQUEST_FILE
from casfarm.faults import DEFAULT_ERROR_STATUS, Fault, FaultKind
from casfarm.forms import PRIVATE_TIMEOUT
from casfarm.gate import FarmAuth
from casfarm.http import IIS_CONNECTION_TIMEOUT
from casfarm.mailbox import Mailbox
from casfarm.responder import Action, Monitor, ResponderPolicy, ServerView, step
from casfarm.server import PORT_KINDS, FarmServer, ServerRuntime
from casfarm.trafficprofile import TrafficProfile
from casfarm.vdirs import VDIRS

MAX_SERVERS = 200
FIRST_HOST = 11  # cas1 at 127.0.0.11, cas2 at 127.0.0.12, ...
DEMO_PORTS: Mapping[str, int] = {
    "https": 8443,
    "imap": 1143,
    "imaps": 9933,
    "pop": 1110,
    "pops": 9955,
    "smtp": 2525,
    "submission": 5587,
}
DEMO_CONTROL_PORT = 8099

log = logging.getLogger("casfarm")


class Farm:
    """A running simulated farm. Made by `running()`; not constructed directly.

    Attributes:
        namespace: the shared client name, e.g. "mail.lab.local".
        auth: the accounts and sessions when the farm authenticates, else None.
        ca_path: the CA certificate (PEM) clients should trust.
        control_url: base URL of the control API, or None when disabled.
    """

    def __init__(
        self,
        runtimes: list[ServerRuntime],
        namespace: str,
        ca_path: Path,
        auth: FarmAuth | None = None,
    ) -> None:
        self._runtimes = {rt.name: rt for rt in runtimes}
        self.auth = auth
        self.namespace = namespace
        self.ca_path = ca_path
        self.control_url: str | None = None
        self.responder_actions: list[Action] = []  # what Managed Availability did, in order

    @property
    def servers(self) -> list[FarmServer]:
        """Every server, in order (cas1, cas2, ...)."""
        return [rt.info for rt in self._runtimes.values()]

    def runtime(self, server: str) -> ServerRuntime:
        """The live side of one server (for tests that need to look deeper).

        Raises:
            KeyError: naming the unknown server and the known ones.
        """
        try:
            return self._runtimes[server.lower()]
        except KeyError:
            known = ", ".join(self._runtimes)
            raise KeyError(f"unknown server {server!r} (known: {known})") from None

    async def run_responder(self, policy: ResponderPolicy) -> None:
        """Managed Availability on every server (casfarm.responder), until cancelled."""
        monitors: dict[tuple[str, Component], Monitor] = {}
        while True:
            await trio.sleep(policy.probe_interval)
            views = [ServerView(rt.name, rt.faults, rt.states) for rt in self._runtimes.values()]
            monitors, actions = step(policy, monitors, views, trio.current_time())
            for action in actions:
                self._runtimes[action.server].set_component(
                    action.component, action.state, Requester.HEALTH_API)
                self.responder_actions.append(action)
                log.info("%s: Managed Availability set %s %s (HealthApi): %s", action.server,
                         action.component.value, action.state.value, action.reason)

    def server(self, name: str) -> FarmServer:
        """One server by name, e.g. "cas1".

        Raises:
            KeyError: naming the unknown server and the known ones.
        """
        return self.runtime(name).info

    def set_component(
        self,
        server: str,
        component: str | Component,
        state: str | ComponentState,
        requester: str | Requester = Requester.MAINTENANCE,
    ) -> None:
        """Set-ServerComponentState: one requester's state for one component.

        Raises:
            KeyError: unknown server. ValueError: unknown component, state or requester.
        """
        runtime = self.runtime(server)
        runtime.set_component(
            Component.parse(component), ComponentState.parse(state), Requester.parse(requester)
        )

    def start_maintenance(self, server: str) -> None:
        """Microsoft's maintenance sequence, farm side: drain transport, then go offline.

        HubTransport Draining first (new mail goes elsewhere), then
        ServerWideOffline Inactive, both with requester Maintenance.
        """
        self.set_component(server, Component.HUB_TRANSPORT, ComponentState.DRAINING)
        self.set_component(server, Component.SERVER_WIDE_OFFLINE, ComponentState.INACTIVE)

    def end_maintenance(self, server: str) -> None:
        """The sequence reversed: ServerWideOffline Active, then HubTransport Active."""
        self.set_component(server, Component.SERVER_WIDE_OFFLINE, ComponentState.ACTIVE)
        self.set_component(server, Component.HUB_TRANSPORT, ComponentState.ACTIVE)

    def inject(
        self,
        server: str,
        fault: str | FaultKind,
        *,
        vdir: str | None = None,
        seconds: float | None = None,
        mode: str | None = None,
        status: int | None = None,
    ) -> None:
        """Inject a fault (see `casfarm.faults.FaultKind`).

        Args:
            server: e.g. "cas1".
            fault: e.g. "crash", "app_pool_stopped".
            vdir: for app_pool_stopped (required) and errors (optional).
            seconds: latency of slow (default 2), half-period of flap (default 1).
            mode: bad_cert "wrong_name" (default) or "expired".
            status: the 5xx of errors (default 500).

        Raises:
            KeyError: unknown server. ValueError: bad fault or parameter.
            OSError: a port could not be bound again.
        """
        runtime = self.runtime(server)
        kind = FaultKind.parse(fault)
        if status is None:
            status = DEFAULT_ERROR_STATUS
        runtime.inject(Fault(kind, vdir=vdir, seconds=seconds, mode=mode, status=status))

    def clear(
        self, server: str, fault: str | FaultKind | None = None, *, vdir: str | None = None
    ) -> None:
        """Clear one fault kind (of one vdir if given), or every fault when None."""
        kind = None if fault is None else FaultKind.parse(fault)
        self.runtime(server).clear(kind, vdir)

    def faults(self, server: str) -> list[dict[str, object]]:
        """The faults in force on one server, JSON-ready."""
        return self.runtime(server).faults.describe()

    def component_state(self, server: str, component: str | Component) -> ComponentState:
        """The effective state of one component as set (before the cache delay)."""
        return self.runtime(server).states.effective(Component.parse(component))

    def counts(self, server: str) -> ServerCounts:
        """A snapshot of one server's request, health-check and connection counts."""
        return self.runtime(server).counters.snapshot()

    @property
    def requests(self) -> dict[str, dict[str, int]]:
        """Real requests (health checks excluded) per server and vdir/protocol."""
        return {name: dict(rt.counters.snapshot().requests) for name, rt in self._runtimes.items()}

    def reset_counts(self) -> None:
        """Zero every server's counters."""
        for rt in self._runtimes.values():
            rt.counters.reset()

    def describe_server(self, server: str) -> dict[str, object]:
        """One server, JSON-ready: address, ports, states, faults and counts.

        Raises:
            KeyError: naming the unknown server.
        """
        rt = self.runtime(server)
        info = rt.info
        return {
            "name": info.name,
            "fqdn": info.fqdn,
            "host": info.host,
            "ports": info.ports,
            "components": rt.states.describe(),
            "faults": rt.faults.describe(),
            "counts": rt.counters.snapshot().describe(),
        }

    def describe(self) -> dict[str, object]:
        """The whole farm, JSON-ready: servers, ports, states, faults and counts."""
        servers = [self.describe_server(name) for name in self._runtimes]
        return {
            "namespace": self.namespace,
            "ca_path": str(self.ca_path),
            "control_url": self.control_url,
            "auth": None if self.auth is None else self.auth.describe(),
            "servers": servers,
        }


def _ports_for(base_ports: Mapping[str, int] | None, index: int, distinct: bool) -> dict[str, int]:
    ports = {kind: 0 for kind in PORT_KINDS}
    for kind, port in (base_ports or {}).items():
        if kind not in ports:
            raise ValueError(f"unknown port kind {kind!r} (known: {', '.join(PORT_KINDS)})")
        if not 0 <= port <= 65535:
            raise ValueError(f"port for {kind} out of range: {port!r}")
        # Sharing 127.0.0.1, the servers take consecutive ports from the base.
        ports[kind] = port if distinct or port == 0 else port + index
    return ports


@asynccontextmanager
async def running(
    servers: int = 3,
    *,
    distinct_addresses: bool = True,
    base_ports: Mapping[str, int] | None = None,
    health_cache_delay: float = 0.0,
    responder: ResponderPolicy | None = None,
    heartbeat: float = 30.0,
    pending_period: float = 5.0,
    oab_size: int = 4 << 20,
    rpc_out_interval: float = 1.0,
    ews_keepalive: float = 40.0,
    cert_dir: str | Path | None = None,
    namespace: str = "mail.lab.local",
    control: bool = True,
    control_host: str = "127.0.0.1",
    control_port: int = 0,
    auth: bool | Collection[str] = False,
    users: Mapping[str, str] | None = None,
    owa_session_timeout: float = PRIVATE_TIMEOUT,
    hosts: Sequence[str] | None = None,
    idle_close: float = IIS_CONNECTION_TIMEOUT,
    mailbox_server: str | None = None,
    tls_max: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> AsyncIterator[Farm]:
    """Run a simulated CAS farm for the duration of the `async with` block.

    Args:
        servers: how many servers (cas1..casN).
        distinct_addresses: each server on its own 127.0.0.(10+i); else all on 127.0.0.1.
        base_ports: wanted port per kind (https, imap, imaps, pop, pops, smtp,
            submission); missing or None → 0, an ephemeral port. Without distinct
            addresses server i takes base + i - 1.
        health_cache_delay: seconds before a component change shows (Exchange: up to 15).
        responder: run Managed Availability's offline/online responders with this
            timing (casfarm.responder); None: components change only when told.
        heartbeat: seconds an ActiveSync Ping / MAPI NotificationWait is held.
        pending_period: seconds between MAPI PENDING keep-alives.
        oab_size: bytes of an OAB download.
        rpc_out_interval: seconds between RTS PDUs on an RPC_OUT_DATA channel.
        ews_keepalive: seconds between keep-alives on a quiet EWS event stream.
        cert_dir: where to write ca.pem and the server certificates (None: a
            temporary folder removed on exit).
        namespace: the shared name in every certificate, e.g. "mail.lab.local".
        control: start the JSON control API.
        control_host: its loopback address.
        control_port: its port (0: ephemeral).
        auth: authenticate as Exchange does (NTLM/Negotiate, Basic on ActiveSync,
            forms on OWA/ECP): True on every vdir, or on the vdirs named (e.g.
            ["ews"]); off, every request is served anonymously.
        users: user name → password of the lab domain (None: `LAB_USERS`,
            alice / Passw0rd), for auth.
        owa_session_timeout: seconds an OWA/ECP session cookie lasts.
        hosts: each server's address, one per server, for a farm in a network
            namespace of its own (tests of an HA pair); overrides distinct_addresses.
        idle_close: seconds an idle keep-alive HTTP connection stays open before
            the server closes it (IIS connectionTimeout, 120 by default).
        mailbox_server: FQDN of the mailbox server the front ends proxy to, named
            by X-CalculatedBETarget and X-BEServer (None: mbx1.<domain>).
        tls_max: the newest TLS version the servers speak (TLSv1_2: as Exchange
            2016 and 2019 on Windows Server 2016/2019, whose Schannel has no TLS 1.3).

    Raises:
        ValueError: a bad argument, named.
    """
    if not 1 <= servers <= MAX_SERVERS:
        raise ValueError(f"servers must be between 1 and {MAX_SERVERS}, got {servers!r}")
    if hosts is not None and len(hosts) != servers:
        raise ValueError(f"hosts names {len(hosts)} address(es) for {servers} server(s)")
    if "." not in namespace:
        raise ValueError(f"namespace must be a dotted name, got {namespace!r}")
    profile = TrafficProfile(heartbeat, pending_period, oab_size, rpc_out_interval, ews_keepalive)
    if not (math.isfinite(idle_close) and idle_close > 0):
        raise ValueError(f"idle_close must be a finite number > 0, got {idle_close!r}")
    HealthCache(delay=health_cache_delay)  # validates before anything is bound
    distinct = distinct_addresses or hosts is not None
    wanted_ports = [_ports_for(base_ports, i, distinct) for i in range(servers)]
    domain = namespace.split(".", 1)[1]
    vdirs = None if auth is True else frozenset(auth or ())
    unknown = sorted((vdirs or frozenset()) - {v.name for v in VDIRS})
    if unknown:
        raise ValueError(f"auth names unknown vdirs {unknown!r}")
    farm_auth = FarmAuth.lab(domain, users, owa_session_timeout, vdirs) if auth else None
    mailbox = mailbox_server or f"mbx1.{domain}"
    store = EwsStore(Mailbox.for_users(LAB_USERS if users is None else users, domain))
    temp = cert_dir is None
    folder = Path(tempfile.mkdtemp(prefix="casfarm-")) if cert_dir is None else Path(cert_dir)
    try:
        ca = FarmCA(folder)
        # A valid EWS request beside the CA, for curl -d @... (a bare POST is a SOAP fault).
        (folder / SAMPLE_REQUEST_FILE).write_bytes(SAMPLE_REQUEST)
        async with trio.open_nursery() as nursery:
            runtimes = []
            for i in range(servers):
                name = f"cas{i + 1}"
                host = (hosts[i] if hosts is not None
                        else f"127.0.0.{FIRST_HOST + i}" if distinct_addresses else "127.0.0.1")
                runtime = ServerRuntime(
                    name=name,
                    fqdn=f"{name}.{domain}",
                    host=host,
                    ports=wanted_ports[i],
                    namespace=namespace,
                    tls=ca.server_tls(name, f"{name}.{domain}", namespace, host, tls_max),
                    profile=profile,
                    health_cache_delay=health_cache_delay,
                    nursery=nursery,
                    auth=farm_auth,
                    mailbox=mailbox,
                    idle_close=idle_close,
                    ews=store,
                )
                runtimes.append(runtime)
            farm = Farm(runtimes, namespace, ca.ca_path, farm_auth)
            try:
                for runtime in runtimes:
                    runtime.start()
                if control:
                    from casfarm.control import serve_control

                    farm.control_url = await nursery.start(
                        serve_control, farm, control_host, control_port
                    )
                if responder is not None:
                    nursery.start_soon(farm.run_responder, responder)
                yield farm
            finally:
                for runtime in runtimes:
                    runtime.stop()
                nursery.cancel_scope.cancel()
    finally:
        if temp:
            shutil.rmtree(folder, ignore_errors=True)
