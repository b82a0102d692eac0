"""`caslb farm`: run the simulated CAS farm, or drive a running one.

`caslb farm` alone runs casfarm in the foreground on the demo addresses
(cas1..cas3 on 127.0.0.11-13, ports in `casfarm.DEMO_PORTS`, control API on
127.0.0.1:8099) and prints how to reach and break it. The subcommands
(lb/cli/farmcontrol.py) are thin clients of that farm's JSON control API.
`caslb demo` runs `caslb farm --child`: no banner, one line `ready CONTROL_URL` once every server
listens, and an exit when stdin ends, so the farm never outlives the demo.
"""

from __future__ import annotations

import enum
import os
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import casfarm
import trio
import typer
from casfarm.ewsxml import SAMPLE_REQUEST_FILE

from lb.cli._startup import run_or_exit, taken_addresses
from lb.cli.farmcontrol import farm_app  # importing it registers the subcommands

# What `caslb farm --child` prints, then its control URL, once every server listens.
READY = "ready"


class TlsMax(enum.StrEnum):
    """The newest TLS version the farm's servers speak (--tls-max)."""

    TLS12 = "1.2"
    TLS13 = "1.3"

    @property
    def version(self) -> ssl.TLSVersion:
        """The stdlib's name for it."""
        return ssl.TLSVersion[f"TLSv{self.value.replace('.', '_')}"]
DEFAULT_CERT_DIR = Path(tempfile.gettempdir()) / "casfarm-certs"
LAB_USER_HINT = ", ".join(
    f"{casfarm.LAB_DOMAIN}\\{name} / {password}" for name, password in casfarm.LAB_USERS.items()
)


def banner(farm: casfarm.Farm) -> str:
    """What `caslb farm` prints once the farm listens."""
    lines = ["casfarm: a simulated Exchange CAS farm", ""]
    kinds = casfarm.PORT_KINDS
    lines.append(f"{'server':<7}{'fqdn':<18}{'address':<13}" + "".join(f"{k:<11}" for k in kinds))
    for s in farm.servers:
        ports = "".join(f"{s.ports[k]:<11}" for k in kinds)
        lines.append(f"{s.name:<7}{s.fqdn:<18}{s.host:<13}{ports}")
    first = farm.servers[0]
    ca, https = farm.ca_path, first.ports["https"]
    control = farm.control_url or "(disabled)"
    lines += [
        "",
        f"namespace   {farm.namespace} (in every certificate, with each FQDN and address)",
        f"CA          {ca}",
        f"control API {control}  (GET /api/state; POST /api/set, /api/inject, /api/clear)",
        f"auth        {_describe_auth(farm)}",
        "",
        "Try:",
        f"  curl --cacert {ca} --resolve {first.fqdn}:{https}:{first.host} "
        f"https://{first.fqdn}:{https}/owa/healthcheck.htm",
        f"  curl --ntlm -u '{farm.auth.logins()[0] if farm.auth else 'none:'}' --cacert {ca} "
        f"--resolve "
        f"{first.fqdn}:{https}:{first.host} -H 'Content-Type: text/xml' "
        f"-d @{ca.parent / SAMPLE_REQUEST_FILE} https://{first.fqdn}:{https}/EWS/Exchange.asmx",
        f"  openssl s_client -connect {first.host}:{first.ports['imaps']} "
        f"-servername {first.fqdn} -CAfile {ca}",
        f"  openssl s_client -connect {first.host}:{first.ports['smtp']} -starttls smtp "
        f"-CAfile {ca}",
        f"  curl {control}/api/state",
        "  caslb farm set cas1 EwsProxy Inactive --requester HealthApi",
        "  caslb farm set cas2 ServerWideOffline Inactive",
        "  caslb farm inject cas2 crash            # also: blackhole, hang, slow --seconds 3, ...",
        "  caslb farm inject cas3 app_pool_stopped --vdir ews",
        "  caslb farm clear cas2 [FAULT]",
        "  caslb farm status",
        "",
        "Ctrl-C stops the farm.",
    ]
    return "\n".join(lines)


def _describe_auth(farm: casfarm.Farm) -> str:
    if farm.auth is None:
        return "off: every request is served anonymously"
    users = ", ".join(login.replace(":", " / ", 1) for login in farm.auth.logins())
    return f"NTLM/Negotiate, Basic on ActiveSync, forms on OWA/ECP; users {users}"


async def _run_farm(
    servers: int,
    ephemeral: bool,
    distinct_addresses: bool,
    cert_dir: Path,
    heartbeat: float,
    pending_period: float,
    health_cache_delay: float,
    managed_availability: bool,
    run_for: float | None,
    child: bool,
    users: dict[str, str] | None,
    idle_close: float,
    tls_max: ssl.TLSVersion,
) -> None:
    async with casfarm.running(
        servers=servers,
        distinct_addresses=distinct_addresses,
        base_ports=None if ephemeral else casfarm.DEMO_PORTS,
        control_port=0 if ephemeral else casfarm.DEMO_CONTROL_PORT,
        cert_dir=cert_dir,
        heartbeat=heartbeat,
        pending_period=pending_period,
        health_cache_delay=health_cache_delay,
        auth=users is not None,
        users=users,
        responder=casfarm.LAB_POLICY if managed_availability else None,
        idle_close=idle_close,
        tls_max=tls_max,
    ) as farm:
        if child:
            typer.echo(f"{READY} {farm.control_url}")
            sys.stdout.flush()
            await _until_stdin_ends()
            return
        typer.echo(banner(farm))
        if run_for is None:
            await trio.sleep_forever()
        await trio.sleep(run_for)


async def _until_stdin_ends() -> None:
    # The parent holds the other end: when it exits, however it exits, so does the farm.
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while await stdin.receive_some():
            pass


@farm_app.callback()
def farm(
    ctx: typer.Context,
    servers: Annotated[int, typer.Option(help="How many servers (cas1..casN).")] = 3,
    ephemeral: Annotated[
        bool, typer.Option(help="Bind port 0 everywhere (control API included).")
    ] = False,
    distinct_addresses: Annotated[
        bool,
        typer.Option(
            "--distinct-addresses/--shared-address",
            help="Each server on 127.0.0.11, .12, ...; or all on 127.0.0.1, ports base + index.",
        ),
    ] = True,
    cert_dir: Annotated[
        Path, typer.Option(help="Where to write ca.pem and the server certificates.")
    ] = DEFAULT_CERT_DIR,
    heartbeat: Annotated[float, typer.Option(help="Seconds an ActiveSync Ping is held.")] = 60.0,
    pending_period: Annotated[
        float, typer.Option(help="Seconds between MAPI PENDING keep-alives.")
    ] = 15.0,
    health_cache_delay: Annotated[
        float, typer.Option(min=0, max=15,
                            help="Seconds before a component change shows (Exchange: <= 15).")
    ] = 2.0,
    managed_availability: Annotated[
        bool, typer.Option(help="Take a protocol whose local probes keep failing out of service "
                                "(its component Inactive, requester HealthApi) and back.")
    ] = True,
    auth: Annotated[
        bool,
        typer.Option(
            help="Authenticate as Exchange does (NTLM/Negotiate, Basic on ActiveSync, OWA forms)."
        ),
    ] = True,
    user: Annotated[
        list[str] | None,
        typer.Option(
            help=f"A lab user as NAME:PASSWORD, repeatable (default: {LAB_USER_HINT}).",
        ),
    ] = None,
    idle_close: Annotated[float, typer.Option(
        min=0.001, help="Seconds an idle HTTPS keep-alive lasts (IIS connectionTimeout).")] = 120.0,
    tls_max: Annotated[
        TlsMax, typer.Option(help="The newest TLS version the servers speak: 1.2 as "
                                  "Exchange on Windows Server 2016/2019 (no TLS 1.3 there).")
    ] = TlsMax.TLS13,
    run_for: Annotated[
        float | None, typer.Option(hidden=True, help="Stop after this many seconds.")
    ] = None,
    child: Annotated[
        bool,
        typer.Option(
            "--child", hidden=True,
            help=f"For caslb demo: print '{READY} CONTROL_URL' once listening, "
                 "no banner; stop when stdin ends.",
        ),
    ] = False,
) -> None:
    """Run the farm in the foreground: cas1..cas3 on 127.0.0.11-13, control on :8099.

    Example: caslb farm   (then, in another shell: caslb farm inject cas2 crash)
    """
    if ctx.invoked_subcommand is not None:
        return
    users = parse_users(user or []) if auth else None
    if not ephemeral:
        _refuse_taken(servers, distinct_addresses)
    try:
        run_or_exit(_run_farm, servers, ephemeral, distinct_addresses, cert_dir, heartbeat,
                    pending_period, health_cache_delay, managed_availability, run_for, child,
                    users, idle_close, tls_max.version)
    except KeyboardInterrupt:
        typer.echo("casfarm stopped.")


def parse_users(specs: list[str]) -> dict[str, str]:
    """--user NAME:PASSWORD values as a dict (none given: the lab default, casfarm.LAB_USERS).

    Exits 2 naming the option when one is malformed.
    """
    users: dict[str, str] = {}
    for spec in specs:
        name, sep, password = spec.partition(":")
        if not sep or not name or not password or any(c in name for c in "\\@"):
            typer.echo(f"error: --user: want NAME:PASSWORD with a bare name, got {spec!r}",
                       err=True)
            raise typer.Exit(2)
        users[name] = password
    return users or dict(casfarm.LAB_USERS)


def _refuse_taken(servers: int, distinct: bool) -> None:
    wanted = [(host, port, f"{name} {kind}")
              for name, host, kind, port in farm_addresses(servers, distinct=distinct)]
    wanted.append(("127.0.0.1", casfarm.DEMO_CONTROL_PORT, "control API"))
    taken = taken_addresses(wanted)
    if taken:
        typer.echo(f"error: cannot start the farm, addresses in use: {'; '.join(taken)}",
                   err=True)
        raise typer.Exit(1)


def farm_addresses(servers: int, *, distinct: bool) -> list[tuple[str, str, str, int]]:
    """(server, host, kind, port) casfarm binds on its demo ports (casfarm.running's layout)."""
    return [
        (f"cas{i + 1}", f"127.0.0.{11 + i}" if distinct else "127.0.0.1", kind,
         port if distinct else port + i)
        for i in range(servers)
        for kind, port in casfarm.DEMO_PORTS.items()
    ]


