"""Reading `[servers.*]` and `[pools.*]` (with their checks) into config dataclasses.

A pool's `protocol` names an Exchange protocol in probes/catalog.py and supplies
the defaults a pool for it needs: its health check (kind, healthcheck path,
TLS, timeout), first-response and idle timeouts, and whether connections are
reset when a server goes DOWN (long-lived protocols). Any of them can still be
set explicitly; the catalog is only the default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lb.balancer import Balance
from lb.config.model import (
    DEFAULT_OUTLIER,
    CheckConfig,
    ObserveConfig,
    PoolConfig,
    ServerConfig,
    UpstreamTlsConfig,
)
from lb.config.reader import Table, format_duration, join, read_address, resolve_file, show
from lb.l7.idle import Reuse
from lb.retry import RetryTo
from probes.catalog import PROTOCOLS, CheckKind, ExchangeProtocol
from probes.checks import CheckSpec
from probes.outlier import OutlierSettings
from probes.state import OnError, Timing

_MAIL_KINDS = (CheckKind.IMAP, CheckKind.POP, CheckKind.SMTP)


@dataclass(frozen=True)
class ServerEntry:
    """A `[servers.NAME]` table: a server pools refer to by name; port may come later."""

    host: str
    port: int | None
    fqdn: str
    weight: int


def _read_entry(table: Table) -> ServerEntry | None:
    address = read_address(table, "address", required=True)
    fqdn = table.string("fqdn")
    weight = table.integer("weight", 1, low=1, high=1000)
    table.finish()
    if address is None:
        return None
    _, host, port = address
    return ServerEntry(host, port, fqdn or host, weight)


def read_server_table(table: Table | None) -> Iterator[tuple[str, ServerEntry | None]]:
    """The `[servers]` table: name → entry (None for an entry with errors)."""
    if table is None:
        return
    for name in list(table.data):
        inner = table.table(name)
        if inner is not None:
            yield name, _read_entry(inner)


def _read_member(
    item: Any, path: str, table: Table, port: int | None, refs: Mapping[str, ServerEntry]
) -> ServerConfig | None:
    if isinstance(item, str):
        entry = refs.get(item)
        if entry is None:
            table.errors.append((path, f"unknown server {show(item)} (define it in [servers])"))
            return None
        name = item
    elif isinstance(item, Mapping):
        inner = Table(item, path, table.errors)
        name = inner.string("name", required=True)
        entry = _read_entry(inner)
        if name is None or entry is None:
            return None
    else:
        table.errors.append((path, f"must be a server name or a table, got {show(item)}"))
        return None
    final_port = entry.port if entry.port is not None else port
    if final_port is None:
        table.errors.append((path, f"server {show(name)} needs a port: host:port, or set port"))
        return None
    return ServerConfig(name, entry.host, final_port, entry.fqdn, entry.weight)


def _read_members(
    table: Table, refs: Mapping[str, ServerEntry]
) -> tuple[ServerConfig, ...]:
    port = table.integer("port", None, low=1, high=65535)
    items = table.array("servers", required=True) or []
    if not items and table.has("servers"):
        table.error("servers", "must list at least one server")
    members: list[ServerConfig] = []
    for i, item in enumerate(items):
        path = join(join(table.path, "servers"), i)
        member = _read_member(item, path, table, port, refs)
        if member is None:
            continue
        if any(m.name == member.name for m in members):
            table.errors.append((path, f"server {show(member.name)} is listed twice"))
            continue
        members.append(member)
    return tuple(members)


def _check_defaults(kind: CheckKind, proto: ExchangeProtocol | None) -> tuple[bool, float]:
    """Default (tls, timeout) of a check of `kind`."""
    if proto is not None and proto.check is kind:
        return proto.implicit_tls, proto.check_timeout
    return kind in (CheckKind.HEALTHCHECK, CheckKind.IMAP, CheckKind.POP), 2.0


def _read_jitter(table: Table) -> float | None:
    if not table.has("jitter"):
        return None
    jitter = table.fraction("jitter", 0.0)
    if jitter >= 1:
        table.error("jitter", f"must be below 1 (a fraction of the interval), got {show(jitter)}")
        return None
    return jitter


def _read_timing(table: Table, timeout: float) -> Timing | None:
    defaults = Timing()
    values = {
        "inter": table.duration("inter", defaults.inter, positive=True),
        "fastinter": table.duration("fastinter", None, positive=True),
        "downinter": table.duration("downinter", None, positive=True),
        "rise": table.integer("rise", defaults.rise, low=1, high=100),
        "fall": table.integer("fall", defaults.fall, low=1, high=100),
        "timeout": table.duration("timeout", timeout, positive=True),
        "jitter": _read_jitter(table),
    }
    try:
        return Timing(**values)
    except ValueError as exc:  # values were checked above; kept as a safety net
        table.error(None, str(exc))
        return None


def read_check(
    table: Table, proto: ExchangeProtocol | None, base_dir: Path | None
) -> CheckConfig | None:
    """A `[pools.NAME.check]` table; `proto` gives its defaults."""
    before = len(table.errors)
    default_kind = proto.check if proto is not None else None
    kind = table.choice("kind", CheckKind, default_kind)
    if kind is None:
        table.error("kind", "is required when the pool has no protocol")
        kind = CheckKind.TCP
    default_path = proto.healthcheck_path if proto is not None and kind is default_kind else None
    path = table.string("path", default_path)
    if kind is CheckKind.HEALTHCHECK and path is None:
        table.error("path", "is required for a healthcheck check (e.g. /owa/healthcheck.htm)")
    if path is not None and not path.startswith("/"):
        table.error("path", f'must start with "/", got {show(path)}')
    if kind is not CheckKind.HEALTHCHECK and table.has("path"):
        table.error("path", f"only a healthcheck check has a path, not {kind.value}")
    tls_default, timeout_default = _check_defaults(kind, proto)
    starttls = table.boolean("starttls", False)
    tls = table.boolean("tls", tls_default and not starttls)  # STARTTLS implies a clear start
    if starttls and (kind not in _MAIL_KINDS or tls):
        table.error("starttls", "needs an imap, pop or smtp check with tls = false")
    expect_fqdn = table.boolean("expect_fqdn", False)
    if expect_fqdn and kind is not CheckKind.HEALTHCHECK:
        table.error("expect_fqdn", "only a healthcheck check can match the server fqdn")
    verify = table.boolean("verify", True)
    ca_file = table.string("ca_file")
    port = table.integer("port", None, low=1, high=65535)
    if ca_file is not None and not verify:
        table.error("ca_file", "is given but verify = false")
    timing = _read_timing(table, timeout_default)
    table.finish()
    if timing is None or len(table.errors) > before:
        return None
    spec = CheckSpec(
        kind=kind,
        path=path if kind is CheckKind.HEALTHCHECK else None,
        timeout=timing.timeout,
        tls=tls,
        starttls=starttls,
        expect_fqdn=expect_fqdn,
        verify=verify,
        ca_file=None if ca_file is None else resolve_file(ca_file, base_dir),
    )
    return CheckConfig(spec, timing, port)


def _read_pool_check(
    table: Table, proto: ExchangeProtocol | None, base_dir: Path | None
) -> CheckConfig | None:
    value = table.raw("check")
    if value is False or (value is None and proto is None):
        return None
    if value is None or value is True:
        # No table: every setting from the protocol's defaults (kind is required without one).
        return read_check(Table({}, join(table.path, "check"), table.errors), proto, base_dir)
    sub = table.table("check")
    return None if sub is None else read_check(sub, proto, base_dir)


def _switch_table(table: Table, key: str) -> Table | bool:
    """A setting that is `true` (on, defaults), `false`/absent (off) or a table of settings.

    False also when the value is neither, after reporting it on `key`.
    """
    value = table.raw(key)
    if value is None or value is False:
        return False
    if value is True:
        return True
    sub = table.table(key)
    return False if sub is None else sub


def _read_upstream_tls(table: Table, base_dir: Path | None) -> UpstreamTlsConfig | None:
    sub = _switch_table(table, "tls")
    if not isinstance(sub, Table):
        return UpstreamTlsConfig() if sub else None
    verify = sub.boolean("verify", True)
    ca_file = sub.string("ca_file")
    sni = _read_sni(sub)
    verify_name = sub.string("verify_name")
    if ca_file is not None and not verify:
        sub.error("ca_file", "is given but verify = false")
    if verify_name is not None and not verify:
        sub.error("verify_name", "is given but verify = false")
    sub.finish()
    return UpstreamTlsConfig(verify, None if ca_file is None else resolve_file(ca_file, base_dir),
                             sni, verify_name)


def _read_sni(table: Table) -> bool | str:
    """`sni`: true (the server's fqdn), false (none) or the name to send."""
    value = table.raw("sni")
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    name = table.string("sni")
    return True if name is None else str(name)


def _read_observe(table: Table) -> ObserveConfig | None:
    sub = _switch_table(table, "observe")
    if not isinstance(sub, Table):
        return ObserveConfig() if sub else None
    defaults = ObserveConfig()
    limit = sub.integer("error_limit", defaults.error_limit, low=1, high=10_000)
    on_error = sub.choice("on_error", OnError, defaults.on_error)
    sub.finish()
    return ObserveConfig(limit, on_error)


def _read_outlier(table: Table) -> OutlierSettings | None:
    """`outlier = false`, `true` (the defaults) or a table; absent is the defaults too.

    A bad key is recorded (the pool then fails as a whole); its default stands in.
    """
    value = table.raw("outlier")
    if value is False:
        return None
    if value is None or value is True:
        return DEFAULT_OUTLIER
    sub = table.table("outlier")
    if sub is None:
        return None
    d = DEFAULT_OUTLIER
    enabled = sub.boolean("enabled", True)
    errors = sub.integer("consecutive_5xx", d.consecutive_errors, low=1, high=10_000)
    gateway = sub.integer(
        "consecutive_gateway_errors", d.consecutive_gateway_failures, low=1, high=10_000
    )
    interval = sub.duration("interval", d.window, positive=True)
    base = sub.duration("base_ejection_time", d.base_ejection_time, positive=True)
    if base > d.max_ejection_time:
        longest = format_duration(d.max_ejection_time)
        sub.error("base_ejection_time", f"must be at most {longest} (the longest ejection)")
        base = d.base_ejection_time
    percent = sub.integer("max_ejection_percent", int(d.max_ejection_percent), low=0, high=100)
    sub.finish()
    if not enabled:
        return None
    return replace(d, consecutive_errors=errors, consecutive_gateway_failures=gateway,
                   window=interval, base_ejection_time=base, max_ejection_percent=percent)


def _read_protocol(table: Table) -> ExchangeProtocol | None:
    name = table.string("protocol")
    if name is None:
        return None
    proto = PROTOCOLS.get(name.lower())
    if proto is None:
        table.error("protocol", f"unknown protocol {show(name)} (known: {', '.join(PROTOCOLS)})")
    return proto


def read_pool(
    name: str, table: Table, refs: Mapping[str, ServerEntry], base_dir: Path | None
) -> PoolConfig | None:
    """One `[pools.NAME]` table; None when it has errors (recorded)."""
    before = len(table.errors)
    proto = _read_protocol(table)
    servers = _read_members(table, refs)
    defaults = PoolConfig(name, ())
    pool = PoolConfig(
        name=name,
        servers=servers,
        balance=table.choice("balance", Balance, defaults.balance),
        check=_read_pool_check(table, proto, base_dir),
        protocol=None if proto is None else proto.name,
        slowstart=table.duration("slowstart", defaults.slowstart),
        panic_threshold=table.fraction("panic_threshold", defaults.panic_threshold),
        connect_timeout=table.duration("connect_timeout", defaults.connect_timeout, positive=True),
        retries=table.integer("retries", defaults.retries, low=0, high=100),
        retry_to=table.choice("retry_to", RetryTo, defaults.retry_to),
        response_timeout=table.duration(
            "response_timeout", defaults.response_timeout, positive=True
        ),
        first_response_timeout=table.duration(
            "first_response_timeout",
            None if proto is None else proto.first_response_timeout,
            positive=True,
        ),
        idle_timeout=table.duration(
            "idle_timeout", None if proto is None else proto.idle_timeout, positive=True
        ),
        reset_on_down=table.boolean(
            "reset_on_down", defaults.reset_on_down if proto is None else proto.long_lived
        ),
        drain_grace=table.duration("drain_grace", defaults.drain_grace),
        proxy_protocol=table.integer("proxy_protocol", 0, low=0, high=2),
        transparent=table.boolean("transparent", False),
        upstream_tls=_read_upstream_tls(table, base_dir),
        observe=_read_observe(table),
        outlier=_read_outlier(table),
        reuse=table.choice("reuse", Reuse, defaults.reuse),
    )
    table.finish()
    return pool if len(table.errors) == before else None
