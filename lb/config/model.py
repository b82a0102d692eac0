"""The generic config model: the frozen dataclasses of the tree the rest of caslb reads.

lb/config/__init__.py is the entry point and documents the TOML keys; the
table readers (pools.py, frontends.py) fill these in, and nothing here reads TOML.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lb.balancer import Balance
from lb.l7.idle import Reuse
from lb.ports import DEFAULT_ADMIN_PORT
from lb.retry import RetryPolicy, RetryTo
from probes.checks import CheckSpec, Target
from probes.outlier import OutlierSettings
from probes.state import OnError, Timing

_EMPTY: Mapping[str, str] = MappingProxyType({})

# Envoy ejects after 5 consecutive 5xx. Three in a row is enough here, because a
# farm-wide burst (docs/exchange.md §6, fault 12) never ejects: the server must
# also stand out from the rest of its pool, and its failures must come from two
# clients (probes/outlier.py).
DEFAULT_OUTLIER = OutlierSettings(consecutive_errors=3, consecutive_gateway_failures=3)


class Mode(enum.Enum):
    """How a frontend handles a connection."""

    TCP = "tcp"  # pass TLS through to one pool
    SNI = "sni"  # pass TLS through, pool chosen by the ClientHello's server name
    HTTP = "http"  # terminate TLS (or plain HTTP), route by virtual directory


@dataclass(frozen=True)
class ServerConfig:
    """One CAS server as a pool sees it.

    Attributes:
        name: unique in its pool; the label in metrics and the admin API.
        host: address to connect to.
        port: port to connect to.
        fqdn: the server's own name, sent as SNI and Host in checks.
        weight: relative share of new connections (≥ 1).
    """

    name: str
    host: str
    port: int
    fqdn: str
    weight: int = 1


@dataclass(frozen=True)
class CheckConfig:
    """A pool's active health check.

    Attributes:
        spec: what one check does (probes.checks).
        timing: when checks run and how many flip the state (probes.state).
        port: port to check instead of the server's own, None for the same.
    """

    spec: CheckSpec
    timing: Timing
    port: int | None = None


@dataclass(frozen=True)
class UpstreamTlsConfig:
    """Re-encryption towards the servers of an http frontend's pool.

    Attributes:
        verify: check the server certificate (against ca_file or the system store).
        ca_file: CA bundle for verification, None for the system store.
        sni: the SNI sent (Exchange picks its certificate by it): True for the
            server's fqdn, a name for that name (HAProxy's `sni`), False for none.
        verify_name: the name the certificate must carry (HAProxy's
            `verifyhost`), None for the SNI sent, or the fqdn without SNI.
    """

    verify: bool = True
    ca_file: str | None = None
    sni: bool | str = True
    verify_name: str | None = None


@dataclass(frozen=True)
class ObserveConfig:
    """Passive layer-4 observation of live traffic (HAProxy `observe layer4`).

    Attributes:
        error_limit: consecutive connection errors that trigger `on_error`.
        on_error: what they do to the server's health.
    """

    error_limit: int = 10
    on_error: OnError = OnError.FAIL_CHECK


@dataclass(frozen=True)
class PoolConfig:
    """A set of servers one frontend route sends to, and how.

    Attributes:
        name: unique pool name (a metrics label).
        servers: the members, in config order.
        balance: the selection strategy (lb/balancer.py).
        check: the active health check, None for none (passive only).
        protocol: the Exchange protocol it serves (probes.catalog), if any.
        slowstart: seconds over which a recovered or new server ramps up; 0 off.
        panic_threshold: healthy share below which it routes to all; 0 off.
        connect_timeout: bound on opening one upstream connection, seconds.
        retries: further attempts after a failed connect (or, at L4, a silent
            or closing server; at L7, a bodiless idempotent request that failed
            before any response byte, replayed once).
        retry_to: which server a retry goes to (another, the same, or off).
        response_timeout: at L7, how long a short request may wait for its
            response head.
        first_response_timeout: bound on a server's silence after the first
            flight (L4), None for no bound.
        idle_timeout: idle timeout of its connections, None for the frontend's.
        reset_on_down: reset its connections to a server marked DOWN at once.
        drain_grace: how long existing connections may last after a drain.
        proxy_protocol: PROXY protocol version sent upstream, 0 for none.
        transparent: connect to its servers from the client's own address
            (IP_TRANSPARENT, HAProxy's `usesrc clientip`).
        upstream_tls: re-encryption settings (http frontends), None for plain.
        observe: passive observation, None for off.
        outlier: outlier detection on the real responses of http frontends,
            None for off.
        reuse: at L7, whether idle upstream connections are shared between
            client connections ("safe") or each client's own ("never").
    """

    name: str
    servers: tuple[ServerConfig, ...]
    balance: Balance = Balance.ROUNDROBIN
    check: CheckConfig | None = None
    protocol: str | None = None
    slowstart: float = 0.0
    panic_threshold: float = 0.0
    connect_timeout: float = 2.0
    retries: int = 3
    retry_to: RetryTo = RetryTo.ANOTHER
    response_timeout: float = 60.0
    first_response_timeout: float | None = None
    idle_timeout: float | None = None
    reset_on_down: bool = False
    drain_grace: float = 30.0
    proxy_protocol: int = 0
    transparent: bool = False
    upstream_tls: UpstreamTlsConfig | None = None
    observe: ObserveConfig | None = None
    outlier: OutlierSettings | None = DEFAULT_OUTLIER
    reuse: Reuse = Reuse.SAFE

    @property
    def retry(self) -> RetryPolicy:
        """Its retries and where they go, as both wings take them."""
        return RetryPolicy(self.retries, self.retry_to)

    def check_target(self, server: ServerConfig) -> Target:
        """Where this pool's check dials `server`: its FQDN for Host and SNI, its
        address, and the check's own port when it has one.

        Raises:
            ValueError: the pool has no check.
        """
        if self.check is None:
            raise ValueError(f"pool {self.name!r} has no check")
        return Target(server.fqdn, server.host, self.check.port or server.port)


@dataclass(frozen=True)
class CertConfig:
    """A certificate an http frontend presents.

    Attributes:
        cert_file: PEM certificate chain.
        key_file: PEM private key.
        names: SNI names it is chosen for; the first certificate is the default.
    """

    cert_file: str
    key_file: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class FrontendConfig:
    """One listener.

    Attributes:
        name: unique frontend name (a metrics label).
        mode: tcp, sni or http.
        host: address to bind.
        port: port to bind.
        pool: the pool of a tcp frontend.
        sni_map: server name (lowercase) → pool, for sni frontends.
        default_pool: pool for unmatched names (sni) or paths (http); None refuses.
        routes: virtual directory ("/owa") → pool, for http frontends.
        hosts: Host names an http frontend answers; empty for any.
        tls: certificates of an http frontend; empty for plain HTTP.
        idle_timeout: seconds a connection may stay idle.
        max_connections: concurrent client connections before refusing.
        sni_timeout: bound on waiting for the ClientHello (sni).
        header_timeout: bound on receiving request headers (http).
        trusted_proxies: networks whose X-Forwarded-For is kept (http); from any
            other client it is replaced by the client's address.
    """

    name: str
    mode: Mode
    host: str
    port: int
    pool: str | None = None
    sni_map: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    default_pool: str | None = None
    routes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    hosts: tuple[str, ...] = ()
    tls: tuple[CertConfig, ...] = ()
    idle_timeout: float = 1800.0
    max_connections: int = 10_000
    sni_timeout: float = 5.0
    header_timeout: float = 10.0
    trusted_proxies: tuple[str, ...] = ()

    @property
    def pool_names(self) -> tuple[str, ...]:
        """Every pool this frontend can send to, each once, in config order."""
        names = [self.pool, *self.sni_map.values(), *self.routes.values(), self.default_pool]
        return tuple(dict.fromkeys(n for n in names if n is not None))


ADMIN_LISTENER = "admin"
"""The admin API's listener name (socket activation's FileDescriptorName), so no
frontend may take it."""


@dataclass(frozen=True)
class AdminConfig:
    """The admin API listener.

    Attributes:
        host: address to bind (loopback unless a token is set).
        port: port to bind.
        token: bearer token required for POST actions, None for none.
        names: host names the API is reached by, served beside its addresses
            (any other name gets 421: the defence against DNS rebinding).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_ADMIN_PORT
    token: str | None = None
    names: tuple[str, ...] = ()


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LoggingConfig:
    """How caslb writes its log (lb/logs.py, lb/accesslog.py).

    Attributes:
        format: "text" (HAProxy's httplog and tcplog lines) or "json" (one object a line).
        access_log: one line per HTTP request and per L4 connection.
    """

    format: str = "text"
    access_log: bool = True


@dataclass(frozen=True)
class Config:
    """The whole validated configuration.

    Attributes:
        frontends: listeners, in config order.
        pools: pool name → pool, in config order.
        admin: the admin API.
        grace: seconds connections may drain on shutdown.
        notes: explanations from the [exchange] expansion (e.g. a blind spot).
        logging: the log's format and the access log switch.
    """

    frontends: tuple[FrontendConfig, ...]
    pools: Mapping[str, PoolConfig]
    admin: AdminConfig = AdminConfig()
    grace: float = 30.0
    notes: tuple[str, ...] = ()
    logging: LoggingConfig = LoggingConfig()
