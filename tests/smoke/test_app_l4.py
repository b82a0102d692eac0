"""The whole balancer at L4 (TLS passthrough, SNI routing, mail) in front of casfarm."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
from collections import Counter
from pathlib import Path

import casfarm
import trio

from lb.app import Balancer
from probes.checks import Reason
from tests.farmclient import HttpClient, client_context
from tests.smoke.test_app_l7 import NAMESPACE, balancer, wait_for

MAIL_PORTS = ("imaps", "pops", "smtp", "submission")


def l4_config(farm: casfarm.Farm, mode: str, *, starttls: bool = False) -> str:
    kinds = ("https", *MAIL_PORTS, *(("imap", "pop") if starttls else ()))
    servers = ",\n".join(
        f'  {{ name = "{s.name}", address = "{s.host}", fqdn = "{s.fqdn}", ports = {{ '
        + ", ".join(f"{k} = {s.ports[k]}" for k in kinds)
        + " } }"
        for s in farm.servers
    )
    listen = "listen = { imap = 143, pop = 110 }\n" if starttls else ""
    return f"""
[exchange]
{listen}namespace = "{NAMESPACE}"
mode = "{mode}"
bind = "127.0.0.1"
ca_file = "{farm.ca_path}"
inter = "200ms"
fastinter = "100ms"
rise = 2
fall = 2
timeout = "1s"
servers = [
{servers}
]
"""


def passthrough_context(ca: Path) -> ssl.SSLContext:
    # The farm's certificates name the namespace, not the per-protocol SNI names:
    # trust the CA, skip the name (the balancer never sees inside the TLS).
    ctx = client_context(ca)
    ctx.check_hostname = False
    return ctx


async def get_via(app: Balancer, farm: casfarm.Farm, sni: str, path: str) -> str:
    host, port = app.addresses["https"]
    tcp = await trio.open_tcp_stream(host, port)
    tls = trio.SSLStream(tcp, passthrough_context(farm.ca_path), server_hostname=sni,
                         https_compatible=True)
    client = HttpClient(tls, sni)
    try:
        response = await client.request("GET", path)
    finally:
        await client.aclose()
    assert response.status == 200
    return response.header("x-feserver") or "?"


async def test_sni_routes_each_protocol_name_to_its_own_checked_pool() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, l4_config(farm, "l4-sni")) as app:
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
        await wait_for(lambda: not app.pools["ews"].member("cas1").eligible)
        ews = Counter([await get_via(app, farm, f"ews.{NAMESPACE}", "/EWS/x") for _ in range(6)])
        owa = Counter([await get_via(app, farm, NAMESPACE, "/owa/") for _ in range(6)])
        assert "CAS1" not in ews and owa["CAS1"] == 2
        assert app.pools["owa"].member("cas1").eligible


async def test_single_namespace_l4_is_blind_to_one_protocol_failing() -> None:
    async with casfarm.running(servers=2) as farm, balancer(farm, l4_config(farm, "l4")) as app:
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
        await trio.sleep(1.0)  # several check rounds: the OWA probe stays green
        assert app.pools["https"].member("cas1").eligible
        seen = Counter([await get_via(app, farm, NAMESPACE, "/EWS/x") for _ in range(4)])
        assert seen["CAS1"] == 2  # EWS still sent to the server whose EWS is out


def mail_session(kind: str, host: str, port: int, ca: Path) -> str:
    ctx = passthrough_context(ca)
    if kind == "imaps":
        with imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=5) as imap:
            typ, _ = imap.capability()
            return f"{typ}"
    if kind == "pops":
        pop = poplib.POP3_SSL(host, port, context=ctx, timeout=5)
        try:
            return pop.getwelcome().decode()[:3]
        finally:
            pop.quit()
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        smtp.ehlo("client.lab.local")
        smtp.starttls(context=ctx)
        code, _ = smtp.ehlo("client.lab.local")
        return str(code)


async def test_mail_protocols_pass_through_and_survive_a_crash() -> None:
    async with casfarm.running(servers=2) as farm, balancer(farm, l4_config(farm, "l4")) as app:
        farm.inject("cas1", "crash")
        for kind, expected in (("imaps", "OK"), ("pops", "+OK"), ("smtp", "250"),
                               ("submission", "250")):
            host, port = app.addresses[kind]
            for _ in range(3):  # cas1 is refused: retried on cas2, invisible to the client
                answer = await trio.to_thread.run_sync(
                    mail_session, "smtp" if kind == "submission" else kind, host, port,
                    farm.ca_path,
                )
                assert answer == expected, (kind, answer)


def starttls_session(kind: str, host: str, port: int, ca: Path) -> str:
    """A clear IMAP (143) or POP (110) session upgraded by the client, through caslb."""
    ctx = passthrough_context(ca)
    if kind == "imap":
        with imaplib.IMAP4(host, port, timeout=5) as imap:
            imap.starttls(ssl_context=ctx)
            typ, _ = imap.capability()
            return f"{typ} {type(imap.sock).__name__}"
    pop = poplib.POP3(host, port, timeout=5)
    try:
        pop.stls(context=ctx)
        return f"{pop.noop().decode()[:3]} {type(pop.sock).__name__}"
    finally:
        pop.quit()


async def test_imap_and_pop_starttls_pass_through_checked_and_survive_a_crash() -> None:
    async with casfarm.running(servers=2) as farm, balancer(
            farm, l4_config(farm, "l4", starttls=True)) as app:
        farm.inject("cas1", "crash")
        for kind in ("imap", "pop"):
            # The checks upgrade too: the crashed server leaves the pool on its verdict.
            pool = app.pools[f"{kind}-starttls"]
            await wait_for(lambda: not pool.member("cas1").eligible)  # noqa: B023
            assert pool.member("cas2").eligible
            host, port = app.addresses[kind]
            for _ in range(3):
                answer = await trio.to_thread.run_sync(
                    starttls_session, kind, host, port, farm.ca_path)
                assert answer == ("OK" if kind == "imap" else "+OK") + " SSLSocket", answer


def refused(app: Balancer, kind: str) -> bool:
    last = app.states.last_result(kind, "cas1")
    return last is not None and last.reason is Reason.REFUSED


async def test_maintenance_stops_imap_and_pop_the_checks_see_refused_and_the_server_returns(
) -> None:
    async with casfarm.running(servers=2) as farm, balancer(farm, l4_config(farm, "l4")) as app:
        farm.start_maintenance("cas1")
        for kind in ("imap", "pop"):
            pool = app.pools[kind]
            await wait_for(lambda: not pool.member("cas1").eligible)  # noqa: B023
            # A session accepted just before the port closed is greeted with BYE
            # (NOT_ACTIVE), so the first failing check may say that; the next see
            # the closed port.
            await wait_for(lambda: refused(app, kind))  # noqa: B023
            assert not pool.member("cas1").eligible
            assert pool.member("cas2").eligible
        for kind in ("imaps", "pops"):
            host, port = app.addresses[kind]
            answer = await trio.to_thread.run_sync(mail_session, kind, host, port, farm.ca_path)
            assert answer == ("OK" if kind == "imaps" else "+OK"), answer
        before = farm.counts("cas1").requests
        assert "imap" not in before and "pop" not in before
        farm.end_maintenance("cas1")
        for kind in ("imap", "pop"):
            pool = app.pools[kind]
            await wait_for(lambda: pool.member("cas1").eligible)  # noqa: B023
            assert app.states.last_result(kind, "cas1").ok  # type: ignore[union-attr]
