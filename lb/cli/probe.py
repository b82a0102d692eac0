"""`caslb probe CONFIG` or `caslb probe HOST...`: one round of Exchange health probes.

With one argument naming an existing file, it is a config: every pool's active
check runs once against each of its servers (a check shared by pools with the
same server and spec runs once) and the table has a row per (pool, server).
Otherwise the arguments are hosts:

A HOST is ``FQDN[=ADDR[:PORT]][,PROTOCOL=PORT...]``: the FQDN goes into Host
and SNI (and is matched against the certificate), ADDR:PORT is where to dial
(PORT serves every HTTP protocol), and ``PROTOCOL=PORT`` pairs set other ports
for that host alone, so a farm listening on loopback ports is probed under its
real names. ``--port PROTOCOL=PORT`` sets a port for every host.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from lb.cli import admin
from lb.cli._app import app
from lb.cli._config import load_or_exit
from lb.cli._startup import run_or_exit
from lb.config import Config
from probes.catalog import HTTP_PROTOCOLS, PROTOCOLS
from probes.checks import CheckSpec, Target, run_check
from probes.round import HTTPS, ProbeHost, ProbeRow, probe_round, run_checks
from probes.runner import Check

_PORT_NAMES = (HTTPS, *PROTOCOLS)
_DEFAULT_PROTOCOLS = ",".join(HTTP_PROTOCOLS)


def parse_port(text: str) -> tuple[str, int]:
    """``NAME=PORT`` → (name, port); NAME is a protocol or ``https``.

    Raises:
        typer.BadParameter: naming the bad text.
    """
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in _PORT_NAMES:
        known = ", ".join(_PORT_NAMES)
        raise typer.BadParameter(f"port {text!r} is not NAME=PORT with NAME one of {known}")
    return name, _port_number(value, text)


def _port_number(value: str, text: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise typer.BadParameter(f"port {value!r} in {text!r} is not a number in 1..65535")
    return int(value)


def _split_address(address: str, text: str) -> tuple[str, int | None]:
    if address.startswith("["):  # [IPv6]:port
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise typer.BadParameter(f"address {address!r} in {text!r} is malformed")
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, None
    if not host:
        raise typer.BadParameter(f"host {text!r} has an empty address")
    return host, None if port is None else _port_number(port, text)


def parse_host(text: str, ports: dict[str, int] | None = None) -> ProbeHost:
    """Parse ``FQDN[=ADDR[:PORT]][,PROTOCOL=PORT...]`` (see the module docstring).

    Args:
        text: the HOST argument.
        ports: ports for every host, overridden by the host's own.

    Raises:
        typer.BadParameter: naming the bad text.
    """
    head, *pairs = text.split(",")
    fqdn, _, address = head.partition("=")
    if not fqdn or any(c.isspace() for c in fqdn):
        raise typer.BadParameter(f"host {text!r} has no FQDN before '='")
    merged = dict(ports or {})
    host = fqdn
    if address:
        host, https = _split_address(address, text)
        if https is not None:
            merged[HTTPS] = https
    merged.update(parse_port(pair) for pair in pairs)
    return ProbeHost(fqdn, host, merged)


def parse_protocols(text: str) -> list[str]:
    """A comma-separated list of catalog protocol names, or ``all``."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(PROTOCOLS)
    bad = [n for n in names if n not in PROTOCOLS]
    if bad or not names:
        raise typer.BadParameter(
            f"unknown protocol {bad[0] if bad else text!r} (known: {', '.join(PROTOCOLS)}, all)"
        )
    return list(dict.fromkeys(names))


def format_table(rows: Sequence[ProbeRow], *, column: str = "PROTOCOL") -> str:
    """Server × protocol (or pool, by `column`): state, latency and what happened."""
    return admin.format_table(
        ("SERVER", column, "STATE", "LATENCY", "DETAIL"),
        [
            (
                r.server,
                r.protocol,
                r.state.value,
                f"{r.result.duration * 1000:.1f}ms",
                str(r.result) if not r.result.ok else r.result.detail,
            )
            for r in rows
        ],
    )


Hosts = Annotated[
    list[str],
    typer.Argument(
        metavar="CONFIG | HOST...",
        help="A config file (caslb.toml), or hosts: FQDN[=ADDR[:PORT]][,PROTOCOL=PORT...], "
        "e.g. cas1.lab.local=127.0.0.1:8443,imap=9933",
        show_default=False,
    ),
]
Protocols = Annotated[
    str | None,
    typer.Option(
        "--protocols",
        "-p",
        help=f"Comma-separated protocols, or 'all' (default: {_DEFAULT_PROTOCOLS}).",
        show_default=False,
    ),
]
Ca = Annotated[
    Path | None,
    typer.Option("--ca", exists=True, dir_okay=False, help="Verify certificates against this CA."),
]
Insecure = Annotated[bool, typer.Option("--insecure", "-k", help="Do not verify certificates.")]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", min=0.001, help="Seconds per check (default: the catalog's)."),
]
Ports = Annotated[
    list[str] | None,
    typer.Option("--port", help="PROTOCOL=PORT (or https=PORT) for every host; repeatable."),
]
Starttls = Annotated[
    bool, typer.Option("--starttls", help="Mail over STARTTLS/STLS instead of implicit TLS.")
]
ExpectFqdn = Annotated[
    bool, typer.Option("--expect-fqdn", help="Require the FQDN in the healthcheck body.")
]


@app.command("probe")
def probe(
    hosts: Hosts,
    protocols: Protocols = None,
    ca: Ca = None,
    insecure: Insecure = False,
    timeout: Timeout = None,
    port: Ports = None,
    starttls: Starttls = False,
    expect_fqdn: ExpectFqdn = False,
) -> None:
    """Probe Exchange servers once and print a table; exit 1 if any check fails.

    \b
    Examples:
      caslb probe caslb.toml
      caslb probe cas1.lab.local=127.0.0.1:8443 --protocols owa,ews --ca ca.pem

    A config file runs every pool's check against its servers (a row per pool and
    server; exit 2 on a bad config); the options below apply to HOST arguments.
    """
    if len(hosts) == 1 and hosts[0].endswith(".toml") and not Path(hosts[0]).is_file():
        raise typer.BadParameter(f"config file {hosts[0]!r} does not exist", param_hint="CONFIG")
    if len(hosts) == 1 and Path(hosts[0]).is_file():
        given = {
            "--protocols": protocols is not None,
            "--ca": ca is not None,
            "--insecure": insecure,
            "--timeout": timeout is not None,
            "--port": bool(port),
            "--starttls": starttls,
            "--expect-fqdn": expect_fqdn,
        }
        if any(given.values()):
            names = ", ".join(name for name, on in given.items() if on)
            raise typer.BadParameter(f"{names} apply to HOST arguments, not a config file")
        _probe_config(Path(hosts[0]))
        return
    if ca is not None and insecure:
        raise typer.BadParameter("give --ca FILE or --insecure, not both")
    global_ports = dict(parse_port(p) for p in port or [])
    targets = [parse_host(h, global_ports) for h in hosts]
    specs = {
        name: _spec(name, ca, insecure, timeout, starttls, expect_fqdn)
        for name in parse_protocols(protocols or _DEFAULT_PROTOCOLS)
    }
    _report(run_or_exit(probe_round, targets, specs))


def _report(rows: Sequence[ProbeRow], column: str = "PROTOCOL") -> None:
    typer.echo(format_table(rows, column=column))
    if any(not r.result.ok for r in rows):
        raise typer.Exit(1)


def config_checks(config: Config) -> list[tuple[str, str, Target, CheckSpec]]:
    """(pool, server name, target, spec) for every checked pool's servers, in config order."""
    return [
        (
            pool.name,
            server.name,
            pool.check_target(server),
            check.spec,
        )
        for pool in config.pools.values()
        if (check := pool.check) is not None
        for server in pool.servers
    ]


async def probe_config(config: Config, *, check: Check = run_check) -> list[ProbeRow]:
    """One round of every pool's check; one row per (pool, server), each distinct check run once.

    Args:
        config: the validated config.
        check: the check coroutine (tests may wrap it).
    """
    planned = config_checks(config)
    # pools over the same servers with the same spec (e.g. two routes to one set) share a run
    jobs = list(dict.fromkeys((target, spec) for _, _, target, spec in planned))
    results = dict(zip(jobs, await run_checks(jobs, check=check), strict=True))
    return [
        ProbeRow(server, pool, target, results[target, spec])
        for pool, server, target, spec in planned
    ]


def _probe_config(path: Path) -> None:
    config = load_or_exit(path)
    unchecked = [name for name, pool in config.pools.items() if pool.check is None]
    if unchecked:
        typer.echo(f"no active check (not probed): pool {', '.join(unchecked)}", err=True)
    _report(run_or_exit(probe_config, config), column="POOL")


def _spec(
    name: str,
    ca: Path | None,
    insecure: bool,
    timeout: float | None,
    starttls: bool,
    expect_fqdn: bool,
) -> CheckSpec:
    proto = PROTOCOLS[name]
    overrides: dict[str, object] = {"verify": not insecure, "ca_file": str(ca) if ca else None}
    if timeout is not None:
        overrides["timeout"] = timeout
    if proto.vdir is not None:
        overrides["expect_fqdn"] = expect_fqdn
    elif starttls:
        overrides["starttls"] = True
    return CheckSpec.for_protocol(proto, **overrides)
