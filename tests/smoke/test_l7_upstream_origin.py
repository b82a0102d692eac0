"""Re-encryption as a real server receives it through the L7 frontend: a PROXY v2
header before the ClientHello, the pool's SNI, and its verified name."""

from __future__ import annotations

import functools
import ipaddress
import ssl
import struct
from pathlib import Path

import h11
import pytest
import trio
import trustme

from lb.config.model import PoolConfig, ServerConfig
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from lb.pool import Pool
from lb.proxy_protocol import V2_SIGNATURE
from lb.tls import UpstreamNames, client_context
from tests.farmclient import HttpClient

pytestmark = pytest.mark.smoke

NAMESPACE = "mail.contoso.test"  # the only name on the servers' certificate


async def _read_exactly(stream: trio.abc.Stream, size: int, data: bytearray) -> bytes:
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.BrokenResourceError("closed")
        data += chunk
    taken = bytes(data[:size])
    del data[:size]
    return taken


async def _proxy_v2_source(stream: trio.abc.Stream) -> str:
    """Parse a PROXY v2 TCP4 header as a server that accepts it does; "ip:port"."""
    buffered = bytearray()
    head = await _read_exactly(stream, 16, buffered)
    assert head[:12] == V2_SIGNATURE and head[12] == 0x21 and head[13] == 0x11
    (length,) = struct.unpack("!H", head[14:16])
    block = await _read_exactly(stream, length, buffered)
    source = ipaddress.IPv4Address(block[:4])
    (sport,) = struct.unpack("!H", block[8:10])
    return f"{source}:{sport}"


class Server:
    """A CAS stand-in that takes a PROXY v2 header, then TLS, then one HTTP request."""

    def __init__(self, ca: trustme.CA) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(NAMESPACE).configure_cert(self.context)
        self.sni: list[str | None] = []
        self.context.sni_callback = self._record_sni  # type: ignore[assignment]

    def _record_sni(self, sock: object, name: str | None, ctx: object) -> None:
        self.sni.append(name)

    async def handle(self, tcp: trio.SocketStream) -> None:
        source = await _proxy_v2_source(tcp)
        stream = trio.SSLStream(tcp, self.context, server_side=True)
        conn = h11.Connection(h11.SERVER)
        try:
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
            body = source.encode()
            await stream.send_all(
                conn.send(h11.Response(status_code=200, headers=[
                    ("content-length", str(len(body))), ("connection", "close")]))
                + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            )
        except (trio.BrokenResourceError, ssl.SSLError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


@pytest.mark.parametrize(
    ("names", "status", "sni"),
    [
        (UpstreamNames(sni=NAMESPACE), 200, NAMESPACE),
        (UpstreamNames(sni=False, verify_name=NAMESPACE), 200, None),
        (UpstreamNames(verify_name=NAMESPACE), 200, "cas1.contoso.test"),
        # a certificate that fails verification is a connect failure: 503, as for a dead server
        (UpstreamNames(sni=NAMESPACE, verify_name="cas1.contoso.test"), 503, NAMESPACE),
        (UpstreamNames(), 503, "cas1.contoso.test"),  # the FQDN is not on the certificate
    ],
)
async def test_the_server_sees_the_client_and_the_names_the_pool_asks_for(
    tmp_path: Path, names: UpstreamNames, status: int, sni: str | None
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = Server(ca)
    async with trio.open_nursery() as nursery:
        backend = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        front = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = backend[0].socket.getsockname()[1]
        pool = Pool(PoolConfig("ews", (
            ServerConfig("cas1", "127.0.0.1", port, "cas1.contoso.test"),)))
        context = client_context(ca_file, check_hostname=names.follows_fqdn)
        upstream = UpstreamSettings(tls=context, names=names, proxy_protocol=2, retries=0)
        frontend = HttpFrontend(
            HttpFrontendSettings(routes=RouteTable(vdirs={}, default_pool="ews")),
            {"ews": pool}, upstream=upstream)
        await nursery.start(frontend.serve, front)
        stream = await trio.open_tcp_stream("127.0.0.1", front[0].socket.getsockname()[1])
        client = HttpClient(stream, NAMESPACE)
        response = await client.request("GET", "/EWS/Exchange.asmx")
        client_address = f"127.0.0.1:{stream.socket.getsockname()[1]}"
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert response.status == status
    assert server.sni == [sni]
    if status == 200:
        assert response.body == client_address.encode()
