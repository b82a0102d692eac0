"""Which pool serves a request, and which timeouts apply to it: pure functions of the request head.

Rules, in order:
1. A host rule (exact host name, case-insensitive, port ignored) pins every
   request for that name to its pool: a separate namespace such as
   `mapi.contoso.com` can have its own pool.
2. Otherwise the longest virtual directory that prefixes the path, compared
   case-insensitively on whole segments (`/ews` matches `/EWS/Exchange.asmx`,
   never `/ewsfoo`), chooses the pool. The query string is never looked at:
   ProxyShell routed `/autodiscover/autodiscover.json?@x/mapi/...` to the
   back end through it.
3. Otherwise the default pool, if any; else no route.

Timeouts come from the Exchange protocol the path belongs to
(`probes.catalog`): its idle timeout for the keep-alive wait after the
request, and a response timeout only for short protocols. Long-lived requests
(RPC_IN_DATA/RPC_OUT_DATA, EAS Ping, MAPI NotificationWait, EWS streaming)
never get one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from probes.catalog import ExchangeProtocol, protocol_for_path

# Outlook Anywhere's two channels: endless bodies by design.
LONG_LIVED_METHODS = frozenset({b"RPC_IN_DATA", b"RPC_OUT_DATA"})


def normalise_vdir(vdir: str) -> str:
    """`vdir` lowercased, with one leading slash and no trailing one.

    Raises:
        ValueError: when `vdir` is empty or contains a query or fragment.
    """
    bare = vdir.strip().strip("/").lower()
    if not bare or "?" in bare or "#" in bare:
        raise ValueError(f"bad virtual directory {vdir!r}")
    return "/" + bare


def host_name(host: bytes | None) -> str | None:
    """The host name of a Host header value, lowercased, without port."""
    if not host:
        return None
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):  # IPv6 literal
        return text.split("]", 1)[0] + "]"
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


@dataclass(frozen=True)
class RouteTable:
    """Routes from virtual directory and host to pool names.

    Attributes:
        vdirs: virtual directory (e.g. "/owa") → pool name.
        hosts: host name → pool name; consulted first.
        default_pool: the pool for anything else, or None for 404.
    """

    vdirs: Mapping[str, str] = field(default_factory=dict)
    hosts: Mapping[str, str] = field(default_factory=dict)
    default_pool: str | None = None

    def __post_init__(self) -> None:
        vdirs = {normalise_vdir(v): p for v, p in self.vdirs.items()}
        hosts = {h.strip().lower(): p for h, p in self.hosts.items()}
        for key, pool in (*vdirs.items(), *hosts.items()):
            if not pool:
                raise ValueError(f"empty pool name for route {key!r}")
        # Longest first so that /owa/calendar wins over /owa.
        ordered = dict(sorted(vdirs.items(), key=lambda kv: -len(kv[0])))
        object.__setattr__(self, "vdirs", ordered)
        object.__setattr__(self, "hosts", hosts)

    def pools(self) -> frozenset[str]:
        """Every pool name a route can lead to."""
        names = set(self.vdirs.values()) | set(self.hosts.values())
        if self.default_pool is not None:
            names.add(self.default_pool)
        return frozenset(names)

    def pool_for(self, path: str, host: str | None = None) -> str | None:
        """The pool for a request to `path` (no query) on `host`, or None."""
        if host is not None and (pinned := self.hosts.get(host)) is not None:
            return pinned
        lowered = path.lower()
        for vdir, pool in self.vdirs.items():
            if lowered == vdir or lowered.startswith(vdir + "/"):
                return pool
        return self.default_pool


@dataclass(frozen=True)
class TimeoutProfile:
    """The timeouts that apply to one request.

    Attributes:
        protocol: the Exchange protocol name, or None when the path is not one.
        response_timeout: seconds allowed between the end of the request and the
            response head, or None for long-lived requests.
        idle_timeout: seconds a kept-alive client may stay silent afterwards.
    """

    protocol: str | None
    response_timeout: float | None
    idle_timeout: float


def timeout_profile(
    method: bytes, path: str, *, response_timeout: float, default_idle_timeout: float,
    pool_idle_timeout: float | None = None,
) -> TimeoutProfile:
    """The timeouts for a request, from the catalog's profile of its protocol.

    Args:
        method: the request method, as sent.
        path: the request path without query.
        response_timeout: the response timeout for short requests.
        default_idle_timeout: the idle timeout outside any Exchange protocol.
        pool_idle_timeout: the routed pool's own idle timeout, which wins when set.
    """
    proto: ExchangeProtocol | None = protocol_for_path(path)
    if proto is None:
        long_lived = method.upper() in LONG_LIVED_METHODS
        idle = default_idle_timeout if pool_idle_timeout is None else pool_idle_timeout
        return TimeoutProfile(None, None if long_lived else response_timeout, idle)
    long_lived = proto.long_lived or method.upper() in LONG_LIVED_METHODS
    idle = proto.idle_timeout if pool_idle_timeout is None else pool_idle_timeout
    return TimeoutProfile(proto.name, None if long_lived else response_timeout, idle)
