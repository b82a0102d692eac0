"""The frontends and pools an `[exchange]` farm expands to, per mode (see shorthand.py).

Output is plain TOML-shaped dicts (durations as strings) so the generic reader
validates them exactly like a hand-written config.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from lb.balancer import Balance
from lb.config.farm import MAIL_PORT_NAMES, STARTTLS_PORT_NAMES, ExchangeMode, Farm
from lb.config.reader import Table, format_duration, show
from lb.l7.idle import Reuse
from probes.catalog import HTTP_PROTOCOLS, PROTOCOLS

# Long Exchange sessions balance better on live counts than on turns; slow start
# keeps least-conn off a server that just came back (Outlook reconnect storms).
# No `outlier` key: an Exchange pool gets the generic default, which was tuned for
# Exchange (lb/config/model.py DEFAULT_OUTLIER), and EWS its SOAP-fault rule.
_POOL_DEFAULTS: dict[str, Any] = {"balance": "leastconn", "slowstart": "30s", "observe": True}

Settings = dict[str, tuple[str, dict[str, Any]]]

# Settings the [exchange] table and [exchange.overrides.POOL] may carry: key → (reader, args).
POOL_SETTINGS: Settings = {
    "balance": ("choice", {"kind": Balance}),
    "slowstart": ("duration", {}),
    "panic_threshold": ("fraction", {}),
    "connect_timeout": ("duration", {"positive": True}),
    "retries": ("integer", {"low": 0, "high": 100}),
    "drain_grace": ("duration", {}),
    "idle_timeout": ("duration", {"positive": True}),
    "first_response_timeout": ("duration", {"positive": True}),
    "reset_on_down": ("boolean", {}),
    "proxy_protocol": ("integer", {"low": 0, "high": 2}),
    "reuse": ("choice", {"kind": Reuse}),
}
CHECK_SETTINGS: Settings = {
    "inter": ("duration", {"positive": True}),
    "fastinter": ("duration", {"positive": True}),
    "downinter": ("duration", {"positive": True}),
    "rise": ("integer", {"low": 1, "high": 100}),
    "fall": ("integer", {"low": 1, "high": 100}),
    "timeout": ("duration", {"positive": True}),
}


def read_settings(table: Table, spec: Settings) -> dict[str, Any]:
    """Validated settings, re-rendered as the TOML values the generic reader takes."""
    out: dict[str, Any] = {}
    for key, (reader, args) in spec.items():
        if key not in table.data:
            table.ignore(key)
            continue
        before = len(table.errors)
        if reader == "choice":
            value = table.choice(key, args["kind"], None)
        elif reader == "boolean":
            value = table.boolean(key, False)
        else:
            value = getattr(table, reader)(key, None, **args)
        if len(table.errors) > before:
            continue
        if reader == "duration":
            value = format_duration(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        out[key] = value
    return out


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _pool(
    farm: Farm,
    port_name: str,
    *,
    protocol: str | None = None,
    check: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    servers = [
        {"name": s.name, "address": _address(s.host, s.ports[port_name]), "fqdn": s.fqdn,
         "weight": s.weight}
        for s in farm.servers
    ]
    pool: dict[str, Any] = {"servers": servers, **_POOL_DEFAULTS}
    if protocol is not None:
        pool["protocol"] = protocol
    pool.update(extra or {})
    pool.update(farm.pool_settings)
    check_table: dict[str, Any] = dict(check or {})
    # SMTP's check speaks clear: only a check that does TLS gets the CA.
    if protocol is None or PROTOCOLS[protocol].implicit_tls or check_table.get("starttls"):
        check_table["verify"] = farm.verify
        if farm.ca_file is not None:
            check_table["ca_file"] = farm.ca_file
    check_table.update(farm.check_settings)
    pool["check"] = check_table
    return pool


def _frontend(farm: Farm, port: int, mode: str, **keys: Any) -> dict[str, Any]:
    return {"bind": _address(farm.bind, port), "mode": mode, **keys}


def _longest(seconds: list[float]) -> str:
    return format_duration(max(seconds))


def _https(farm: Farm, mode: ExchangeMode, port: int, prefix: str
           ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The https frontend and its pools for one design, their names prefixed."""
    http = [p for p in farm.protocols if p in HTTP_PROTOCOLS]
    if not http:
        return {}, {}, []
    default = prefix + ("owa" if "owa" in http else http[0])
    idle = _longest([PROTOCOLS[p].idle_timeout for p in http])
    fqdn_check = {"expect_fqdn": True}
    name = f"{prefix}https"
    if mode is ExchangeMode.L4:
        proto = PROTOCOLS[farm.l4_check]
        check = {"kind": proto.check.value, "path": proto.healthcheck_path,
                 "timeout": format_duration(proto.check_timeout), **fqdn_check}
        extra = {
            "idle_timeout": idle,
            "first_response_timeout": _longest([PROTOCOLS[p].first_response_timeout
                                                for p in http]),
            "reset_on_down": any(PROTOCOLS[p].long_lived for p in http),
        }
        pool = _pool(farm, "https", check=check, extra=extra)
        frontend = _frontend(farm, port, "tcp", pool=name, idle_timeout=idle)
        return {name: frontend}, {name: pool}, []
    if mode is ExchangeMode.L4_SNI:
        pools = {prefix + p: _pool(farm, "https", protocol=p, check=fqdn_check) for p in http}
        sni = {host: prefix + p for p in http for host in farm.hostnames[p]}
        sni.setdefault(farm.namespace, default)
        frontend = _frontend(farm, port, "sni", sni=sni, default_pool=default,
                             idle_timeout=idle)
        names = ", ".join(f"{n} → {p}" for n, p in sni.items())
        note = (f"l4-sni: clients must use one host name per protocol ({names}); "
                f"other names go to pool {default}")
        return {name: frontend}, pools, [note]
    upstream: dict[str, Any] = {"verify": farm.verify}
    if farm.ca_file is not None:
        upstream["ca_file"] = farm.ca_file
    pools = {prefix + p: _pool(farm, "https", protocol=p, check=fqdn_check,
                               extra={"tls": upstream}) for p in http}
    routes = {PROTOCOLS[p].vdir: prefix + p for p in http}
    frontend = _frontend(farm, port, "http", routes=routes, default_pool=default,
                         tls=dict(farm.tls or {}), idle_timeout=idle)
    note = ("l7: TLS is terminated here and re-encrypted to the servers; under Extended "
            "Protection the balancer must present the same certificate as Exchange")
    return {name: frontend}, pools, [note]


def _mail(farm: Farm) -> tuple[dict[str, Any], dict[str, Any]]:
    frontends: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    for proto, port_name in MAIL_PORT_NAMES.items():
        if proto not in farm.protocols:
            continue
        listeners = [(proto, port_name, False)]
        if STARTTLS_PORT_NAMES.get(proto) in farm.listen:
            listeners.append((f"{proto}-starttls", STARTTLS_PORT_NAMES[proto], True))
        if proto == "smtp":
            listeners.append(("submission", "submission", False))
        for pool_name, name, starttls in listeners:
            check = {"starttls": True} if starttls else None
            pools[pool_name] = _pool(farm, name, protocol=proto, check=check)
            idle = format_duration(PROTOCOLS[proto].idle_timeout)
            frontends[name] = _frontend(farm, farm.listen[name], "tcp", pool=pool_name,
                                        idle_timeout=idle)
    return frontends, pools


def _apply_overrides(pools: dict[str, Any], overrides: Table | None) -> None:
    if overrides is None:
        return
    for name in list(overrides.data):
        sub = overrides.table(name)
        if sub is None:
            continue
        if name not in pools:
            sub.error(None, f"no pool {show(name)} in this farm (pools: {', '.join(pools)})")
            continue
        pools[name].update(read_settings(sub, POOL_SETTINGS))
        pools[name]["check"].update(read_settings(sub, CHECK_SETTINGS))
        sub.finish()


def expand_farm(
    farm: Farm, overrides: Table | None
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """Frontends, pools (TOML-shaped) and design notes for a validated farm."""
    frontends, pools, notes = _https(farm, farm.mode, farm.listen["https"], "")
    for mode, port in farm.compare.items():
        more_frontends, more_pools, more_notes = _https(farm, mode, port, f"{mode.value}-")
        frontends.update(more_frontends)
        pools.update(more_pools)
        notes += more_notes
    mail_frontends, mail_pools = _mail(farm)
    frontends.update(mail_frontends)
    pools.update(mail_pools)
    _apply_overrides(pools, overrides)
    return frontends, pools, tuple(notes)
