"""What is answered before a vdir's application runs: HTTP.sys and the health check.

A stopped application pool is answered by HTTP.sys itself with its own 503
page (no X-FEServer, `Server: Microsoft-HTTPAPI/2.0`); a GET of
`/<vdir>/healthcheck.htm` is answered by the proxy module in memory: 200 with
`200 OK<br/><fqdn>`, a TCP reset when the component is out
(docs/exchange.md §2.3), or the IIS start page under the wrong_body fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from casfarm.answers import HTML
from casfarm.faults import FaultKind, HealthAnswer
from casfarm.http import HttpExchange
from casfarm.vdirs import Vdir
from casfarm.wire import ResetConnection

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime

HTTPSYS_503 = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">'
    b"\r\n<HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n"
    b'<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    b"<BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>"
    b"\r\n</BODY></HTML>\r\n"
)
IIS_DEFAULT_PAGE = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN">\r\n<html>\r\n<head>\r\n'
    b'<title>IIS Windows Server</title>\r\n</head>\r\n<body>\r\n<div id="container">\r\n'
    b'<a href="http://go.microsoft.com/fwlink/?linkid=66138&amp;clcid=0x409">'
    b'<img src="iisstart.png" alt="IIS" width="960" height="600" /></a>\r\n</div>\r\n'
    b"</body>\r\n</html>"
)


async def app_pool_stopped(
    ex: HttpExchange, server: ServerRuntime, vdir: Vdir, health: bool
) -> None:
    """HTTP.sys's 503 for a vdir whose application pool is stopped, health check included."""
    if health:
        server.counters.healthcheck(vdir.name)
    else:
        server.counters.request(vdir.name)
        server.counters.faulted(FaultKind.APP_POOL_STOPPED.value, vdir.name)
    await ex.read_body(0)
    await server.gate()
    headers = [
        ("Content-Type", "text/html; charset=us-ascii"),
        ("Server", "Microsoft-HTTPAPI/2.0"),
    ]
    await ex.respond(503, HTTPSYS_503, headers, reason="Service Unavailable", app=False, close=True)


async def healthcheck(ex: HttpExchange, server: ServerRuntime, vdir: Vdir) -> None:
    """The proxy module's answer to GET /<vdir>/healthcheck.htm (docs/exchange.md §2.3)."""
    server.counters.healthcheck(vdir.name)
    await ex.read_body(0)
    await server.gate()
    verdict = server.health_answer(vdir)
    if verdict is HealthAnswer.RESET:
        raise ResetConnection(f"{vdir.component.value} is not serving health checks")
    if verdict is HealthAnswer.WRONG_BODY:
        iis = [HTML, ("Server", "Microsoft-IIS/10.0")]
        await ex.respond(200, IIS_DEFAULT_PAGE, iis, reason="OK", app=False)
        return
    await ex.respond(200, f"200 OK<br/>{server.fqdn}".encode("ascii"), [HTML], reason="OK")
