"""The farm's control API: small JSON over plain HTTP on a loopback port.

Routes (every answer is JSON; errors are `{"error": "..."}` with 400 or 404):

    GET  /metrics                   counts and faults in Prometheus text (casfarm.metrics)
    GET  /api/state                 the whole farm (servers, ports, states, faults, counts)
    GET  /api/servers/<name>        one server
    POST /api/set     {"server", "component", "state", "requester"?}
    POST /api/inject  {"server", "fault", "vdir"?, "seconds"?, "mode"?, "status"?}
    POST /api/clear   {"server", "fault"?, "vdir"?}
    POST /api/reset-counts
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry

from casfarm.http import HttpExchange, serve_http
from casfarm.metrics import CONTENT_TYPE, exposition, farm_registry

if TYPE_CHECKING:
    from casfarm.farm import Farm

_JSON = ("Content-Type", "application/json")
_MAX_BODY = 64 * 1024


class _BadRequest(Exception):
    pass


def _field(body: dict[str, Any], name: str, kind: type, required: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise _BadRequest(f"missing field {name!r}")
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadRequest(f"field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _set(farm: Farm, body: dict[str, Any]) -> dict[str, object]:
    server = _field(body, "server", str, True)
    requester = _field(body, "requester", str) or "Maintenance"
    farm.set_component(
        server, _field(body, "component", str, True), _field(body, "state", str, True), requester
    )
    return {"ok": True, "server": farm.describe_server(server)}


def _inject(farm: Farm, body: dict[str, Any]) -> dict[str, object]:
    server = _field(body, "server", str, True)
    farm.inject(
        server,
        _field(body, "fault", str, True),
        vdir=_field(body, "vdir", str),
        seconds=_field(body, "seconds", float),
        mode=_field(body, "mode", str),
        status=_field(body, "status", int),
    )
    return {"ok": True, "server": farm.describe_server(server)}


def _clear(farm: Farm, body: dict[str, Any]) -> dict[str, object]:
    server = _field(body, "server", str, True)
    farm.clear(server, _field(body, "fault", str), vdir=_field(body, "vdir", str))
    return {"ok": True, "server": farm.describe_server(server)}


def _maintenance(farm: Farm, body: dict[str, Any]) -> dict[str, object]:
    server = _field(body, "server", str, True)
    action = _field(body, "action", str, True)
    if action not in ("start", "end"):
        raise _BadRequest(f"field 'action' must be 'start' or 'end', got {action!r}")
    (farm.start_maintenance if action == "start" else farm.end_maintenance)(server)
    return {"ok": True, "server": farm.describe_server(server)}


def _reset_counts(farm: Farm, body: dict[str, Any]) -> dict[str, object]:
    farm.reset_counts()
    return {"ok": True}


_ACTIONS: dict[str, Callable[[Farm, dict[str, Any]], dict[str, object]]] = {
    "/api/set": _set,
    "/api/inject": _inject,
    "/api/clear": _clear,
    "/api/maintenance": _maintenance,
    "/api/reset-counts": _reset_counts,
}


def _route(farm: Farm, method: str, path: str, raw: bytes) -> tuple[int, object]:
    if method == "GET" and path in ("/", "/api/state"):
        return 200, farm.describe()
    if method == "GET" and path.startswith("/api/servers/"):
        return 200, farm.describe_server(path.removeprefix("/api/servers/"))
    action = _ACTIONS.get(path)
    if action is None:
        return 404, {"error": f"no such route: {method} {path}"}
    if method != "POST":
        return 405, {"error": f"{path} takes POST, not {method}"}
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    return 200, action(farm, body)


async def _answer(farm: Farm, registry: CollectorRegistry, ex: HttpExchange) -> None:
    raw = await ex.read_body(keep=_MAX_BODY)
    path = ex.target.split("?", 1)[0]
    if ex.method == "GET" and path == "/metrics":
        await ex.respond(200, exposition(registry), [("Content-Type", CONTENT_TYPE)], app=False)
        return
    try:
        status, payload = _route(farm, ex.method, path, raw)
    except KeyError as exc:
        status, payload = 404, {"error": str(exc.args[0]) if exc.args else "not found"}
    except (_BadRequest, ValueError, OSError) as exc:
        status, payload = 400, {"error": str(exc)}
    body = json.dumps(payload, indent=1).encode() + b"\n"
    await ex.respond(status, body, [_JSON], app=False)


async def _serve_one(farm: Farm, registry: CollectorRegistry, stream: trio.SocketStream) -> None:
    # A client that goes away mid-answer ends its own connection only.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await serve_http(stream, partial(_answer, farm, registry), list)


async def serve_control(
    farm: Farm,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API on (host, port); report its base URL when listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(f"http://{host}:{bound}")
    await trio.serve_listeners(partial(_serve_one, farm, farm_registry(farm)), listeners)
