"""Routing by virtual directory and host, and per-protocol timeout profiles."""

from __future__ import annotations

import pytest

from lb.l7.routing import (
    RouteTable,
    host_name,
    normalise_vdir,
    timeout_profile,
)
from lb.l7.target import Target, parse_target
from probes.catalog import PROTOCOLS

TABLE = RouteTable(
    vdirs={"/owa": "owa", "/owa/calendar": "cal", "/EWS": "ews", "/mapi/": "mapi"},
    hosts={"legacy.contoso.com": "legacy"},
    default_pool="default",
)


@pytest.mark.parametrize(
    ("path", "pool"),
    [
        ("/owa", "owa"),
        ("/OWA/", "owa"),
        ("/owa/auth/logon.aspx", "owa"),
        ("/owa/Calendar/x", "cal"),  # the longest vdir wins
        ("/ews/Exchange.asmx", "ews"),
        ("/EWS", "ews"),
        ("/ewsfoo", "default"),  # whole segments only
        ("/mapi/emsmdb/", "mapi"),
        ("/", "default"),
    ],
)
def test_vdir_routes_case_insensitively_on_whole_segments(path: str, pool: str) -> None:
    assert TABLE.pool_for(path) == pool


def test_query_string_never_routes() -> None:
    # ProxyShell: the vdir named in the query must not decide.
    target = parse_target(b"GET", b"/autodiscover/autodiscover.json?@x.com/mapi/nspi/?&Email=a")
    assert isinstance(target, Target)
    path = target.route_path
    assert path == "/autodiscover/autodiscover.json"
    assert TABLE.pool_for(path) == "default"


def test_host_rule_pins_every_path_and_ignores_port_and_case() -> None:
    assert TABLE.pool_for("/owa/", host_name(b"Legacy.Contoso.com:443")) == "legacy"
    assert TABLE.pool_for("/owa/", host_name(b"mail.contoso.com")) == "owa"


def test_no_default_pool_gives_no_route() -> None:
    assert RouteTable(vdirs={"/owa": "owa"}).pool_for("/ecp/") is None


def test_pools_lists_every_target() -> None:
    assert TABLE.pools() == {"owa", "cal", "ews", "mapi", "legacy", "default"}


@pytest.mark.parametrize("bad", ["", "/", "/owa?x", "  "])
def test_bad_vdir_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="bad virtual directory"):
        normalise_vdir(bad)


def test_empty_pool_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty pool name"):
        RouteTable(vdirs={"/owa": ""})


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"https://mail.contoso.com/owa/?a=b", "/owa/"),
        (b"http://host", "/"),
        (b"/rpc/rpcproxy.dll?mbx@contoso.com:6001", "/rpc/rpcproxy.dll"),
    ],
)
def test_routing_path_drops_scheme_authority_and_query(target: bytes, path: str) -> None:
    parsed = parse_target(b"GET", target)
    assert isinstance(parsed, Target) and parsed.route_path == path


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"Mail.Contoso.com", "mail.contoso.com"),
        (b"[::1]:8443", "[::1]"),
        (None, None),
        (b"", None),
    ],
)
def test_host_name(raw: bytes | None, name: str | None) -> None:
    assert host_name(raw) == name


def test_short_protocols_get_a_response_timeout_and_long_lived_ones_none() -> None:
    short = timeout_profile(
        b"POST", "/Autodiscover/Autodiscover.xml", response_timeout=7, default_idle_timeout=99
    )
    assert short.protocol == "autodiscover"
    assert short.response_timeout == 7
    assert short.idle_timeout == PROTOCOLS["autodiscover"].idle_timeout
    for method, path in [
        (b"RPC_IN_DATA", "/rpc/rpcproxy.dll"),
        (b"RPC_OUT_DATA", "/rpc/rpcproxy.dll"),
        (b"POST", "/Microsoft-Server-ActiveSync"),
        (b"POST", "/mapi/emsmdb/"),
        (b"POST", "/EWS/Exchange.asmx"),
    ]:
        profile = timeout_profile(method, path, response_timeout=7, default_idle_timeout=99)
        assert profile.response_timeout is None, path


def test_activesync_idle_timeout_is_at_least_30_minutes() -> None:
    eas = timeout_profile(
        b"POST", "/Microsoft-Server-ActiveSync", response_timeout=7, default_idle_timeout=99
    )
    assert eas.idle_timeout >= 30 * 60


def test_rpc_methods_are_long_lived_outside_the_catalog_too() -> None:
    profile = timeout_profile(b"RPC_IN_DATA", "/other", response_timeout=7, default_idle_timeout=99)
    assert profile == type(profile)(None, None, 99)
    assert (
        timeout_profile(
            b"GET", "/other", response_timeout=7, default_idle_timeout=99
        ).response_timeout
        == 7
    )


def test_a_pool_s_own_idle_timeout_wins_over_the_catalog_and_the_frontend() -> None:
    ews = timeout_profile(b"POST", "/EWS/Exchange.asmx", response_timeout=7,
                          default_idle_timeout=99, pool_idle_timeout=42)
    other = timeout_profile(b"GET", "/other", response_timeout=7, default_idle_timeout=99,
                            pool_idle_timeout=42)
    catalog = timeout_profile(b"POST", "/EWS/Exchange.asmx", response_timeout=7,
                              default_idle_timeout=99)
    assert ews.idle_timeout == 42 and other.idle_timeout == 42
    assert catalog.idle_timeout == 1800  # EWS's own, from the catalog
