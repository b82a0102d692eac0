"""What each virtual directory answers: health checks and plausible traffic.

Theory of operation: `answer` is the one entry point for an HTTP request on a
simulated CAS server. It applies, in Exchange's order, what happens before the
application runs (HTTP.sys answering 503 for a stopped app pool), then the
proxy module's health check (docs/exchange.md §2.3), then the `errors` fault, then
the vdir's own traffic. Long-lived vdirs hold their answers as Exchange does:
ActiveSync Ping until the heartbeat, MAPI NotificationWait with PENDING every
X-PendingPeriod, Outlook Anywhere's IN channel never answered and its OUT
channel streaming for as long as the client stays, EWS GetStreamingEvents for its
ConnectionTimeout. EWS itself is `casfarm.ews` (SOAP) over the farm's mailbox.

The answers themselves live apart: casfarm.health (HTTP.sys and the health
check), casfarm.apps (the short vdirs), casfarm.longlived (the held and
streamed ones), casfarm.answers (404, 405, 500).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from casfarm import apps, longlived
from casfarm.answers import not_found, server_error
from casfarm.auth import ConnectionAuth
from casfarm.faults import FaultKind, request_failure
from casfarm.gate import admit, unauthorized
from casfarm.health import app_pool_stopped, healthcheck
from casfarm.http import HttpExchange
from casfarm.vdirs import Vdir, is_healthcheck, vdir_for_path

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime

VdirHandler = Callable[[HttpExchange, "ServerRuntime"], Awaitable[None]]


async def answer(ex: HttpExchange, server: ServerRuntime, conn: ConnectionAuth) -> None:
    """Answer one HTTP request the way an Exchange front end would.

    `conn` is what the request's connection has authenticated as so far.

    Raises:
        ResetConnection: when the connection must end with a TCP reset.
    """
    vdir = vdir_for_path(ex.target)
    health = vdir is not None and is_healthcheck(ex.method, ex.target)
    if vdir is not None and server.faults.find(FaultKind.APP_POOL_STOPPED, vdir) is not None:
        await app_pool_stopped(ex, server, vdir, health)
        return
    if vdir is not None and health:
        await healthcheck(ex, server, vdir)
        return
    server.counters.request(_counter_name(ex.target, vdir))
    await server.gate()
    if vdir is not None and not await admit(ex, server, vdir, conn):
        return
    if vdir is not None:
        ex.server_headers += tuple(server.backend_headers())  # proxied to the mailbox server
    status = request_failure(server.faults, vdir)
    if status is not None:
        server.counters.faulted(FaultKind.ERRORS.value, _counter_name(ex.target, vdir))
        await server_error(ex, status)
        return
    handler = _HANDLERS.get(vdir.name) if vdir is not None else None
    if vdir is not None and ex.target.split("?", 1)[0].lower().endswith("/healthcheck.htm"):
        # Not a GET, so not a health check: normal handling asks for credentials.
        await unauthorized(ex, ("Negotiate", "NTLM"))
    elif handler is not None:
        await handler(ex, server)
    elif ex.target.split("?", 1)[0] == "/":
        await ex.read_body(0)
        await ex.respond(302, b"", [("Location", "/owa/")], reason="Found")
    else:
        await not_found(ex)


def _counter_name(target: str, vdir: Vdir | None) -> str:
    if vdir is not None:
        return vdir.name
    return "root" if target.split("?", 1)[0] == "/" else "other"


_HANDLERS: dict[str, VdirHandler] = {
    "owa": apps.owa,
    "ecp": apps.ecp,
    "ews": apps.ews,
    "autodiscover": apps.autodiscover,
    "eas": longlived.activesync,
    "oab": longlived.oab,
    "rpc": longlived.rpc,
    "mapi": longlived.mapi,
    "powershell": apps.powershell,
}
