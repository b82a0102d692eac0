"""`caslb farm set|maintenance|inject|clear|status`: thin clients of a running farm.

Each is one call to casfarm's JSON control API (stdlib urllib, no trio), so a
command against a farm elsewhere on loopback starts fast. `caslb farm` itself
(lb/cli/farm.py) is the group's callback and runs the farm.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Annotated, Any

import casfarm
import typer

from lb.cli._app import app
from lb.cli._http import JsonApiError, JsonStatusError, fetch_json

DEFAULT_CONTROL_URL = f"http://127.0.0.1:{casfarm.DEMO_CONTROL_PORT}"
TIMEOUT_SECONDS = 5.0
farm_app = typer.Typer(
    help="Run the simulated Exchange CAS farm, or set states and inject faults in a running one.",
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(farm_app, name="farm")

ControlUrl = Annotated[
    str,
    typer.Option("--control", envvar="CASFARM_CONTROL", help="Base URL of the farm's control API."),
]
Server = Annotated[str, typer.Argument(help="Server name, e.g. cas1.")]


class ControlApiError(Exception):
    """The farm's control API could not be reached or refused the request."""


def call_control(base_url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET `path` (or POST `payload` as JSON) on the control API; return its JSON.

    Raises:
        ControlApiError: unreachable, an error answer, or not JSON.
    """
    if not base_url.startswith("http://"):
        raise ControlApiError(f"bad control URL {base_url!r}: want http://host:port")
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method="GET")
    if data is not None:
        request.method = "POST"
        request.add_header("Content-Type", "application/json")
    try:
        return fetch_json(request, peer=f"the farm at {base_url}", timeout=TIMEOUT_SECONDS)
    except JsonStatusError as exc:
        raise ControlApiError(exc.detail or f"HTTP {exc.status}") from None
    except JsonApiError as exc:
        raise ControlApiError(str(exc)) from None


def _call_or_exit(
    base_url: str, path: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    try:
        return call_control(base_url, path, payload)
    except ControlApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def describe_server(server: dict[str, Any]) -> str:
    """One line per server: name, address, unusual component states, faults, counts."""
    off = [
        f"{name}={info['state']}"
        for name, info in server["components"].items()
        if info["state"] != "Active"
    ]
    faults = [
        fault["fault"] + (f"({fault['vdir']})" if "vdir" in fault else "")
        for fault in server["faults"]
    ]
    counts = server["counts"]
    return (
        f"{server['name']:<6} {server['host']:<12} https {server['ports']['https']:<6}"
        f" components: {', '.join(off) or 'all Active'}"
        f" | faults: {', '.join(faults) or 'none'}"
        f" | requests {counts['total_requests']},"
        f" health checks {sum(counts['healthchecks'].values())}"
    )


@farm_app.command("set")
def set_component(
    server: Server,
    component: Annotated[str, typer.Argument(help="e.g. EwsProxy, ServerWideOffline.")],
    state: Annotated[str, typer.Argument(help="Active, Inactive or Draining.")],
    requester: Annotated[
        str, typer.Option(help="HealthApi, Maintenance, Sidelined, Functional or Deployment.")
    ] = "Maintenance",
    control: ControlUrl = DEFAULT_CONTROL_URL,
) -> None:
    """Set-ServerComponentState on a farm server.

    Example: caslb farm set cas1 EwsProxy Inactive --requester HealthApi
    """
    payload = {"server": server, "component": component, "state": state, "requester": requester}
    answer = _call_or_exit(control, "/api/set", payload)
    typer.echo(describe_server(answer["server"]))


@farm_app.command()
def maintenance(
    server: Server,
    action: Annotated[str, typer.Argument(help="start or end.")],
    control: ControlUrl = DEFAULT_CONTROL_URL,
) -> None:
    """Put a farm server into maintenance, or take it out, in Microsoft's order.

    start: HubTransport Draining, then ServerWideOffline Inactive (requester
    Maintenance); end: the same reversed. Example: caslb farm maintenance cas1 start
    """
    answer = _call_or_exit(control, "/api/maintenance", {"server": server, "action": action})
    typer.echo(describe_server(answer["server"]))


@farm_app.command()
def inject(
    server: Server,
    fault: Annotated[str, typer.Argument(help=", ".join(k.value for k in casfarm.FaultKind))],
    vdir: Annotated[str | None, typer.Option(help="For app_pool_stopped and errors.")] = None,
    seconds: Annotated[
        float | None, typer.Option(help="slow: added latency; flap: half-period.")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="bad_cert: wrong_name or expired.")] = None,
    status: Annotated[int | None, typer.Option(help="errors: the 5xx to answer.")] = None,
    control: ControlUrl = DEFAULT_CONTROL_URL,
) -> None:
    """Inject a fault into a farm server.

    Example: caslb farm inject cas2 app_pool_stopped --vdir ews
    """
    payload: dict[str, Any] = {"server": server, "fault": fault}
    for key, value in (("vdir", vdir), ("seconds", seconds), ("mode", mode), ("status", status)):
        if value is not None:
            payload[key] = value
    answer = _call_or_exit(control, "/api/inject", payload)
    typer.echo(describe_server(answer["server"]))


@farm_app.command()
def clear(
    server: Server,
    fault: Annotated[str | None, typer.Argument(help="The fault to clear (default: all).")] = None,
    vdir: Annotated[str | None, typer.Option(help="Clear only this vdir's fault.")] = None,
    control: ControlUrl = DEFAULT_CONTROL_URL,
) -> None:
    """Clear one fault, or every fault, of a farm server.

    Example: caslb farm clear cas2 crash
    """
    payload: dict[str, Any] = {"server": server}
    if fault is not None:
        payload["fault"] = fault
    if vdir is not None:
        payload["vdir"] = vdir
    answer = _call_or_exit(control, "/api/clear", payload)
    typer.echo(describe_server(answer["server"]))


@farm_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON state.")] = False,
    control: ControlUrl = DEFAULT_CONTROL_URL,
) -> None:
    """Show a running farm: servers, component states, faults and counts.

    Example: caslb farm status --control http://127.0.0.1:8099
    """
    state = _call_or_exit(control, "/api/state")
    if as_json:
        typer.echo(json.dumps(state, indent=1))
        return
    typer.echo(f"namespace {state['namespace']}  CA {state['ca_path']}")
    for server in state["servers"]:
        typer.echo(describe_server(server))
