"""Config → L4 frontend: settings, routes and live pool policies."""

from __future__ import annotations

import pytest

from lb.build import build_tcp
from lb.config.model import FrontendConfig, Mode, PoolConfig, ServerConfig
from lb.l4.settings import UpstreamPolicy
from lb.pool import Pool
from tests.integration.l4_rig import RecordingEvents


def pool(name: str, protocol: str | None = None, **kw: object) -> Pool:
    servers = (ServerConfig("cas1", "127.0.0.1", 993, "cas1.lab.local"),)
    return Pool(PoolConfig(name, servers, protocol=protocol, **kw))  # type: ignore[arg-type]


def test_a_tcp_frontend_routes_to_its_pool_with_the_pools_policy() -> None:
    pools = {"smtp": pool("smtp", "smtp", first_response_timeout=1.5, proxy_protocol=2)}
    fe = FrontendConfig("mail", Mode.TCP, "127.0.0.1", 25, pool="smtp", max_connections=7)
    frontend = build_tcp(fe, pools, events=RecordingEvents(), report=lambda *r: None)
    assert frontend.settings.max_connections == 7
    policy = frontend._default.current_policy()  # type: ignore[union-attr]
    assert policy == UpstreamPolicy(
        connect_timeout=2.0, retries=3, first_response_timeout=1.5,
        server_speaks_first=True, proxy_protocol=2, idle_timeout=None,
    )


def test_an_sni_frontend_maps_names_and_default() -> None:
    pools = {"owa": pool("owa", "owa"), "eas": pool("eas", "eas")}
    fe = FrontendConfig("https", Mode.SNI, "127.0.0.1", 443,
                        sni_map={"owa.lab.local": "owa"}, default_pool="eas")
    frontend = build_tcp(fe, pools, events=RecordingEvents(), report=lambda *r: None)
    assert frontend._lookup("owa.lab.local").pool is pools["owa"]  # type: ignore[union-attr]
    assert frontend._lookup(None).pool is pools["eas"]  # type: ignore[union-attr]
    # TLS protocols: the client speaks first, so the timer waits for its ClientHello.
    assert not frontend._lookup(None).current_policy().server_speaks_first  # type: ignore[union-attr]


def test_bad_mode_or_pool_is_named() -> None:
    with pytest.raises(ValueError, match="mode 'http' is not tcp or sni"):
        build_tcp(FrontendConfig("w", Mode.HTTP, "127.0.0.1", 80), {},
                  events=RecordingEvents(), report=lambda *r: None)
    with pytest.raises(ValueError, match="unknown pool 'nope'"):
        build_tcp(FrontendConfig("m", Mode.TCP, "127.0.0.1", 25, pool="nope"), {},
                  events=RecordingEvents(), report=lambda *r: None)
