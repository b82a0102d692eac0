"""From frontend config to running frontend objects (L4 and L7).

Each builder maps the config tree onto the settings a frontend module takes, so
lb/l4 and lb/l7 never read lb.config themselves.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import trio

from lb import tls
from lb.config import Config, FrontendConfig, Mode, PoolConfig
from lb.l4.build import build_tcp
from lb.l7 import upstream as l7upstream
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from lb.listeners import UNGUARDED, AcceptGuard
from lb.metrics import Metrics
from lb.pool import Member, Pool
from probes.outlier import OutlierSettings

# Envoy ejects after 5 consecutive 5xx; each pool of an Exchange frontend learns
# on its own, so a server-wide fault (Kerberos, AD, back-end proxy: docs/exchange.md
# §6, fault 11) costs that many errors per protocol. Three in a row is enough here,
# because a farm-wide burst (fault 12) never ejects: the server must also stand
# out from the rest of its pool.
EXCHANGE_OUTLIERS = OutlierSettings(consecutive_errors=3, consecutive_gateway_failures=3)

Report = Callable[[str, str, bool, str], None]
Connector = Callable[[Member, float], Awaitable[trio.abc.Stream]]


class Frontend(Protocol):
    """What the app runs: accept on listeners until cancelled."""

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...


def _upstream(pool: PoolConfig) -> UpstreamSettings:
    context = None
    if pool.upstream_tls is not None:
        ca = pool.upstream_tls.ca_file
        context = tls.client_context(
            None if ca is None else Path(ca), verify=pool.upstream_tls.verify
        )
    return UpstreamSettings(
        connect_timeout=pool.connect_timeout, tls=context, retries=pool.retries
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
        default_idle_timeout=fe.idle_timeout,
        max_connections=fe.max_connections,
    )
    mine = {name: pools[name] for name in fe.pool_names}
    upstream = {name: _upstream(config.pools[name]) for name in mine}
    # lb.pool.Pool takes lb.pool.Member where l7's structural Pool takes any
    # member; the proxy only leases members the same pool picked.
    return HttpFrontend(
        settings,
        cast(Mapping[str, l7upstream.Pool], mine),
        upstream=upstream,
        connector=cast(l7upstream.Connector | None, connector),
        report=report,
        events=metrics,
        outlier=EXCHANGE_OUTLIERS,
        guard=guard,
    )


def open_connections(frontend: Frontend, *, parked_accepts: int = 0) -> int:
    """Client connections a frontend is serving now.

    Args:
        parked_accepts: accept calls waiting on listeners that no longer accept
            (`lb.app.GateListener.parked`): an L7 accept loop takes its
            connection slot before it calls accept, so each holds one.
    """
    if isinstance(frontend, HttpFrontend):
        return int(frontend.limiter.borrowed_tokens) - parked_accepts
    return int(getattr(frontend, "active", 0))


def needs_rebuild(old: FrontendConfig, new: FrontendConfig, old_config: Config,
                  new_config: Config) -> bool:
    """Whether a reload must replace a frontend object.

    L4 routes read their pool's live config, so only the frontend's own settings
    count; an L7 frontend also fixes its pools' upstream settings when built.
    """
    if old != new:
        return True
    if new.mode is not Mode.HTTP:
        return False
    return any(old_config.pools.get(p) != new_config.pools.get(p) for p in new.pool_names)


def build(
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
