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
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from casfarm import ews
from casfarm.auth import ConnectionAuth
from casfarm.ewsstream import stream_events
from casfarm.faults import FaultKind, HealthAnswer, request_failure
from casfarm.gate import admit, unauthorized
from casfarm.http import HttpExchange
from casfarm.vdirs import Vdir, is_healthcheck, vdir_for_path
from casfarm.wire import ResetConnection

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime

RPC_CHANNEL_LENGTH = 1 << 30  # Outlook Anywhere declares ~1 GB for each channel
_HTML = ("Content-Type", "text/html; charset=utf-8")
_XML = ("Content-Type", "text/xml; charset=utf-8")
_OAB_CHUNK = bytes(range(256)) * 256  # 64 KiB of download payload
_RTS_KEEPALIVE = bytes.fromhex("05001403100000001c00000000000000010002000200000000000000")
_PING_EXPIRED = bytes.fromhex("03016a00000d4547033100010101")  # WBXML Ping Status=1

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


@dataclass(frozen=True)
class TrafficProfile:
    """Timing and sizes of the long-lived and bulky answers.

    Attributes:
        heartbeat: seconds an ActiveSync Ping (and a MAPI NotificationWait) is held.
        pending_period: seconds between MAPI `PENDING` keep-alives (X-PendingPeriod).
        oab_size: bytes of an OAB `.lzx` download.
        rpc_out_interval: seconds between RTS PDUs on an RPC_OUT_DATA channel.
        ews_keepalive: seconds between keep-alives on a quiet EWS event stream.
    """

    heartbeat: float = 30.0
    pending_period: float = 5.0
    oab_size: int = 4 << 20
    rpc_out_interval: float = 1.0
    ews_keepalive: float = 40.0

    def __post_init__(self) -> None:
        for name in ("heartbeat", "pending_period", "rpc_out_interval", "ews_keepalive"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.oab_size < 0:
            raise ValueError(f"oab_size must be >= 0, got {self.oab_size!r}")


async def answer(ex: HttpExchange, server: ServerRuntime, conn: ConnectionAuth) -> None:
    """Answer one HTTP request the way an Exchange front end would.

    `conn` is what the request's connection has authenticated as so far.

    Raises:
        ResetConnection: when the connection must end with a TCP reset.
    """
    vdir = vdir_for_path(ex.target)
    health = vdir is not None and is_healthcheck(ex.method, ex.target)
    if vdir is not None and server.faults.find(FaultKind.APP_POOL_STOPPED, vdir) is not None:
        await _app_pool_stopped(ex, server, vdir, health)
        return
    if vdir is not None and health:
        await _healthcheck(ex, server, vdir)
        return
    server.counters.request(_counter_name(ex.target, vdir))
    await server.gate()
    if vdir is not None and not await admit(ex, server, vdir, conn):
        return
    status = request_failure(server.faults, vdir)
    if status is not None:
        server.counters.faulted(FaultKind.ERRORS.value, _counter_name(ex.target, vdir))
        await _server_error(ex, status)
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
        await ex.read_body(0)
        await ex.respond(404, b"<h1>404 - File or directory not found.</h1>", [_HTML])


def _counter_name(target: str, vdir: Vdir | None) -> str:
    if vdir is not None:
        return vdir.name
    return "root" if target.split("?", 1)[0] == "/" else "other"


async def _app_pool_stopped(
    ex: HttpExchange, server: ServerRuntime, vdir: Vdir, health: bool
) -> None:
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


async def _healthcheck(ex: HttpExchange, server: ServerRuntime, vdir: Vdir) -> None:
    server.counters.healthcheck(vdir.name)
    await ex.read_body(0)
    await server.gate()
    verdict = server.health_answer(vdir)
    if verdict is HealthAnswer.RESET:
        raise ResetConnection(f"{vdir.component.value} is not serving health checks")
    if verdict is HealthAnswer.WRONG_BODY:
        iis = [_HTML, ("Server", "Microsoft-IIS/10.0")]
        await ex.respond(200, IIS_DEFAULT_PAGE, iis, reason="OK", app=False)
        return
    await ex.respond(200, f"200 OK<br/>{server.fqdn}".encode("ascii"), [_HTML], reason="OK")


async def _server_error(ex: HttpExchange, status: int) -> None:
    await ex.read_body(0)
    body = (
        b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in "
        b"Application.</h1><p>An unexpected error occurred on the server.</p></body></html>"
    )
    await ex.respond(status, body, [_HTML])


async def _method_not_allowed(ex: HttpExchange) -> None:
    await ex.read_body(0)
    await ex.respond(
        405, b"<h1>405 - HTTP verb used to access this page is not allowed.</h1>", [_HTML]
    )


async def _owa(ex: HttpExchange, server: ServerRuntime) -> None:
    if ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        page = (
            f"<!DOCTYPE html><html><head><title>Outlook</title></head><body>"
            f'<form action="/owa/auth.owa" method="POST"><input name="username"/>'
            f'<input name="password" type="password"/></form><!-- {server.fqdn} --></body></html>'
        )
        await ex.respond(200, page.encode(), [_HTML, ("Cache-Control", "no-cache, no-store")])
    elif ex.method == "POST":
        await ex.read_body()
        body = json.dumps({"Body": {"ResponseClass": "Success", "ResponseCode": "NoError"}})
        await ex.respond(200, body.encode(), [("Content-Type", "application/json; charset=utf-8")])
    else:
        await _method_not_allowed(ex)


async def _ecp(ex: HttpExchange, server: ServerRuntime) -> None:
    if ex.method not in ("GET", "HEAD", "POST"):
        await _method_not_allowed(ex)
        return
    await ex.read_body()
    page = (
        f"<html><head><title>Exchange admin center</title></head><body>{server.name}</body></html>"
    )
    await ex.respond(200, page.encode(), [_HTML])


async def _ews(ex: HttpExchange, server: ServerRuntime) -> None:
    if ex.method == "POST":
        store = server.ews
        result = ews.handle(await ex.read_body(), store.mailbox, time.time())
        store.changed()
        if isinstance(result, ews.Stream):
            await stream_events(ex, store, result, server.profile.ews_keepalive)
        else:
            await ex.respond(result.status, result.body, result.headers)
    elif ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        await ex.respond(200, b'<?xml version="1.0"?><wsdl:definitions/>', [_XML])
    else:
        await _method_not_allowed(ex)


async def _autodiscover(ex: HttpExchange, server: ServerRuntime) -> None:
    ns = server.namespace
    if ex.method == "POST":
        await ex.read_body()
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.'
            'com/exchange/autodiscover/responseschema/2006"><Response xmlns="http://schemas.'
            'microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"><Account>'
            "<AccountType>email</AccountType><Action>settings</Action><Protocol><Type>EXHTTP"
            f"</Type><Server>{ns}</Server><SSL>On</SSL></Protocol><Protocol><Type>WEB</Type>"
            f"<EwsUrl>https://{ns}/EWS/Exchange.asmx</EwsUrl><OABUrl>https://{ns}/OAB/</OABUrl>"
            "</Protocol></Account></Response></Autodiscover>"
        )
        await ex.respond(200, body.encode(), [_XML])
    elif ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        body = json.dumps(
            {"Protocol": "AutodiscoverV1", "Url": f"https://{ns}/Autodiscover/Autodiscover.xml"}
        )
        await ex.respond(200, body.encode(), [("Content-Type", "application/json; charset=utf-8")])
    else:
        await _method_not_allowed(ex)


async def _activesync(ex: HttpExchange, server: ServerRuntime) -> None:
    eas = [("MS-Server-ActiveSync", "15.1"), ("Content-Type", "application/vnd.ms-sync.wbxml")]
    if ex.method == "OPTIONS":
        await ex.read_body(0)
        versions = ("MS-ASProtocolVersions", "2.0,2.1,2.5,12.0,12.1,14.0,14.1,16.0,16.1")
        commands = ("MS-ASProtocolCommands", "Sync,FolderSync,Ping,ItemOperations,Settings")
        await ex.respond(200, b"", [versions, commands, ("Allow", "OPTIONS,POST")])
    elif ex.method == "POST":
        await ex.read_body()
        query = ex.target.partition("?")[2].lower()
        if "cmd=ping" in query:
            # Direct Push: hold the request until the heartbeat expires, then Status=1.
            await trio.sleep(server.profile.heartbeat)
        await ex.respond(200, _PING_EXPIRED, eas)
    else:
        await unauthorized(ex, ("Negotiate", "NTLM", 'Basic realm="' + server.fqdn + '"'))


async def _oab(ex: HttpExchange, server: ServerRuntime) -> None:
    path = ex.target.split("?", 1)[0].lower()
    if ex.method not in ("GET", "HEAD"):
        await _method_not_allowed(ex)
        return
    await ex.read_body(0)
    if path.endswith(".lzx"):
        size = server.profile.oab_size
        await ex.start(
            200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        if ex.method == "GET":
            sent = 0
            while sent < size:
                piece = _OAB_CHUNK[: size - sent]
                await ex.send(piece)
                sent += len(piece)
        await ex.end()
    elif path.endswith("oab.xml"):
        body = (
            '<?xml version="1.0" encoding="utf-8"?><OAB><oal id="casfarm" dn="/" name="\\Default '
            f'Offline Address Book"><full seq="1" size="{server.profile.oab_size}">'
            "full.lzx</full></oal></OAB>"
        )
        await ex.respond(200, body.encode(), [_XML])
    else:
        await ex.respond(404, b"<h1>404 - File or directory not found.</h1>", [_HTML])


async def _rpc(ex: HttpExchange, server: ServerRuntime) -> None:
    if ex.method == "RPC_IN_DATA":
        # The IN channel streams its body for hours and gets no answer while healthy.
        await ex.consume_body()
        return
    if ex.method == "RPC_OUT_DATA":
        await ex.read_body()
        headers = [
            ("Content-Type", "application/rpc"),
            ("Content-Length", str(RPC_CHANNEL_LENGTH)),
            ("Cache-Control", "private"),
        ]
        await ex.start(200, headers, reason="Success")
        sent = 0
        while sent + len(_RTS_KEEPALIVE) <= RPC_CHANNEL_LENGTH:
            await ex.send(_RTS_KEEPALIVE)
            sent += len(_RTS_KEEPALIVE)
            await trio.sleep(server.profile.rpc_out_interval)
        return
    await unauthorized(ex, ("Negotiate", "NTLM", 'Basic realm="' + server.fqdn + '"'))


async def _mapi(ex: HttpExchange, server: ServerRuntime) -> None:
    if ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        body = (
            "<html><head><title>Exchange MAPI/HTTP Connectivity Endpoint</title></head><body>"
            f"<p>Exchange MAPI/HTTP Connectivity Endpoint</p><p>Version: 15.1.2507.6</p>"
            f"<p>Vdir Path: /mapi/emsmdb/</p><p>{server.fqdn}</p></body></html>"
        )
        await ex.respond(200, body.encode(), [_HTML])
        return
    if ex.method != "POST":
        await _method_not_allowed(ex)
        return
    await ex.read_body()
    request_type = ex.header("X-RequestType") or "Execute"
    period = server.profile.pending_period
    wait = server.profile.heartbeat if request_type.lower() == "notificationwait" else 0.0
    headers = [
        ("Content-Type", "application/mapi-http"),
        ("Transfer-Encoding", "chunked"),
        ("X-RequestType", request_type),
        ("X-RequestId", ex.header("X-RequestId") or str(uuid.uuid4())),
        ("X-ResponseCode", "0"),
        ("X-PendingPeriod", str(round(period * 1000))),
    ]
    await ex.start(200, headers)
    await ex.send(b"PROCESSING\r\n")
    deadline = trio.current_time() + wait
    while (remaining := deadline - trio.current_time()) > 0:
        await trio.sleep(min(period, remaining))
        if trio.current_time() < deadline:
            await ex.send(b"PENDING\r\n")
    await ex.send(b"DONE\r\nX-ResponseCode: 0\r\nX-ElapsedTime: 1\r\n\r\n" + b"\x00" * 16)
    await ex.end()


async def _powershell(ex: HttpExchange, server: ServerRuntime) -> None:
    await unauthorized(ex, ("Negotiate", "Kerberos"))


_HANDLERS = {
    "owa": _owa,
    "ecp": _ecp,
    "ews": _ews,
    "autodiscover": _autodiscover,
    "eas": _activesync,
    "oab": _oab,
    "rpc": _rpc,
    "mapi": _mapi,
    "powershell": _powershell,
}
