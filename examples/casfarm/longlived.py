"""The vdirs whose answers are held or streamed: ActiveSync, OAB, Outlook Anywhere, MAPI.

They hold their answers as Exchange does (docs/exchange.md §1.3): an
ActiveSync Ping until the heartbeat, a MAPI NotificationWait with PENDING
every X-PendingPeriod, Outlook Anywhere's IN channel never answered and its
OUT channel streaming RTS PDUs for as long as the client stays, an OAB `.lzx`
download of the profile's size.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import trio

from casfarm.answers import HTML, XML, method_not_allowed, not_found
from casfarm.gate import unauthorized
from casfarm.http import HttpExchange

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime

RPC_CHANNEL_LENGTH = 1 << 30  # Outlook Anywhere declares ~1 GB for each channel
_OAB_CHUNK = bytes(range(256)) * 256  # 64 KiB of download payload
_RTS_KEEPALIVE = bytes.fromhex("05001403100000001c00000000000000010002000200000000000000")
_PING_EXPIRED = bytes.fromhex("03016a00000d4547033100010101")  # WBXML Ping Status=1


async def activesync(ex: HttpExchange, server: ServerRuntime) -> None:
    """ActiveSync: OPTIONS, and a Ping held for the heartbeat."""
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


async def oab(ex: HttpExchange, server: ServerRuntime) -> None:
    """OAB: oab.xml and a `.lzx` download of the profile's size."""
    path = ex.target.split("?", 1)[0].lower()
    if ex.method not in ("GET", "HEAD"):
        await method_not_allowed(ex)
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
        await ex.respond(200, body.encode(), [XML])
    else:
        await not_found(ex)


async def rpc(ex: HttpExchange, server: ServerRuntime) -> None:
    """Outlook Anywhere: an IN channel never answered, an OUT channel streaming RTS."""
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


async def mapi(ex: HttpExchange, server: ServerRuntime) -> None:
    """MAPI/HTTP: PROCESSING, PENDING every X-PendingPeriod, then DONE."""
    if ex.method in ("GET", "HEAD"):
        await ex.read_body(0)
        body = (
            "<html><head><title>Exchange MAPI/HTTP Connectivity Endpoint</title></head><body>"
            f"<p>Exchange MAPI/HTTP Connectivity Endpoint</p><p>Version: 15.1.2507.6</p>"
            f"<p>Vdir Path: /mapi/emsmdb/</p><p>{server.fqdn}</p></body></html>"
        )
        await ex.respond(200, body.encode(), [HTML])
        return
    if ex.method != "POST":
        await method_not_allowed(ex)
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
