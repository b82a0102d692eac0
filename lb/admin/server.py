"""The admin API: metrics, status, status page and drain/enable/maint actions.

Theory of operation:

`serve_admin` runs an accept loop (`trio.serve_listeners`) over injected
listeners, or over loopback TCP listeners it opens itself. Each connection is
an h11 server loop: read one request head (under a timeout, with a small size
limit), discard a small body, answer, and go round again while keep-alive
allows, up to a bounded number of requests.

The answer comes from `respond`, a synchronous function of the request and
an `AdminContext` that returns a `Reply`; it does no I/O, so every route is
easy to reason about. The only state it changes is a pool's admin state, via
`Pool.set_admin`.

Safety rules:

* The API binds to loopback unless a token is configured (`check_bind`).
  With a token, every POST needs `Authorization: Bearer <token>`; reads stay
  open, like a Prometheus endpoint.
* A peer that sends garbage gets a 400 and a close; a peer that vanishes or
  stalls is dropped. Nothing a peer sends can end the accept loop.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lb.config_model import is_loopback
from lb.metrics import Metrics
from lb.pool import Member, Pool
from lb.statuspage import member_document, render_html, status_document
from probes.checks import CheckResult
from probes.state import AdminState

log = logging.getLogger("caslb.admin")

ACTIONS: dict[str, AdminState] = {
    "drain": AdminState.DRAIN,
    "enable": AdminState.READY,
    "maint": AdminState.MAINT,
}
"""URL action → the admin state it sets."""

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 16 * 1024
READ_TIMEOUT = 10.0
MAX_REQUESTS_PER_CONNECTION = 100
JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


# Errors that mean the peer vanished or broke the exchange: drop it quietly.
# (LocalProtocolError arises when h11 refuses to send after the peer's EOF.)
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError)


AdminHook = Callable[[str, str, AdminState], None]
"""`(pool, server, state)`: told of every admin change made through the API."""


class AdminBindError(ValueError):
    """The admin API was asked to listen beyond loopback without a token."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, data: Any) -> Reply:
        """A JSON reply."""
        return cls(status, JSON, json.dumps(data, indent=1).encode() + b"\n")

    @classmethod
    def error(cls, status: int, message: str, *headers: tuple[str, str]) -> Reply:
        """A JSON error reply: `{"error": message}`."""
        return cls(status, JSON, json.dumps({"error": message}).encode() + b"\n", headers)


@dataclass(frozen=True)
class AdminContext:
    """What the routes read and act on.

    Attributes:
        pools: the live pools by name (the app may update this mapping on reload).
        metrics: the metrics whose registry `GET /metrics` exposes, and
            whose last check results the status shows.
        token: when set, POSTs need `Authorization: Bearer <token>`.
        on_admin: called as `(pool, server, state)` after each admin change,
            so the app can log it or keep it across reloads.
        now: the clock passed to `Pool.set_admin`.
    """

    pools: Mapping[str, Pool]
    metrics: Metrics
    token: str | None = None
    on_admin: AdminHook | None = None
    now: Callable[[], float] = field(default=trio.current_time)

    def lookup(self, pool: str, server: str) -> CheckResult | None:
        """The last check result for `server` in `pool`, or None."""
        return self.metrics.last_result(server, pool)


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the routes look at."""

    method: str
    target: str
    headers: Mapping[str, str]


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback admin address unless a token protects it.

    Raises:
        AdminBindError: naming the host.
    """
    if not token and not is_loopback(host):
        raise AdminBindError(
            f"refusing to bind the admin API to {host!r} without a token "
            "(set admin.token or use 127.0.0.1)"
        )


# -- routes (pure apart from Pool.set_admin) ------------------------------------


def respond(request: Request, ctx: AdminContext) -> Reply:
    """Route one request to its reply."""
    if not request.target.startswith("/"):
        return Reply.error(400, f"bad request target {request.target!r}")
    parts = urlsplit(request.target)
    path = parts.path.rstrip("/") or "/"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if path in _READ_ROUTES:
        if request.method != "GET":
            return Reply.error(405, f"method {request.method} not allowed on {path}",
                               ("allow", "GET"))
        return _READ_ROUTES[path](ctx)
    segments = path.split("/")
    if len(segments) == 4 and segments[1] == "servers":
        if request.method != "POST":
            return Reply.error(405, f"method {request.method} not allowed on {path}",
                               ("allow", "POST"))
        if not _authorized(request, ctx.token):
            return Reply.error(401, "missing or wrong bearer token",
                               ("www-authenticate", 'Bearer realm="caslb"'))
        return _action(unquote(segments[2]), segments[3], query, ctx)
    return Reply.error(404, f"no such path {path!r}")


def _metrics(ctx: AdminContext) -> Reply:
    return Reply(200, CONTENT_TYPE_LATEST, generate_latest(ctx.metrics.registry))


def _status(ctx: AdminContext) -> Reply:
    return Reply.json(200, _document(ctx))


def _page(ctx: AdminContext) -> Reply:
    return Reply(200, HTML, render_html(_document(ctx)).encode())


def _document(ctx: AdminContext) -> dict[str, Any]:
    return status_document(
        ctx.pools, frontends=ctx.metrics.frontend_connections(), last_check=ctx.lookup
    )


_READ_ROUTES: dict[str, Callable[[AdminContext], Reply]] = {
    "/": _page,
    "/status": _status,
    "/metrics": _metrics,
}


def _authorized(request: Request, token: str | None) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def _action(
    server: str, action: str, query: Sequence[tuple[str, str]], ctx: AdminContext
) -> Reply:
    state = ACTIONS.get(action)
    if state is None:
        known = ", ".join(ACTIONS)
        return Reply.error(400, f"unknown action {action!r} (known: {known})")
    selected = _select_pools(server, query, ctx.pools)
    if isinstance(selected, Reply):
        return selected
    now = ctx.now()
    for pool in selected:
        pool.set_admin(server, state, now)
        log.info("admin API: server %s in pool %s set to %s", server, pool.name, state.name)
        if ctx.on_admin is not None:
            ctx.on_admin(pool.name, server, state)
    return Reply.json(200, {
        "server": server,
        "admin": state.name,
        "pools": {
            pool.name: member_document(pool.name, pool.member(server), ctx.lookup)
            for pool in selected
        },
    })


def _select_pools(
    server: str, query: Sequence[tuple[str, str]], pools: Mapping[str, Pool]
) -> list[Pool] | Reply:
    """The pools an action applies to, or the error reply explaining why none."""
    params = dict(query)
    unknown = sorted(set(params) - {"pool", "protocol"})
    if unknown:
        return Reply.error(400, f"unknown query parameter {unknown[0]!r} (known: pool, protocol)")
    if "pool" in params and "protocol" in params:
        return Reply.error(400, "give pool or protocol, not both")
    if "pool" in params:
        pool = pools.get(params["pool"])
        if pool is None:
            return Reply.error(404, f"unknown pool {params['pool']!r}")
        candidates = [pool]
    elif "protocol" in params:
        candidates = [p for p in pools.values() if _serves(p, params["protocol"])]
        if not candidates:
            return Reply.error(404, f"no pool serves protocol {params['protocol']!r}")
    else:
        candidates = list(pools.values())
    chosen = [p for p in candidates if _member(p, server) is not None]
    if not chosen:
        where = "" if len(candidates) == len(pools) else " in the selected pools"
        return Reply.error(404, f"unknown server {server!r}{where}")
    return chosen


def _serves(pool: Pool, protocol: str) -> bool:
    # Pools made by the Exchange shorthand carry their protocol; a generic pool
    # without one is matched by name.
    return (pool.config.protocol or pool.name).lower() == protocol.lower()


def _member(pool: Pool, server: str) -> Member | None:
    return next((m for m in pool.members if m.name == server), None)


# -- HTTP over trio streams -------------------------------------------------------


async def serve_admin(
    listen: Sequence[trio.abc.Listener[Any]] | tuple[str, int],
    *,
    pools: Mapping[str, Pool],
    metrics: Metrics,
    token: str | None = None,
    on_admin: AdminHook | None = None,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the admin API until cancelled.

    Args:
        listen: listeners to accept on, or `(host, port)` to open TCP listeners
            (port 0 picks a free port; read it from the started value).
        pools: the live pools by name.
        metrics: the metrics to expose and read frontend counts from.
        token: bearer token POSTs must present; required to bind beyond loopback.
        on_admin: `(pool, server, state)` hook run after each admin change.
        task_status: started with the list of listeners.

    Raises:
        AdminBindError: a non-loopback address without a token.
    """
    if isinstance(listen, tuple):
        host, port = listen
        check_bind(host, token)
        listeners: list[trio.abc.Listener[Any]] = list(
            await trio.open_tcp_listeners(port, host=host)
        )
    else:
        listeners = list(listen)
        for listener in listeners:
            _check_listener(listener, token)
    ctx = AdminContext(
        pools=pools, metrics=metrics, token=token, on_admin=on_admin
    )

    async def handler(stream: trio.abc.Stream) -> None:
        await serve_connection(stream, ctx)

    await trio.serve_listeners(handler, listeners, task_status=task_status)


def _check_listener(listener: trio.abc.Listener[Any], token: str | None) -> None:
    if isinstance(listener, trio.SocketListener):
        check_bind(str(listener.socket.getsockname()[0]), token)


async def serve_connection(stream: trio.abc.Stream, ctx: AdminContext) -> None:
    """Answer requests on one connection, then close it; never raises for peer faults."""
    async with stream:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            await _request_loop(stream, conn, ctx)
        except h11.RemoteProtocolError as exc:
            await _reject(stream, conn, exc)
        except _PEER_GONE:
            pass  # the peer went away mid-exchange: nothing left to tell it


async def _request_loop(stream: trio.abc.Stream, conn: h11.Connection, ctx: AdminContext) -> None:
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        with trio.move_on_after(READ_TIMEOUT):
            request = await _read_request(stream, conn)
        if request is None:  # EOF, or the read timed out
            return
        reply = _safe_respond(request, ctx)
        await _send(stream, conn, reply, with_body=request.method != "HEAD")
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


def _safe_respond(request: Request, ctx: AdminContext) -> Reply:
    try:
        return respond(request, ctx)
    except Exception as exc:  # a bug in a route must not end the accept loop
        log.exception("admin request %s %s failed", request.method, request.target)
        return Reply.error(500, f"internal error: {type(exc).__name__}: {exc}")


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> Request | None:
    head: h11.Request | None = None
    received = body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(MAX_HEAD_BYTES)
            received += len(data)
            # h11's own limit only bounds what stays unparsed, so a head that
            # arrives whole in two reads could exceed it; bound it here too.
            if head is None and received > MAX_HEAD_BYTES:
                raise h11.RemoteProtocolError("request head too large", 431)
            conn.receive_data(bytes(data))  # b"" is EOF, which h11 turns into an event
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_BODY_BYTES:
                raise h11.RemoteProtocolError("request body too large", 413)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None  # h11 emits EndOfMessage only after a Request
            return _request_of(head)
        else:  # ConnectionClosed or PAUSED: no further request on this connection
            return None


def _request_of(head: h11.Request) -> Request:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    return Request(head.method.decode("ascii"), head.target.decode("latin-1"), headers)


async def _reject(
    stream: trio.abc.Stream, conn: h11.Connection, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
    with contextlib.suppress(*_PEER_GONE):
        await _send(stream, conn, Reply.error(status, f"bad request: {exc}"), close=True)


async def _send(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    reply: Reply,
    *,
    close: bool = False,
    with_body: bool = True,
) -> None:
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        ("cache-control", "no-store"),
        *reply.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    # One write per response: head and body in a single send avoids a
    # Nagle/delayed-ACK stall on small replies.
    wire = b"".join((
        conn.send(h11.Response(status_code=reply.status, headers=headers)) or b"",
        (conn.send(h11.Data(data=reply.body)) or b"") if with_body else b"",
        conn.send(h11.EndOfMessage()) or b"",
    ))
    await stream.send_all(wire)
