"""Settings of an HTTP (L7) frontend, independent of the config file format."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field

from lb.l7.routing import RouteTable


@dataclass(frozen=True)
class HttpFrontendSettings:
    """How one L7 frontend accepts, limits and routes client connections.

    Attributes:
        name: the frontend's name (metrics label, logs).
        routes: virtual directory and host rules to pools, plus a default pool.
        tls: server context for TLS termination (see lb.tls.server_context),
            or None for plain HTTP.
        max_header_bytes: the largest request head accepted (431 beyond it).
        max_header_count: the most header fields accepted (431 beyond it).
        header_timeout: seconds a client has to send a complete request head,
            from the connection's start or from the first byte of a later
            request (408 beyond it).
        handshake_timeout: seconds for the client's TLS handshake.
        default_idle_timeout: the keep-alive idle timeout after a request that
            belongs to no Exchange protocol (others use the catalog's).
        max_connections: client connections served at once; further ones wait
            in the listen backlog.
        receive_size: the most bytes read from a socket at once (bounds the
            memory each direction of a proxied stream can hold).
        trusted_proxies: peers whose X-Forwarded-For chain is kept and
            appended to; from anyone else it is replaced, so a client cannot
            forge the first hop that Exchange logs and policies read.
    """

    name: str = "http"
    routes: RouteTable = field(default_factory=RouteTable)
    tls: ssl.SSLContext | None = None
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0
    handshake_timeout: float = 10.0
    default_idle_timeout: float = 300.0
    max_connections: int = 10_000
    receive_size: int = 256 * 1024
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_header_count", "max_connections", "receive_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        for name in ("header_timeout", "handshake_timeout", "default_idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")

    def trusts(self, client: str) -> bool:
        """Whether `client` is a proxy whose X-Forwarded-For is believed."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in net for net in self.trusted_proxies)

    @property
    def scheme(self) -> str:
        """ "https" when this frontend terminates TLS, else "http"."""
        return "http" if self.tls is None else "https"
