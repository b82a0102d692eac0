"""The admin routes: an admitted request in, its `Reply` out.

`respond` is synchronous and does no I/O, so every route is easy to reason
about. The only state it changes is a pool's admin state, via `Pool.set_admin`.
The guards of lb/admin/guard.py run first: Host and Origin for every request,
then the token and the state-change marker for actions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lb.admin.guard import (
    ListenerHosts,
    foreign_origin,
    misdirected,
    unauthorized,
    unmarked,
)
from lb.admin.messages import HTML, Reply, Request, gzipped
from lb.metrics import Metrics
from lb.metrics.collectors import LastCheckLookup, no_check_results
from lb.pool import Member, Pool
from lb.statuspage import (
    Lookups,
    ProgressLookup,
    member_document,
    no_progress,
    render_html,
    status_document,
)
from probes.state import AdminState

log = logging.getLogger("caslb.admin")

ACTIONS: dict[str, AdminState] = {
    "drain": AdminState.DRAIN,
    "enable": AdminState.READY,
    "maint": AdminState.MAINT,
}
"""URL action → the admin state it sets."""

AdminHook = Callable[[str, str, AdminState], None]
"""`(pool, server, state)`: told of every admin change made through the API."""

ReloadHook = Callable[[], None]
"""Asks the process to reload as SIGHUP would; the reload runs after the reply."""


@dataclass(frozen=True)
class AdminContext:
    """What the routes read and act on.

    Attributes:
        pools: the live pools by name (the app may update this mapping on reload).
        metrics: the metrics whose registry `GET /metrics` exposes, and
            whose frontend counts the status shows.
        hosts: the Host values served (`guard.listener_hosts`); others get 421.
        last_check: `(pool, server)` → the last check result, from its owner
            (lb.health.HealthWiring.last_result).
        check_progress: `(pool, server)` → the probe's health counter, from
            its owner (lb.health.HealthWiring.check_progress).
        token: when set, POSTs need `Authorization: Bearer <token>`.
        on_admin: called as `(pool, server, state)` after each admin change,
            so the app can log it or keep it across reloads.
        on_reload: what `POST /reload` calls; None where nothing reloads
            (a balancer without a config file), and the route answers 404.
        now: the pools' clock, passed to `Pool.set_admin` and the status document.
    """

    pools: Mapping[str, Pool]
    metrics: Metrics
    hosts: ListenerHosts
    last_check: LastCheckLookup = no_check_results
    check_progress: ProgressLookup = no_progress
    token: str | None = None
    on_admin: AdminHook | None = None
    on_reload: ReloadHook | None = None
    now: Callable[[], float] = field(default=trio.current_time)


def respond(request: Request, ctx: AdminContext) -> Reply:
    """Route one request to its reply."""
    refusal = misdirected(request, ctx.hosts) or foreign_origin(request)
    if refusal is not None:
        return refusal
    if not request.target.startswith("/"):
        return Reply.error(400, f"bad request target {request.target!r}")
    parts = urlsplit(request.target)
    path = parts.path.rstrip("/") or "/"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if path in _READ_ROUTES:
        if request.method != "GET":
            return Reply.error(405, f"method {request.method} not allowed on {path}",
                               ("allow", "GET"))
        return gzipped(_READ_ROUTES[path](ctx), request.headers.get("accept-encoding", ""))
    segments = path.split("/")
    action = len(segments) == 4 and segments[1] == "servers"
    if not action and (path != "/reload" or ctx.on_reload is None):
        return Reply.error(404, f"no such path {path!r}")
    if request.method != "POST":
        return Reply.error(405, f"method {request.method} not allowed on {path}",
                           ("allow", "POST"))
    refusal = unauthorized(request, ctx.token) or unmarked(request)
    if refusal is not None:
        return refusal
    if action:
        return _action(unquote(segments[2]), segments[3], query, ctx)
    assert ctx.on_reload is not None
    log.info("admin API: reload requested")
    ctx.on_reload()
    # Accepted, not done: the log says how the reload went, as it does for SIGHUP.
    return Reply.json(202, {"reload": "requested"})


def _metrics(ctx: AdminContext) -> Reply:
    return Reply(200, CONTENT_TYPE_LATEST, generate_latest(ctx.metrics.exposed))


def _status(ctx: AdminContext) -> Reply:
    return Reply.json(200, _document(ctx))


def _page(ctx: AdminContext) -> Reply:
    return Reply(200, HTML, render_html(_document(ctx)).encode())


def _document(ctx: AdminContext) -> dict[str, Any]:
    return status_document(
        ctx.pools, frontends=ctx.metrics.frontend_connections(), now=ctx.now(),
        lookups=_lookups(ctx),
    )


def _lookups(ctx: AdminContext) -> Lookups:
    return Lookups(last_check=ctx.last_check, progress=ctx.check_progress)


_READ_ROUTES: dict[str, Callable[[AdminContext], Reply]] = {
    "/": _page,
    "/status": _status,
    "/metrics": _metrics,
}


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
        log.info("admin API: server %s in pool %s set to %s", server, pool.name, state.name,
                 extra={"fields": {"event": "admin", "pool": pool.name, "server": server,
                                   "admin": state.name}})
        if ctx.on_admin is not None:
            ctx.on_admin(pool.name, server, state)
    return Reply.json(200, {
        "server": server,
        "admin": state.name,
        "pools": {
            pool.name: member_document(pool, pool.member(server), now, _lookups(ctx))
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
