"""Reading `[frontends.*]` tables, and the checks that span frontends and pools.

Each mode uses its own subset of keys; a key of another mode is an error that
says which mode it belongs to (a `pool` on an http frontend is a typo for
`default_pool`, not something to ignore).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lb.config.model import ADMIN_LISTENER, CertConfig, FrontendConfig, Mode, PoolConfig
from lb.config.reader import Errors, Table, join, read_bind, resolve_file, show

# Keys that only some modes use.
_MODES_OF_KEY: dict[str, frozenset[Mode]] = {
    "pool": frozenset({Mode.TCP}),
    "sni": frozenset({Mode.SNI}),
    "sni_timeout": frozenset({Mode.SNI}),
    "default_pool": frozenset({Mode.SNI, Mode.HTTP}),
    "routes": frozenset({Mode.HTTP}),
    "hosts": frozenset({Mode.HTTP}),
    "tls": frozenset({Mode.HTTP}),
    "header_timeout": frozenset({Mode.HTTP}),
    "trusted_proxies": frozenset({Mode.HTTP}),
}
_HINTS = {
    ("pool", Mode.HTTP): "; use default_pool",
    ("pool", Mode.SNI): "; use default_pool",
    ("tls", Mode.TCP): ": tcp and sni frontends pass TLS through untouched",
    ("tls", Mode.SNI): ": tcp and sni frontends pass TLS through untouched",
}


def _check_mode_keys(table: Table, mode: Mode) -> None:
    for key, modes in _MODES_OF_KEY.items():
        if key in table.data and mode not in modes:
            owners = " and ".join(sorted(m.value for m in modes))
            hint = _HINTS.get((key, mode), "")
            table.error(key, f"not used by {mode.value} frontends (only {owners}){hint}")


def _valid_server_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c in ":/[]" for c in name)


def _read_map(table: Table, key: str, *, routes: bool) -> dict[str, str]:
    """A {name: pool} table: SNI names (lowercased) or virtual directories."""
    sub = table.table(key)
    if sub is None:
        return {}
    result: dict[str, str] = {}
    seen: set[str] = set()
    for name, pool in sub.data.items():
        sub.ignore(name)
        if routes and (not name.startswith("/") or "?" in name):
            sub.error(name, 'a route must be a path like "/owa", without a query')
            continue
        if not routes and not _valid_server_name(name):
            sub.error(name, f"not a server name: {show(name)}")
            continue
        if not isinstance(pool, str) or not pool:
            sub.error(name, f"must name a pool, got {show(pool)}")
            continue
        # Routing and SNI matching are case-insensitive, so are duplicates.
        normal = name.lower().rstrip("/") if routes else name.lower()
        if normal in seen:
            sub.error(name, "is listed twice (names are case-insensitive)")
            continue
        seen.add(normal)
        result[name if routes else normal] = pool
    return result


def _read_cert(item: Any, path: str, errors: Errors, base_dir: Path | None) -> CertConfig | None:
    if not isinstance(item, Mapping):
        errors.append((path, f"must be a table with cert and key, got {show(item)}"))
        return None
    table = Table(item, path, errors)
    cert = table.string("cert", required=True)
    key = table.string("key", required=True)
    names = table.strings("names") or ()
    table.finish()
    if cert is None or key is None:
        return None
    return CertConfig(resolve_file(cert, base_dir), resolve_file(key, base_dir),
                      tuple(n.lower() for n in names))


def _read_certs(table: Table, base_dir: Path | None) -> tuple[CertConfig, ...]:
    value = table.raw("tls")
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    path = join(table.path, "tls")
    certs = (
        _read_cert(item, join(path, i) if isinstance(value, list) else path, table.errors,
                   base_dir)
        for i, item in enumerate(items)
    )
    return tuple(c for c in certs if c is not None)


def read_frontend(name: str, table: Table, base_dir: Path | None) -> FrontendConfig | None:
    """One `[frontends.NAME]` table; None when it has errors (recorded)."""
    before = len(table.errors)
    if name == ADMIN_LISTENER:
        table.error(None, f'"{ADMIN_LISTENER}" names the admin API\'s listener; '
                          "give the frontend another name")
    bind = read_bind(table, "bind", None)
    mode = table.choice("mode", Mode, None)
    if mode is None and not table.has("mode"):
        table.error("mode", 'is required: "tcp", "sni" or "http"')
    defaults = FrontendConfig(name, Mode.TCP, "", 0)
    pool = table.string("pool", required=mode is Mode.TCP)
    sni_map = _read_map(table, "sni", routes=False)
    routes = _read_map(table, "routes", routes=True)
    default_pool = table.string("default_pool")
    if mode is Mode.SNI and not sni_map and default_pool is None:
        table.error("sni", "an sni frontend needs an sni table or a default_pool")
    if mode is Mode.HTTP and not routes and default_pool is None:
        table.error("routes", "an http frontend needs routes or a default_pool")
    frontend = FrontendConfig(
        name=name,
        mode=mode or Mode.TCP,
        host=bind[0] if bind else "",
        port=bind[1] if bind else 0,
        pool=pool,
        sni_map=MappingProxyType(sni_map),
        default_pool=default_pool,
        routes=MappingProxyType(routes),
        hosts=tuple(h.lower() for h in table.strings("hosts") or ()),
        tls=_read_certs(table, base_dir),
        idle_timeout=table.duration("idle_timeout", defaults.idle_timeout, positive=True),
        max_connections=table.integer(
            "max_connections", defaults.max_connections, low=1, high=1_000_000
        ),
        sni_timeout=table.duration("sni_timeout", defaults.sni_timeout, positive=True),
        header_timeout=table.duration("header_timeout", defaults.header_timeout, positive=True),
        trusted_proxies=_networks(table, "trusted_proxies"),
    )
    if mode is not None:
        _check_mode_keys(table, mode)
    table.finish()
    return frontend if len(table.errors) == before else None


def _pool_refs(fe: FrontendConfig) -> list[tuple[str, str]]:
    """(key path, pool name) of every pool reference of a frontend."""
    base = join("frontends", fe.name)
    refs = [(join(base, "pool"), fe.pool), (join(base, "default_pool"), fe.default_pool)]
    refs += [(join(join(base, "sni"), k), v) for k, v in fe.sni_map.items()]
    refs += [(join(join(base, "routes"), k), v) for k, v in fe.routes.items()]
    return [(path, name) for path, name in refs if name is not None]


def check_references(
    frontends: tuple[FrontendConfig, ...],
    pools: Mapping[str, PoolConfig],
    document: Mapping[str, Any],
    errors: Errors,
) -> None:
    """Cross-checks: pools named exist, binds are unique, TLS re-encryption fits the mode."""
    declared = document.get("pools")
    known = set(declared) if isinstance(declared, Mapping) else set()
    for fe in frontends:
        for path, name in _pool_refs(fe):
            if name not in known:
                errors.append((path, f"unknown pool {show(name)}"))
    bound: dict[tuple[str, int], str] = {}
    for fe in frontends:
        other = bound.setdefault((fe.host, fe.port), fe.name)
        if other != fe.name:
            errors.append((join(join("frontends", fe.name), "bind"),
                           f"{fe.host}:{fe.port} is already bound by frontends.{other}"))
    for fe in frontends:
        if fe.mode is Mode.HTTP:
            continue
        for name in fe.pool_names:
            pool = pools.get(name)
            if pool is not None and pool.upstream_tls is not None:
                errors.append((join(join("pools", name), "tls"),
                               f"re-encryption needs an http frontend, but frontends.{fe.name} "
                               f"is {fe.mode.value} (TLS passes through)"))


def _networks(table: Table, key: str) -> tuple[str, ...]:
    """Addresses or CIDR networks, each checked, kept as their normal text."""
    out = []
    for i, text in enumerate(table.strings(key) or ()):
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            table.errors.append((join(join(table.path, key), i),
                                 f"not an address or network: {text!r}"))
    return tuple(out)
