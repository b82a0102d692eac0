"""The `[exchange]` shorthand: a whole CAS farm in ten lines, expanded to the generic model.

Theory of operation
-------------------
The shorthand is read and checked at its own key paths (`exchange.servers[1].fqdn`),
then turned into ordinary `[frontends.*]` and `[pools.*]` tables, which the
generic reader validates like hand-written ones. Everything Exchange-specific
(vdirs, ports, check kinds, timeouts, which protocols are long-lived) comes
from probes/catalog.py through each pool's `protocol`. This module reads the
table into a `Farm` (farm.py); expand.py decides the shape of the farm for each mode:

- `l7` (Microsoft's scenario B): one http frontend terminating TLS on the https
  port, a route per virtual directory to a pool per protocol, each pool with
  its own healthcheck.htm probe and re-encryption to the servers.
- `l4` (scenario A): one tcp frontend on the https port passing TLS through to
  ONE pool checked on a single vdir (`l4_check`, default owa). Its blind spot:
  any other protocol can fail on a server and the server stays in (docs/exchange.md
  §3); `caslb check` prints this.
- `l4-sni` (scenario D on one address): one sni frontend on the https port;
  each protocol has its own name, `<protocol>.<namespace>` unless `hostnames`
  says otherwise (e.g. `autodiscover = "autodiscover.contoso.com"`), routed to
  a per-protocol pool with its own check; the namespace itself and unknown
  names go to the owa pool. Clients must be configured with those names.

`[exchange.compare]` (labs) fronts the same farm through other designs as well,
each on its own https port, its frontend and pools prefixed with the design
(`l4-https`, `l4-sni-ews`); the mail frontends are made once.

In every mode the mail protocols get a tcp frontend per port (imaps 993, pops
995, smtp 25, submission 587) with a pool checked by a banner dialogue; IMAP
on 143 and POP on 110 too when `listen` names them (`listen = { imap = 143 }`):
there the session starts in clear and the client's STARTTLS (STLS) passes
through, so those pools' checks upgrade too. Pools are named after
protocols (plus `https` in l4, `submission` for 587, `imap-starttls` and
`pop-starttls` for 143 and 110), frontends after ports.
`[exchange.overrides.POOL]` changes one pool's settings.

Keys: namespace, mode, bind (host only), servers = [{name, address, fqdn,
weight, ports}], protocols, ports / listen (port maps by name: https, imaps,
imap, pops, pop, smtp, submission), tls = {cert, key, names} (l7), verify, ca_file,
l4_check, hostnames, compare, pool settings (balance, slowstart, panic_threshold,
connect_timeout, retries, drain_grace, idle_timeout, first_response_timeout,
reset_on_down, proxy_protocol, reuse) and check timing (inter, fastinter, downinter,
rise, fall, timeout).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lb.config.expand import CHECK_SETTINGS, POOL_SETTINGS, expand_farm, read_settings
from lb.config.farm import (
    MAIL_PORT_NAMES,
    PORT_NAMES,
    STARTTLS_PORT_NAMES,
    SUBMISSION_PORT,
    ExchangeMode,
    Farm,
    FarmServer,
)
from lb.config.reader import Errors, Table, join, read_address, show
from probes.catalog import HTTP_PROTOCOLS, PROTOCOLS


def _default_ports() -> dict[str, int]:
    ports = {"https": PROTOCOLS["owa"].port, "submission": SUBMISSION_PORT}
    ports.update({name: PROTOCOLS[p].port for p, name in MAIL_PORT_NAMES.items()})
    ports.update({name: PROTOCOLS[p].starttls_port or 0
                  for p, name in STARTTLS_PORT_NAMES.items()})
    return ports


def _default_listen() -> dict[str, int]:
    # No clear IMAP or POP listener unless asked for: many farms offer only 993 and 995.
    ports = _default_ports()
    for name in STARTTLS_PORT_NAMES.values():
        del ports[name]
    return ports


def _read_ports(table: Table, key: str, base: Mapping[str, int]) -> dict[str, int]:
    ports = dict(base)
    sub = table.table(key)
    if sub is None:
        return ports
    for name in sub.data:
        if name not in PORT_NAMES:
            sub.error(name, f"unknown port name (known: {', '.join(PORT_NAMES)})")
            sub.ignore(name)
            continue
        port = sub.integer(name, ports.get(name), low=1, high=65535)
        if port is not None:
            ports[name] = port
    return ports


def _read_host(table: Table, key: str, *, required: bool) -> str | None:
    address = read_address(table, key, required=required)
    if address is None:
        return None
    text, host, port = address
    if port is not None:
        table.error(key, f"takes a host without a port, got {show(text)} "
                    "(ports go in ports and listen)")
        return None
    return host


def _read_servers(table: Table, ports: Mapping[str, int]) -> tuple[FarmServer, ...]:
    items = table.array("servers", required=True) or []
    if not items and table.has("servers"):
        table.error("servers", "must list at least one server")
    servers: list[FarmServer] = []
    seen: set[str | None] = set()
    for i, item in enumerate(items):
        path = join(join(table.path, "servers"), i)
        if not isinstance(item, Mapping):
            table.errors.append((path, f"must be a table with name, address and fqdn, got "
                                 f"{show(item)}"))
            continue
        entry = Table(item, path, table.errors)
        name = entry.string("name", required=True)
        host = _read_host(entry, "address", required=True)
        fqdn = entry.string("fqdn", required=True)
        weight = entry.integer("weight", 1, low=1, high=1000)
        own_ports = _read_ports(entry, "ports", ports)
        entry.finish()
        if name is not None and name in seen:
            entry.error("name", f"server {show(name)} is listed twice")
        elif name is not None and host is not None and fqdn is not None:
            servers.append(FarmServer(name, host, fqdn, weight, own_ports))
        seen.add(name)
    return tuple(servers)


def _read_protocols(table: Table) -> tuple[str, ...]:
    names = table.strings("protocols")
    if names is None:
        return tuple(PROTOCOLS)
    chosen: list[str] = []
    for name in names:
        if name.lower() not in PROTOCOLS:
            table.error("protocols", f"unknown protocol {show(name)} "
                        f"(known: {', '.join(PROTOCOLS)})")
        elif name.lower() not in chosen:
            chosen.append(name.lower())
    if not names:
        table.error("protocols", "must name at least one protocol")
    return tuple(chosen)


def _read_hostnames(table: Table, namespace: str, protocols: tuple[str, ...]
                    ) -> dict[str, tuple[str, ...]]:
    http = [p for p in protocols if p in HTTP_PROTOCOLS]
    names: dict[str, tuple[str, ...]] = {p: (f"{p}.{namespace}",) for p in http}
    sub = table.table("hostnames")
    if sub is None:
        return names
    for proto in sub.data:
        if proto not in names:
            sub.error(proto, "not an https protocol of this farm "
                      f"({', '.join(names) or 'none selected'})")
            sub.ignore(proto)
            continue
        given = sub.strings(proto)
        if given is not None:
            names[proto] = tuple(n.lower() for n in given)
    return names


def _read_tls(table: Table, modes: set[ExchangeMode | None]) -> Mapping[str, Any] | None:
    sub = table.table("tls")
    if sub is None:
        if ExchangeMode.L7 in modes and not table.has("tls"):
            table.error("tls", "l7 mode terminates TLS: give { cert = ..., key = ... } "
                        "(the same certificate as Exchange under Extended Protection)")
        return None
    if ExchangeMode.L7 not in modes:
        table.error("tls", "only l7 mode terminates TLS; l4 and l4-sni pass it through")
    tls = {"cert": sub.string("cert", required=True), "key": sub.string("key", required=True)}
    if sub.has("names"):
        tls["names"] = sub.strings("names")
    sub.finish()
    return tls if all(v is not None for v in tls.values()) else None


def _read_compare(table: Table, mode: ExchangeMode | None, listen: Mapping[str, int]
                  ) -> dict[ExchangeMode, int]:
    sub = table.table("compare")
    if sub is None:
        return {}
    compare: dict[ExchangeMode, int] = {}
    taken = {port: name for name, port in listen.items()}
    for key in sub.data:
        other = next((m for m in ExchangeMode if m.value == key), None)
        port = sub.integer(key, None, low=1, high=65535)
        if other is None or other is mode:
            sub.error(key, f"names a design other than mode {show(mode and mode.value)} "
                      f"({', '.join(m.value for m in ExchangeMode if m is not mode)})")
        elif port in taken:
            sub.error(key, f"port {port} is already listen.{taken[port]}")
        elif port is not None:
            compare[other] = port
            taken[port] = f"compare.{key}"
    return compare


def _read_farm(table: Table) -> Farm | None:
    before = len(table.errors)
    namespace = table.string("namespace", required=True)
    mode = table.choice("mode", ExchangeMode, None)
    if mode is None and not table.has("mode"):
        table.error("mode", 'is required: "l7", "l4" or "l4-sni"')
    bind = _read_host(table, "bind", required=True)
    ports = _read_ports(table, "ports", _default_ports())
    listen = _read_ports(table, "listen", _default_listen())
    compare = _read_compare(table, mode, listen)
    modes = {mode, *compare}
    servers = _read_servers(table, ports)
    protocols = _read_protocols(table)
    http = [p for p in protocols if p in HTTP_PROTOCOLS]
    l4_check = table.string("l4_check", "owa" if "owa" in http else (http or ["owa"])[0])
    if table.has("l4_check") and (ExchangeMode.L4 not in modes or l4_check not in http):
        table.error("l4_check", "names the https protocol an l4 farm is checked on "
                    f"(one of {', '.join(http) or 'none selected'})")
    farm = Farm(
        namespace=(namespace or "").lower(),
        mode=mode or ExchangeMode.L7,
        bind=bind or "",
        servers=servers,
        protocols=protocols,
        listen=listen,
        tls=_read_tls(table, modes),
        verify=table.boolean("verify", True),
        ca_file=table.string("ca_file"),
        l4_check=l4_check,
        hostnames=_read_hostnames(table, (namespace or "").lower(), protocols),
        pool_settings=read_settings(table, POOL_SETTINGS),
        check_settings=read_settings(table, CHECK_SETTINGS),
        compare=compare,
    )
    if farm.ca_file is not None and not farm.verify:
        table.error("ca_file", "is given but verify = false")
    if farm.hostnames and ExchangeMode.L4_SNI not in modes and table.has("hostnames"):
        table.error("hostnames", "only l4-sni mode routes by host name")
    return farm if len(table.errors) == before else None


def expand_exchange(
    document: Mapping[str, Any], errors: Errors
) -> tuple[Mapping[str, Any], tuple[str, ...]]:
    """Replace an `[exchange]` table by the frontends and pools it stands for.

    Args:
        document: the TOML document.
        errors: where problems are recorded, with `exchange.*` key paths.

    Returns:
        The document with generated `frontends` and `pools` merged in (hand-written
        ones are kept; a name clash is an error), and notes about the design.
    """
    if "exchange" not in document:
        return document, ()
    root = Table(document, "", errors)
    table = root.table("exchange")
    farm = None if table is None else _read_farm(table)
    overrides = None if table is None else table.table("overrides")
    if table is not None:
        table.finish()
    merged = dict(document)
    if farm is None:
        merged.setdefault("frontends", {})  # the [exchange] errors say it all
        return merged, ()
    frontends, pools, notes = expand_farm(farm, overrides)
    # Generated tables come first (the farm is the main thing), hand-written ones after.
    for section, generated in (("frontends", frontends), ("pools", pools)):
        written = document.get(section, {})
        if not isinstance(written, Mapping):
            continue  # the generic reader reports that it is not a table
        for name in written:
            if name in generated:
                errors.append((join(section, name), f"{section[:-1]} {show(name)} is already "
                               f"defined by [exchange]; choose another name"))
        merged[section] = {**generated, **{k: v for k, v in written.items() if k not in generated}}
    return merged, notes
