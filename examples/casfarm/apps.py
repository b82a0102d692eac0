"""The short request/response vdirs: OWA, ECP, EWS, Autodiscover, PowerShell.

Each answers with a plausible page or document for its method, and 405 for a
method the vdir does not take. Authentication has already been decided
(casfarm.gate) when these run.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from casfarm import ews as soap
from casfarm.answers import HTML, JSON, XML, method_not_allowed
from casfarm.ewsstream import stream_events
from casfarm.gate import unauthorized
from casfarm.http import HttpExchange

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime


async def owa(ex: HttpExchange, server: ServerRuntime) -> None:
    """OWA: the logon form page for GET, a JSON success for a POST."""
    if ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        page = (
            f"<!DOCTYPE html><html><head><title>Outlook</title></head><body>"
            f'<form action="/owa/auth.owa" method="POST"><input name="username"/>'
            f'<input name="password" type="password"/></form><!-- {server.fqdn} --></body></html>'
        )
        await ex.respond(200, page.encode(), [HTML, ("Cache-Control", "no-cache, no-store")])
    elif ex.method == "POST":
        await ex.read_body()
        body = json.dumps({"Body": {"ResponseClass": "Success", "ResponseCode": "NoError"}})
        await ex.respond(200, body.encode(), [JSON])
    else:
        await method_not_allowed(ex)


async def ecp(ex: HttpExchange, server: ServerRuntime) -> None:
    """ECP: the admin center page."""
    if ex.method not in ("GET", "HEAD", "POST"):
        await method_not_allowed(ex)
        return
    await ex.read_body()
    page = (
        f"<html><head><title>Exchange admin center</title></head><body>{server.name}</body></html>"
    )
    await ex.respond(200, page.encode(), [HTML])


async def ews(ex: HttpExchange, server: ServerRuntime) -> None:
    """EWS: SOAP over the farm's mailbox for a POST (casfarm.ews), the WSDL to a GET."""
    if ex.method == "POST":
        store = server.ews
        result = soap.handle(await ex.read_body(), store.mailbox, time.time())
        store.changed()
        if isinstance(result, soap.Stream):
            await stream_events(ex, store, result, server.profile.ews_keepalive)
        else:
            await ex.respond(result.status, result.body, result.headers)
    elif ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        await ex.respond(200, b'<?xml version="1.0"?><wsdl:definitions/>', [XML])
    else:
        await method_not_allowed(ex)


async def autodiscover(ex: HttpExchange, server: ServerRuntime) -> None:
    """Autodiscover: the POX settings for a POST, the v2 JSON for a GET."""
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
        await ex.respond(200, body.encode(), [XML])
    elif ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        body = json.dumps(
            {"Protocol": "AutodiscoverV1", "Url": f"https://{ns}/Autodiscover/Autodiscover.xml"}
        )
        await ex.respond(200, body.encode(), [JSON])
    else:
        await method_not_allowed(ex)


async def powershell(ex: HttpExchange, server: ServerRuntime) -> None:
    """Remote PowerShell: Kerberos only, which the farm does not speak."""
    await unauthorized(ex, ("Negotiate", "Kerberos"))
