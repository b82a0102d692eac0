"""From the config tree to running frontends: the one mapper onto lb/l4 and lb/l7 settings.

lb/l4 and lb/l7 never read lb.config: everything a frontend knows about its
config arrives here as the settings values of its wing (lb/l4/settings.py,
lb/l7/settings.py, lb/l7/upstream.py), together with the live pools it routes to.

- tcp and sni frontends become a `TcpFrontend`; each route reads its pool's
  live config per connection (through `upstream_policy`), so a reload that
  only changes pool timeouts keeps the frontend object.
- http frontends become an `HttpFrontend`, whose upstream settings (timeouts,
  re-encryption) are fixed when built: `needs_rebuild` says when a reload must
  build it again.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import cast

from lb import tls
from lb.config import Config, FrontendConfig, Mode, PoolConfig
from lb.frontends import Connector, Frontend, Report
from lb.l4.events import L4Events
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.l7 import poolview
from lb.l7 import upstream as l7upstream
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from lb.listeners import UNGUARDED, AcceptGuard
from lb.metrics import Metrics
from lb.pool import Pool
from lb.renewal import frontend_files
from probes.catalog import PROTOCOLS


def upstream_policy(pool: PoolConfig) -> UpstreamPolicy:
    """The L4 policy a pool's config asks for; who speaks first comes from the catalog."""
    proto = PROTOCOLS.get(pool.protocol.lower()) if pool.protocol else None
    return UpstreamPolicy(
        connect_timeout=pool.connect_timeout,
        retries=pool.retries,
        first_response_timeout=pool.first_response_timeout,
        server_speaks_first=proto.server_speaks_first if proto else False,
        proxy_protocol=pool.proxy_protocol,
        idle_timeout=pool.idle_timeout,
        retry_to=pool.retry_to,
        transparent=pool.transparent,
    )


_POLICIES: dict[int, tuple[PoolConfig, UpstreamPolicy]] = {}


def _policy_of(config: PoolConfig) -> UpstreamPolicy:
    """`upstream_policy`, memoised per config object (one per reload): it runs per connection."""
    hit = _POLICIES.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_POLICIES) > 64:  # old configs of past reloads
        _POLICIES.clear()
    policy = upstream_policy(config)
    _POLICIES[id(config)] = (config, policy)
    return policy


def build_tcp(
    fe: FrontendConfig,
    pools: Mapping[str, Pool],
    *,
    events: L4Events,
    report: Report,
    connector: Connector | None = None,
    guard: AcceptGuard = UNGUARDED,
) -> TcpFrontend:
    """The L4 frontend for a tcp- or sni-mode frontend config.

    Raises:
        ValueError: the mode is not tcp or sni, or a pool it names is missing.
    """
    if fe.mode not in (Mode.TCP, Mode.SNI):
        raise ValueError(f"frontend {fe.name!r}: mode {fe.mode.value!r} is not tcp or sni")

    def route(name: str | None) -> Route | None:
        if name is None:
            return None
        if name not in pools:
            raise ValueError(f"frontend {fe.name!r}: unknown pool {name!r}")
        pool = pools[name]
        # Pool.reconfigure swaps pool.config on reload; reading it per connection
        # applies new timeouts without rebuilding the frontend.
        return Route(pool, lambda: _policy_of(pool.config))

    settings = TcpFrontendSettings(
        name=fe.name,
        idle_timeout=fe.idle_timeout,
        max_connections=fe.max_connections,
        sni_timeout=fe.sni_timeout,
    )
    if fe.mode is Mode.SNI:
        sni = {host: r for host, pool in fe.sni_map.items() if (r := route(pool)) is not None}
        default = route(fe.default_pool)
    else:
        sni, default = None, route(fe.pool)
    return TcpFrontend(
        settings, default=default, sni=sni, events=events, report=report, connector=connector,
        guard=guard,
    )


def _upstream(pool: PoolConfig) -> UpstreamSettings:
    context, names = None, tls.FQDN_NAMES
    if pool.upstream_tls is not None:
        ca = pool.upstream_tls.ca_file
        names = tls.UpstreamNames(pool.upstream_tls.sni, pool.upstream_tls.verify_name)
        context = tls.client_context(
            None if ca is None else Path(ca), verify=pool.upstream_tls.verify,
            check_hostname=pool.upstream_tls.verify and names.follows_fqdn,
        )
    return UpstreamSettings(
        connect_timeout=pool.connect_timeout, tls=context, retries=pool.retries,
        idle_timeout=pool.idle_timeout, response_timeout=pool.response_timeout,
        retry_to=pool.retry_to, names=names, proxy_protocol=pool.proxy_protocol,
        transparent=pool.transparent, reuse=pool.reuse,
    )


def _server_tls(fe: FrontendConfig) -> ssl.SSLContext | None:
    if not fe.tls:
        return None
    certs = [
        tls.Certificate(Path(c.cert_file), Path(c.key_file) if c.key_file else None, c.names)
        for c in fe.tls
    ]
    return tls.server_context(certs[0], certs[1:])


def build_http(
    fe: FrontendConfig,
    config: Config,
    pools: Mapping[str, Pool],
    *,
    connector: Connector | None,
    report: Report,
    metrics: Metrics,
    guard: AcceptGuard = UNGUARDED,
) -> HttpFrontend:
    """An L7 frontend for an http-mode frontend config."""
    settings = HttpFrontendSettings(
        name=fe.name,
        routes=RouteTable(vdirs=dict(fe.routes), default_pool=fe.default_pool),
        tls=_server_tls(fe),
        header_timeout=fe.header_timeout,
        trusted_proxies=tuple(ipaddress.ip_network(n) for n in fe.trusted_proxies),
        default_idle_timeout=fe.idle_timeout,
        max_connections=fe.max_connections,
    )
    mine = {name: pools[name] for name in fe.pool_names}
    upstream = {name: _upstream(config.pools[name]) for name in mine}
    # lb.pool.Pool takes lb.pool.Member where l7's structural Pool takes any
    # member; the proxy only leases members the same pool picked.
    return HttpFrontend(
        settings,
        cast(Mapping[str, poolview.Pool], mine),
        upstream=upstream,
        connector=cast(l7upstream.Connector | None, connector),
        report=report,
        events=metrics,
        ejections={name: pool.ejections for name, pool in mine.items()},
        guard=guard,
    )


def needs_rebuild(old: FrontendConfig, new: FrontendConfig, old_config: Config,
                  new_config: Config, renewed: Collection[str] = frozenset()) -> bool:
    """Whether a reload must replace a frontend object.

    L4 routes read their pool's live config, so only the frontend's own settings
    count; an L7 frontend also fixes its pools' upstream settings when built.
    `renewed` are the files whose contents changed (lb/renewal.py): a frontend
    built from one of them loads it again.
    """
    if old != new or any(f in renewed for f in frontend_files(new, new_config)):
        return True
    if new.mode is not Mode.HTTP:
        return False
    return any(old_config.pools.get(p) != new_config.pools.get(p) for p in new.pool_names)


def build_frontend(
    fe: FrontendConfig,
    config: Config,
    pools: Mapping[str, Pool],
    *,
    connector: Connector | None,
    report: Report,
    metrics: Metrics,
    guard: AcceptGuard = UNGUARDED,
) -> Frontend:
    """The frontend object for one frontend config, by its mode.

    Raises:
        ValueError: a setting the frontend refuses (e.g. a certificate that
            does not load), naming the frontend.
    """
    try:
        if fe.mode is Mode.HTTP:
            return build_http(fe, config, pools, connector=connector, report=report,
                              metrics=metrics, guard=guard)
        return build_tcp(fe, pools, events=metrics, report=report, connector=connector,
                         guard=guard)
    except (ValueError, OSError) as exc:
        raise ValueError(f"frontends.{fe.name}: {exc}") from exc


def known_refusals(fes: Iterable[FrontendConfig]) -> Iterator[tuple[str, str]]:
    """The (frontend, reason) refusals an L4 frontend can count before any pool."""
    for fe in fes:
        if fe.mode is not Mode.HTTP:
            yield fe.name, "limit"
        if fe.mode is Mode.SNI:
            yield fe.name, "no_route"
