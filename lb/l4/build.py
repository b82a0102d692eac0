"""From an L4 frontend config (tcp or sni mode) to a running `TcpFrontend`.

The composition root calls `build_tcp` for frontends whose mode is tcp or sni;
pool policies follow each pool's live config (see `Route.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping

from lb.config import FrontendConfig, Mode
from lb.l4.connector import Connector
from lb.l4.frontend import L4Events, Report, Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings
from lb.listeners import UNGUARDED, AcceptGuard
from lb.pool import Pool


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
        return Route(pools[name])

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
