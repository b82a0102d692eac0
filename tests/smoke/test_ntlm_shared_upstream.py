"""Why caslb pins NTLM: a balancer that shares upstream connections breaks the logon.

NTLM authenticates the TCP connection that carried its three legs (casfarm, as
IIS, keeps the CHALLENGE it sent on that connection only). nginx open source,
set up as its docs suggest for keep-alive upstreams (`keepalive N`,
`proxy_http_version 1.1`, `proxy_set_header Connection ""`), hands each request
whichever idle upstream connection it has cached, whoever sent it. Two NTLM
clients whose handshakes interleave (NEGOTIATE of A, NEGOTIATE of B,
AUTHENTICATE of A, AUTHENTICATE of B) then share one upstream connection: B's
NEGOTIATE replaces A's challenge on it, so A's AUTHENTICATE is checked against
a challenge it never saw and refused, and B's finds none left. Through caslb
at L7 the same clients, in the same order, in front of the same farm, each
keep an upstream connection of their own, log on, and stay logged on.

The legs are stepped by hand with pyspnego (the NTLM client requests_ntlm uses)
over two client connections, so the interleaving is exact, not a race.
"""

from __future__ import annotations

import base64
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import casfarm
import pytest
import spnego
import trio

from tests.authclients import PASSWORD, SOAP
from tests.farmclient import HttpClient, Response, https_client
from tests.smoke.test_app_l7 import NAMESPACE, balancer, farm_config, wait_for

pytestmark = pytest.mark.smoke
EWS = "/EWS/Exchange.asmx"


def _nginx() -> str:
    found = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if found is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_config(tmp: Path, farm: casfarm.Farm, port: int) -> str:
    """nginx in front of the farm's first server with a shared keep-alive upstream pool."""
    cas1 = farm.server("cas1")
    cert = Path(farm.ca_path).parent / "cas1.pem"
    return f"""
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream cas {{
        server {cas1.host}:{cas1.ports["https"]};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {NAMESPACE};
        ssl_certificate {cert};
        ssl_certificate_key {cert};
        location / {{
            proxy_pass https://cas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_ssl_server_name on;
            proxy_ssl_name {cas1.fqdn};
            proxy_ssl_trusted_certificate {farm.ca_path};
            proxy_ssl_verify on;
        }}
    }}
}}
"""


@asynccontextmanager
async def nginx(tmp: Path, farm: casfarm.Farm) -> AsyncIterator[tuple[str, int]]:
    """Run nginx in the foreground on a free loopback port; stop it on exit."""
    binary = _nginx()
    port = _free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, farm, port))
    argv = [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(trio.run_process, argv)
        try:
            with trio.fail_after(10):
                while True:
                    if proc.returncode is not None:
                        raise AssertionError((tmp / "error.log").read_text())
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await trio.sleep(0.05)
            yield "127.0.0.1", port
        finally:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            proc.kill()


def _token(response: Response) -> bytes:
    """The CHALLENGE of a 401 answering a NEGOTIATE."""
    offer = response.header("www-authenticate") or ""
    scheme, _, token = offer.partition(" ")
    assert (response.status, scheme) == (401, "NTLM"), (response.status, offer)
    return base64.b64decode(token)


async def _leg(client: HttpClient, message: bytes | None) -> Response:
    auth = [("Authorization", "NTLM " + base64.b64encode(message or b"").decode())]
    return await client.request("POST", EWS, auth, SOAP)


async def interleaved_logons(host: str, port: int, ca_path: str | Path) -> list[Response]:
    """Two clients' NTLM handshakes, leg by leg: A1, B1, A3, B3; the AUTHENTICATE answers."""
    clients = [
        await https_client(host, port, ca_path=ca_path, server_hostname=NAMESPACE)
        for _ in range(2)
    ]
    contexts = [spnego.client("alice", PASSWORD, protocol="ntlm") for _ in clients]
    challenges = [_token(await _leg(c, ctx.step())) for c, ctx in zip(clients, contexts,
                                                                       strict=True)]
    answers = [
        await _leg(c, ctx.step(challenge))
        for c, ctx, challenge in zip(clients, contexts, challenges, strict=True)
    ]
    # and then each connection asks again, with no Authorization, as Outlook does
    answers += [await c.request("POST", EWS, body=SOAP) for c in clients]
    for c in clients:
        await c.aclose()
    return answers


async def test_nginx_sharing_upstream_connections_breaks_interleaved_ntlm_logons(
    tmp_path: Path,
) -> None:
    async with casfarm.running(servers=1, auth=True) as farm, nginx(tmp_path, farm) as (h, p):
        answers = await interleaved_logons(h, p, farm.ca_path)
        # A's answer checked against B's challenge, B's against none: both refused
        assert [r.status for r in answers] == [401, 401, 401, 401]
        assert all(r.header("www-authenticate") == "Negotiate" for r in answers)
        # one upstream connection carried both clients' six requests
        assert farm.counts("cas1").connections == {"https": 1}
        assert farm.counts("cas1").requests == {"ews": 6}


async def test_caslb_l7_keeps_each_interleaved_ntlm_logon_on_its_own_upstream() -> None:
    async with (
        casfarm.running(servers=1, auth=True) as farm,
        balancer(farm, farm_config(farm)) as app,
    ):
        await wait_for(lambda: app.pools["ews"].member("cas1").eligible)
        host, port = app.addresses["https"]
        before = farm.counts("cas1").connections.get("https", 0)
        answers = await interleaved_logons(host, port, farm.ca_path)
        assert [r.status for r in answers] == [200, 200, 200, 200]
        assert all(b"NoError" in r.body for r in answers)
        # the probes connect too: at least one connection per client, never one shared
        assert farm.counts("cas1").connections["https"] - before >= 2


def _unpinned_and_rebalanced_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """caslb with its pinning broken, through the module seams lb.l7 reads them from.

    No request or response pins (lb.l7.rebalance's two decisions, as lb.l7.proxy
    and lb.l7.relay call them), every request balanced afresh (RECHECK_EVERY 0)
    and moved whenever the pool picks another server: what a balancer that
    spreads each request does to a client's upstream connection.
    """
    from lb.l7 import proxy, rebalance, relay, upstream

    monkeypatch.setattr(rebalance, "request_pins", lambda authorization: False)
    monkeypatch.setattr(relay, "response_pins", lambda status, headers: False)
    monkeypatch.setattr(rebalance, "RECHECK_EVERY", 0.0)
    monkeypatch.setattr(upstream, "RECHECK_EVERY", 0.0)
    monkeypatch.setattr(rebalance, "moves", lambda current, picked, sticky: True)
    assert proxy.rebalance is rebalance  # the proxy reads the patched module's names


async def test_caslb_without_its_pinning_breaks_the_same_logons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _unpinned_and_rebalanced_every_request(monkeypatch)
    async with (
        casfarm.running(servers=3, auth=True) as farm,
        balancer(farm, farm_config(farm)) as app,
    ):
        await wait_for(lambda: all(m.eligible for m in app.pools["ews"].members))
        host, port = app.addresses["https"]
        answers = await interleaved_logons(host, port, farm.ca_path)
        # each AUTHENTICATE moved to another server's fresh connection: no challenge there
        assert [r.status for r in answers[:2]] == [401, 401]
        assert not any(r.status == 200 for r in answers)
