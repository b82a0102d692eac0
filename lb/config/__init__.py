"""The caslb configuration: TOML in, one frozen and validated tree out.

Theory of operation
-------------------
`load(path)` reads TOML with the stdlib and hands the document to
`parse(mapping)`. If the document has an `[exchange]` table, shorthand.py
first reads it into a `Farm` (farm.py) and expand.py turns that into ordinary
`[frontends.*]` and `[pools.*]` tables (checked at their `exchange.*` key
paths), merged with any the file writes by hand. Then the generic model is
read table by table (pools.py, frontends.py) into the dataclasses of model.py,
through reader.py, which records every problem with its key path and carries
on; finally cross-references are checked (a frontend naming a pool that
does not exist, two frontends on one address). If anything was recorded, one
`ConfigError` lists every problem; otherwise the caller gets a `Config` built
only from frozen dataclasses, enums, tuples and read-only mappings.

The generic model (every key is optional unless marked):

    grace = "30s"                       # shutdown drain
    [admin]      bind = "127.0.0.1:9090"; token = "..." (required off loopback)
    [logging]    format = "text" | "json"; access_log = true
    [servers.NAME]  address = "host[:port]"; fqdn; weight = 1   # referenced by name
    [frontends.NAME]                    # one table per listener
      bind = "host:port" (required); mode = "tcp" | "sni" | "http" (required)
      tcp:  pool (required)
      sni:  sni = { "owa.mail.contoso.com" = "owa", ... }; default_pool
      http: routes = { "/owa" = "owa", ... }; default_pool; hosts = [...];
            tls = { cert, key, names = [...] } or an array of them
      idle_timeout = "30m"; max_connections = 10000; sni_timeout = "5s"; header_timeout = "10s"
    [pools.NAME]
      servers = ["cas1", { name, address = "host:port", fqdn, weight }] (required)
      port (for servers whose address has none); protocol = "ews" (catalog defaults)
      balance = "roundrobin" | "wrr" | "leastconn" | "random2" | "source"
      slowstart = "0s"; panic_threshold = 0 (off; 0..1); connect_timeout = "2s"; retries = 3
      first_response_timeout; idle_timeout; reset_on_down = false; drain_grace = "30s"
      proxy_protocol = 0 | 1 | 2; tls = true | { verify, ca_file, sni } (http pools only)
      reuse = "safe" | "never" (http pools: share idle upstream connections; lb/l7/idle.py)
      observe = true | { error_limit = 10, on_error = "fail-check" }
      outlier = true | false | [pools.NAME.outlier] enabled, consecutive_5xx = 3,
              consecutive_gateway_errors = 3, interval = "10s", base_ejection_time = "30s",
              max_ejection_percent = 10 (http pools; on by default)
      check = false | [pools.NAME.check] kind, path, port, tls, starttls, expect_fqdn,
              verify, ca_file, inter, fastinter, downinter, rise, fall, timeout

Names in `sni` and `hosts` are stored lowercase (matching is case-insensitive);
file names are relative to the config file's directory. A frontend without a
default_pool refuses what its sni map or routes do not match.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lb.config.frontends import check_references, read_frontend
from lb.config.model import (
    LOG_FORMATS,
    AdminConfig,
    CertConfig,
    CheckConfig,
    Config,
    FrontendConfig,
    LoggingConfig,
    Mode,
    ObserveConfig,
    PoolConfig,
    ServerConfig,
    UpstreamTlsConfig,
)
from lb.config.pools import read_pool, read_server_table
from lb.config.reader import Errors, Table, format_duration, is_loopback, read_bind
from lb.config.shorthand import expand_exchange
from lb.ports import DEFAULT_ADMIN_PORT

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "AdminConfig",
    "CertConfig",
    "CheckConfig",
    "Config",
    "ConfigError",
    "FrontendConfig",
    "Mode",
    "ObserveConfig",
    "PoolConfig",
    "ServerConfig",
    "UpstreamTlsConfig",
    "format_duration",
    "is_loopback",
    "load",
    "parse",
]


class ConfigError(Exception):
    """A config with problems; `errors` lists every (key path, problem) found."""

    def __init__(self, errors: Errors) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(f"{path}: {problem}" if path else problem
                                   for path, problem in self.errors))


def _read_admin(table: Table | None) -> AdminConfig:
    if table is None:
        return AdminConfig()
    bind = read_bind(table, "bind", f"127.0.0.1:{DEFAULT_ADMIN_PORT}")
    token = table.string("token")
    names = tuple(n.lower() for n in table.strings("names") or ())
    for i, name in enumerate(names):
        if not name or any(c.isspace() or c in "/@" for c in name):
            table.error("names", f"entry {i + 1} must be a host name, got {name!r}")
    table.finish()
    if bind is None:
        return AdminConfig(token=token, names=names)
    if not is_loopback(bind[0]) and token is None:
        table.error("bind", f"binding {bind[0]} off loopback requires admin.token")
    return AdminConfig(host=bind[0], port=bind[1], token=token, names=names)


def _read_logging(table: Table | None) -> LoggingConfig:
    if table is None:
        return LoggingConfig()
    form = table.string("format", "text")
    if form not in LOG_FORMATS:
        table.error("format", f"must be one of {', '.join(LOG_FORMATS)}, got {form!r}")
    access_log = table.boolean("access_log", True)
    table.finish()
    return LoggingConfig(form if form in LOG_FORMATS else "text", access_log)


def _read_config(
    document: Mapping[str, Any],
    errors: Errors,
    *,
    base_dir: Path | None,
    notes: tuple[str, ...] = (),
) -> Config | None:
    """Read the generic model; None if it could not be built (errors say why)."""
    root = Table(document, "", errors)
    root.ignore("exchange")  # expanded by shorthand.py
    grace = root.duration("grace", 30.0)
    admin = _read_admin(root.table("admin"))
    logging = _read_logging(root.table("logging"))
    servers = {name: srv for name, srv in read_server_table(root.table("servers")) if srv}
    pools: dict[str, PoolConfig] = {}
    for name, table in root.tables("pools"):
        pool = read_pool(name, table, servers, base_dir)
        if pool is not None:
            pools[name] = pool
    frontends = tuple(
        fe for name, table in root.tables("frontends")
        if (fe := read_frontend(name, table, base_dir)) is not None
    )
    if not root.has("frontends"):
        root.error("frontends", "no frontend: add [frontends.NAME] tables or an [exchange] table")
    root.finish()
    check_references(frontends, pools, document, errors)
    if errors:
        return None
    return Config(frontends, MappingProxyType(pools), admin, grace, notes, logging)



def parse(document: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document into a Config.

    Args:
        document: the TOML document as `tomllib` returns it.
        base_dir: directory relative file names (certificates, CA files) are
            resolved against; None leaves them as written.

    Raises:
        ConfigError: listing every problem with its key path.
    """
    if not isinstance(document, Mapping):
        raise ConfigError([("", f"a config is a table of settings, got {type(document).__name__}")])
    errors: Errors = []
    expanded, notes = expand_exchange(document, errors)
    config = _read_config(expanded, errors, base_dir=base_dir, notes=notes)
    if errors or config is None:
        raise ConfigError(errors)
    return config


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file.

    Relative file names inside it are resolved against the file's directory.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has problems.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(file), f"cannot read the config: {exc}")]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(file), f"not valid TOML: {exc}")]) from None
    return parse(document, base_dir=file.parent)
