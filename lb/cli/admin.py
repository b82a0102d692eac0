"""`caslb status`, `caslb drain`, `caslb enable`, `caslb maint`: a running balancer's admin API.

These commands are thin HTTP clients (stdlib urllib) of `lb.admin`: they read
`GET /status` or send `POST /servers/<name>/<action>`, print the answer, and
exit 1 with a clear message when the balancer cannot be reached or refuses.
The actions take `--admin` once per node of an HA pair and act on every node, so that
the server's admin state is the same whichever node holds the VIP.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from lb.cli._app import app
from lb.cli._http import JsonApiError, JsonStatusError, fetch_json
from lb.ports import DEFAULT_ADMIN_PORT
from lb.statusgrid import ago, build_grid, grid_table

DEFAULT_ADMIN_URL = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
TIMEOUT_SECONDS = 5.0

AdminUrl = Annotated[
    str,
    typer.Option(
        "--admin", envvar="CASLB_ADMIN", help="Base URL of the balancer's admin API."
    ),
]
AdminUrls = Annotated[
    list[str] | None,
    typer.Option(
        "--admin", envvar="CASLB_ADMIN", show_default=DEFAULT_ADMIN_URL, metavar="URL",
        help="Base URL of the balancer's admin API; repeat it for every node of an HA pair.",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="CASLB_ADMIN_TOKEN", help="Bearer token, if the admin API has one."
    ),
]
Pool = Annotated[str | None, typer.Option("--pool", help="Act on this pool only.")]
Protocol = Annotated[
    str | None, typer.Option("--protocol", help="Act on the pool(s) of this protocol only.")
]
Server = Annotated[str, typer.Argument(help="Server name, as in the config.")]


class AdminApiError(Exception):
    """The admin API could not be reached or refused the request."""


def call_admin(
    base_url: str, method: str, path: str, *, token: str | None = None
) -> dict[str, Any]:
    """One request to the admin API; returns the decoded JSON answer.

    Raises:
        AdminApiError: the API is unreachable, answered an error, or not JSON.
    """
    url = base_url.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise AdminApiError(f"bad admin URL {base_url!r}: want http://host:port")
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if method == "POST":
        # The admin API refuses state changes without it (no browser form can send it).
        request.add_header("X-Caslb-Request", "1")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        return fetch_json(request, peer=f"the admin API at {base_url}", timeout=TIMEOUT_SECONDS)
    except JsonStatusError as exc:
        raise AdminApiError(f"{exc.status} {exc.detail or '(no detail)'}") from None
    except JsonApiError as exc:
        raise AdminApiError(str(exc)) from None


def action_path(server: str, action: str, pool: str | None, protocol: str | None) -> str:
    """The admin API path of an action, e.g. `/servers/cas1/drain?pool=owa`."""
    if pool and protocol:
        raise typer.BadParameter("give --pool or --protocol, not both")
    query = {k: v for k, v in (("pool", pool), ("protocol", protocol)) if v}
    suffix = f"?{urlencode(query)}" if query else ""
    return f"/servers/{quote(server, safe='')}/{action}{suffix}"


STATUS_COLUMNS = (
    "pool", "server", "state", "admin", "weight", "active", "total", "changed", "last check",
)


def status_rows(document: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per (pool, server) of a `GET /status` document."""
    rows: list[tuple[str, ...]] = []
    for pool_name, pool in document.get("pools", {}).items():
        pool_cell = f"{pool_name} (PANIC)" if pool.get("panic") else str(pool_name)
        rows.extend(server_row(pool_cell, s) for s in pool.get("servers", []))
    return rows


def server_row(pool: str, server: Mapping[str, Any]) -> tuple[str, ...]:
    """One table row for a server document of the admin API."""
    return (
        pool, str(server["name"]), str(server.get("label", server["state"])),
        str(server["admin"]), _weight(server), str(server["active"]), str(server["total"]),
        ago(server.get("seconds_since_change")), _last_check(server.get("last_check")),
    )


def _weight(server: Mapping[str, Any]) -> str:
    # The effective weight differs from the configured one only while slow start ramps.
    weight, effective = server.get("weight"), server.get("effective_weight", server.get("weight"))
    return str(weight) if effective == weight else f"{effective:g} of {weight}"


def _last_check(check: Mapping[str, Any] | None) -> str:
    if not check:
        return "-"
    text = f"{check['reason']} {check['duration'] * 1000:.1f}ms"
    return f"{text} {check['detail']}" if check.get("detail") else text


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


def fail(message: str) -> typer.Exit:
    typer.echo(f"caslb: {message}", err=True)
    return typer.Exit(1)


@app.command()
def status(
    admin: AdminUrl = DEFAULT_ADMIN_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Show the server × pool grid of states, then every pool's servers in detail.

    Example: caslb status --admin http://127.0.0.1:9090
    """
    try:
        document = call_admin(admin, "GET", "/status")
    except AdminApiError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(document, indent=1))
        return
    typer.echo(format_table(*grid_table(build_grid(document))))
    typer.echo()
    typer.echo(format_table(STATUS_COLUMNS, status_rows(document)))
    for name, fe in document.get("frontends", {}).items():
        typer.echo(f"frontend {name}: {fe['current_connections']} current connections")


def nodes(admins: Sequence[str] | None) -> list[str]:
    """The admin URLs an action goes to: those given, else the local default."""
    return list(admins or [DEFAULT_ADMIN_URL])


def act(action: str, server: str, pool: str | None, protocol: str | None,
        admins: Sequence[str], token: str | None, *, quiet: bool = False) -> None:
    """Send ACTION for SERVER to every node in `admins`; print what changed unless `quiet`.

    A node that fails does not stop the others: those that answer all carry the action,
    and the exit names the ones to repeat it on.
    """
    path = action_path(server, action, pool, protocol)
    failed = []
    for admin in admins:
        try:
            result = call_admin(admin, "POST", path, token=token)
        except AdminApiError as exc:
            failed.append(str(exc) if len(admins) == 1 else f"{admin}: {exc}")
            continue
        if not quiet:
            _print_action(result, server, admin if len(admins) > 1 else "")
    if len(failed) == 1 and len(admins) == 1:
        raise fail(failed[0])
    if failed:
        for line in failed:
            typer.echo(f"caslb: {line}", err=True)
        raise fail(f"{action} {server}: done on {len(admins) - len(failed)} of "
                   f"{len(admins)} node(s); repeat it once the others answer")


def _print_action(result: Mapping[str, Any], server: str, node: str) -> None:
    pools = result.get("pools", {})
    rows = [server_row(name, s) for name, s in pools.items()]
    where = f"{node}: " if node else ""
    typer.echo(f"{where}{result.get('server', server)}: admin {result.get('admin', '?')}"
               f" in {len(pools)} pool(s)")
    typer.echo(format_table(STATUS_COLUMNS, rows))


@app.command()
def drain(
    server: Server,
    pool: Pool = None,
    protocol: Protocol = None,
    admin: AdminUrls = None,
    token: Token = None,
) -> None:
    """Stop sending new traffic to SERVER; existing connections get the drain grace.

    Example: caslb drain cas1 --admin http://lb1:9090 --admin http://lb2:9090
    """
    act("drain", server, pool, protocol, nodes(admin), token)


@app.command()
def enable(
    server: Server,
    pool: Pool = None,
    protocol: Protocol = None,
    admin: AdminUrls = None,
    token: Token = None,
) -> None:
    """Put SERVER back in service (admin READY; health checks still decide).

    Example: caslb enable cas1
    """
    act("enable", server, pool, protocol, nodes(admin), token)


@app.command()
def maint(
    server: Server,
    pool: Pool = None,
    protocol: Protocol = None,
    admin: AdminUrls = None,
    token: Token = None,
) -> None:
    """Take SERVER out of service for maintenance.

    Example: caslb maint cas1 --pool owa
    """
    act("maint", server, pool, protocol, nodes(admin), token)
