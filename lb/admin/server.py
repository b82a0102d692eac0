"""The admin API's HTTP server over trio streams.

Theory of operation:

`serve_admin` runs the accept policy of lb/listeners.py over injected
listeners, or over loopback TCP listeners it opens itself. It never waits on
the fd reserve (the reserve is kept for it and the probes), but it backs off,
logging once per interval, when accept itself lacks fds or buffers. Each connection is
an h11 server loop: read one request (head and a small body, under one
deadline), answer it with `routes.respond`, and go round again while
keep-alive allows, up to a bounded number of requests.

Each connection is its own failure boundary. A peer that sends garbage gets
a 400 and a close; one that vanishes is dropped; one that stalls past
`READ_TIMEOUT` while sending a request, or while we send it an answer, is
closed. Anything else that goes wrong (a bug) is logged in one line (the
traceback only at DEBUG), reported to `on_internal_error`, and ends that
connection alone: nothing a peer sends, and no bug in a route, ends the
accept loop, and with it the balancer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import h11
import trio

from lb.admin.guard import listener_hosts
from lb.admin.messages import Reply, Request
from lb.admin.routes import AdminContext, AdminHook, ReloadHook, respond
from lb.boundary import log_internal_error
from lb.config import is_loopback
from lb.listeners import UNGUARDED, AcceptGuard, open_listeners, serve_listeners
from lb.metrics import Metrics
from lb.metrics.collectors import LastCheckLookup, no_check_results
from lb.pool import Pool
from lb.statuspage import ProgressLookup, no_progress

log = logging.getLogger("caslb.admin")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 16 * 1024
READ_TIMEOUT = 10.0
"""Seconds a peer has to send a whole request, and to take a whole answer."""
MAX_REQUESTS_PER_CONNECTION = 100
WHERE = "admin"
"""What `on_internal_error` is told: the unit of work that failed."""

InternalErrorHook = Callable[[str], None]
"""`(where)`: told of every unexpected error a failure boundary caught."""


# Errors that mean the peer vanished or broke the exchange: drop it quietly.
# (LocalProtocolError arises when h11 refuses to send after the peer's EOF.)
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError)


class AdminBindError(ValueError):
    """The admin API was asked to listen beyond loopback without a token."""


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


def _ignore(where: str) -> None:
    pass


async def serve_admin(
    listen: Sequence[trio.abc.Listener[Any]] | tuple[str, int],
    *,
    pools: Mapping[str, Pool],
    metrics: Metrics,
    last_check: LastCheckLookup = no_check_results,
    check_progress: ProgressLookup = no_progress,
    token: str | None = None,
    on_admin: AdminHook | None = None,
    on_reload: ReloadHook | None = None,
    hosts: Sequence[str] = (),
    on_internal_error: InternalErrorHook = _ignore,
    guard: AcceptGuard = UNGUARDED,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the admin API until cancelled.

    Args:
        listen: listeners to accept on, or `(host, port)` to open TCP listeners
            (port 0 picks a free port; read it from the started value).
        pools: the live pools by name.
        metrics: the metrics to expose and read frontend counts from.
        last_check: `(pool, server)` → the last check result, from its owner
            (lb.health.HealthWiring.last_result); none by default.
        check_progress: `(pool, server)` → the probe's health counter, from its
            owner (lb.health.HealthWiring.check_progress); none by default.
        token: bearer token POSTs must present; required to bind beyond loopback.
        on_admin: `(pool, server, state)` hook run after each admin change.
        on_reload: what `POST /reload` calls; without it the route is 404.
        hosts: further Host names the API is reached by (each bound address,
            and localhost/127.0.0.1/[::1] on a loopback bind, always are).
        on_internal_error: told `"admin"` each time a connection ends on an
            unexpected error (the app counts them).
        guard: the process's accept guard (pauses are counted there).
        task_status: started with the list of listeners.

    Raises:
        AdminBindError: a non-loopback address without a token.
        ListenError: the address could not be bound.
    """
    if isinstance(listen, tuple):
        host, port = listen
        check_bind(host, token)
        listeners: list[trio.abc.Listener[Any]] = list(
            await open_listeners(host, port, what="the admin API")
        )
    else:
        listeners = list(listen)
        for listener in listeners:
            _check_listener(listener, token)
    ctx = AdminContext(
        pools=pools, metrics=metrics, last_check=last_check, check_progress=check_progress,
        token=token, on_admin=on_admin, on_reload=on_reload,
        hosts=listener_hosts(_addresses(listeners), hosts),
    )

    async def handler(stream: trio.abc.Stream) -> None:
        await serve_connection(stream, ctx, on_internal_error)

    await serve_listeners(listeners, handler, name=WHERE, guard=guard, use_reserve=False,
                          task_status=task_status)
    raise AssertionError("unreachable: serve_listeners returns only by cancellation")


def _addresses(listeners: Sequence[trio.abc.Listener[Any]]) -> list[tuple[str, int]]:
    return [
        (str(name[0]), int(name[1]))
        for name in (lst.socket.getsockname() for lst in listeners
                     if isinstance(lst, trio.SocketListener))
    ]


def _check_listener(listener: trio.abc.Listener[Any], token: str | None) -> None:
    if isinstance(listener, trio.SocketListener):
        check_bind(str(listener.socket.getsockname()[0]), token)


async def serve_connection(
    stream: trio.abc.Stream, ctx: AdminContext, on_internal_error: InternalErrorHook = _ignore
) -> None:
    """Answer requests on one connection, then close it; never raises but Cancelled."""
    try:
        async with stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
            try:
                await _request_loop(stream, conn, ctx, on_internal_error)
            except h11.RemoteProtocolError as exc:
                await _reject(stream, conn, exc)
    except _PEER_GONE:
        pass  # the peer went away mid-exchange: nothing left to tell it
    except Exception as exc:  # the failure boundary: this connection ends, nothing else
        _internal_error(on_internal_error, "admin connection", exc)


def _internal_error(on_internal_error: InternalErrorHook, what: str, exc: Exception) -> None:
    log_internal_error(log, what, exc)
    on_internal_error(WHERE)


async def _request_loop(
    stream: trio.abc.Stream, conn: h11.Connection, ctx: AdminContext,
    on_internal_error: InternalErrorHook,
) -> None:
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        request = None
        with trio.move_on_after(READ_TIMEOUT):
            request = await _read_request(stream, conn)
        if request is None:  # EOF, or the peer did not finish a request in time
            return
        reply = _safe_respond(request, ctx, on_internal_error)
        sent = False
        with trio.move_on_after(READ_TIMEOUT):
            await _send(stream, conn, reply, with_body=request.method != "HEAD")
            sent = True
        if not sent or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


def _safe_respond(
    request: Request, ctx: AdminContext, on_internal_error: InternalErrorHook
) -> Reply:
    try:
        return respond(request, ctx)
    except Exception as exc:  # a bug in a route answers 500 to this request only
        _internal_error(on_internal_error, f"admin {request.method} {request.target!r}", exc)
        return Reply.error(500, f"internal error ({type(exc).__name__}); see the balancer log")


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> Request | None:
    head: h11.Request | None = None
    received = 0
    body = bytearray()
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
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise h11.RemoteProtocolError("request body too large", 413)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None  # h11 emits EndOfMessage only after a Request
            return _request_of(head, bytes(body))
        else:  # ConnectionClosed or PAUSED: no further request on this connection
            return None


def _request_of(head: h11.Request, body: bytes) -> Request:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    return Request(head.method.decode("ascii"), head.target.decode("latin-1"), headers, body)


async def _reject(
    stream: trio.abc.Stream, conn: h11.Connection, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
    with contextlib.suppress(*_PEER_GONE), trio.move_on_after(READ_TIMEOUT):
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
