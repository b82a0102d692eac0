"""casfarm's IMAP, POP and SMTP, checked with imaplib, poplib and smtplib over loopback."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl

import casfarm
import pytest
import trio

pytestmark = pytest.mark.smoke


def _ctx(farm: casfarm.Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.ca_path))


def _imap_dialogue(host: str, port: int, fqdn: str, ctx: ssl.SSLContext) -> list[object]:
    seen: list[object] = []
    with imaplib.IMAP4(host, port, timeout=5) as imap:
        seen.append(imap.welcome)
        seen.append("STARTTLS" in imap.capabilities)
        imap.starttls(ssl_context=ctx)
        assert isinstance(imap.sock, ssl.SSLSocket)
        seen.append(imap.sock.getpeercert() is not None)
        seen.append("STARTTLS" in imap.capabilities)
        seen.append(imap.login("user@lab.local", "any password")[0])
        seen.append(imap.noop()[0])
        seen.append(imap.logout()[0])
    return seen


async def test_imap_starttls_login_noop_logout(farm: casfarm.Farm) -> None:
    s = farm.server("cas1")
    seen = await trio.to_thread.run_sync(
        _imap_dialogue, s.host, s.ports["imap"], s.fqdn, _ctx(farm)
    )
    assert seen[0].startswith(b"* OK The Microsoft Exchange IMAP4 service is ready.")  # type: ignore[attr-defined]
    assert seen[1:] == [True, True, False, "OK", "OK", "BYE"]
    assert farm.counts("cas1").requests == {"imap": 1}


def _imaps_login(host: str, port: int, ctx: ssl.SSLContext, name: str) -> str:
    with imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=5) as imap:
        assert "STARTTLS" not in imap.capabilities
        status, _ = imap.login("u", "p")
        imap.logout()
        return str(status)


async def test_imaps_implicit_tls_on_its_own_port(farm: casfarm.Farm) -> None:
    s = farm.server("cas2")
    ctx = _ctx(farm)
    # Verified against the namespace name, as a client behind a passthrough balancer would.
    ctx.check_hostname = True
    status = await trio.to_thread.run_sync(
        lambda: _imaps_with_sni(s.host, s.ports["imaps"], ctx, farm.namespace)
    )
    assert status == "OK"


def _imaps_with_sni(host: str, port: int, ctx: ssl.SSLContext, sni: str) -> str:
    class _Named(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout: float | None) -> ssl.SSLSocket:
            raw = socket.create_connection((host, port), timeout)
            return ctx.wrap_socket(raw, server_hostname=sni)

    with _Named(host, port, ssl_context=ctx, timeout=5) as imap:
        status, _ = imap.login("u", "p")
        imap.logout()
        return str(status)


def _imap_login(host: str, port: int) -> str:
    with imaplib.IMAP4(host, port, timeout=5) as imap:
        status, _ = imap.login("user@lab.local", "any password")
        imap.logout()
    return str(status)


@pytest.mark.parametrize("component", ["ImapProxy", "ServerWideOffline"])
async def test_imap_is_refused_while_stopped_and_logs_on_after(
    farm: casfarm.Farm, component: str
) -> None:
    s = farm.server("cas1")
    farm.set_component("cas1", component, "Inactive")
    for port in (s.ports["imap"], s.ports["imaps"]):
        with pytest.raises(ConnectionRefusedError):
            await trio.to_thread.run_sync(_imap_login, s.host, port)
    assert "imap" not in farm.counts("cas1").requests
    other = farm.server("cas2")
    assert await trio.to_thread.run_sync(_imap_login, other.host, other.ports["imap"]) == "OK"
    farm.set_component("cas1", component, "Active")
    assert await trio.to_thread.run_sync(_imap_login, s.host, s.ports["imap"]) == "OK"
    assert farm.counts("cas1").requests == {"imap": 1}


def _pop_dialogue(host: str, port: int, ctx: ssl.SSLContext) -> list[object]:
    pop = poplib.POP3(host, port, timeout=5)
    try:
        seen: list[object] = [pop.getwelcome()]
        seen.append("STLS" in pop.capa())
        seen.append(pop.stls(context=ctx))
        seen.append("STLS" in pop.capa())
        seen.append(pop.user("user@lab.local"))
        seen.append(pop.pass_("secret"))
        seen.append(pop.stat())
        seen.append(pop.quit())
    finally:
        pop.close()
    return seen


async def test_pop_capa_stls_user_pass_quit(farm: casfarm.Farm) -> None:
    s = farm.server("cas3")
    seen = await trio.to_thread.run_sync(_pop_dialogue, s.host, s.ports["pop"], _ctx(farm))
    assert seen[0].startswith(b"+OK The Microsoft Exchange POP3 service is ready.")  # type: ignore[attr-defined]
    assert seen[1] is True and seen[3] is False
    assert seen[2].startswith(b"+OK Begin TLS")  # type: ignore[attr-defined]
    assert seen[5] == b"+OK User successfully logged on."
    assert seen[6] == (0, 0)
    assert seen[7].startswith(b"+OK Microsoft Exchange Server POP3 server signing off")  # type: ignore[attr-defined]


def _pops_welcome(host: str, port: int, ctx: ssl.SSLContext) -> bytes:
    pop = poplib.POP3_SSL(host, port, context=ctx, timeout=5)
    try:
        assert "STLS" not in pop.capa()
        welcome = pop.getwelcome()
        pop.quit()
    finally:
        pop.close()
    return welcome


async def test_pops_implicit_tls(farm: casfarm.Farm) -> None:
    s = farm.server("cas1")
    welcome = await trio.to_thread.run_sync(_pops_welcome, s.host, s.ports["pops"], _ctx(farm))
    assert welcome.startswith(b"+OK")


def _pop_login(host: str, port: int) -> bytes:
    pop = poplib.POP3(host, port, timeout=5)
    try:
        pop.user("user@lab.local")
        answer = pop.pass_("secret")
        pop.quit()
    finally:
        pop.close()
    return answer


@pytest.mark.parametrize("component", ["PopProxy", "ServerWideOffline"])
async def test_pop_is_refused_while_stopped_and_logs_on_after(
    farm: casfarm.Farm, component: str
) -> None:
    s = farm.server("cas2")
    farm.set_component("cas2", component, "Inactive", requester="HealthApi")
    for port in (s.ports["pop"], s.ports["pops"]):
        with pytest.raises(ConnectionRefusedError):
            await trio.to_thread.run_sync(_pop_login, s.host, port)
    farm.set_component("cas2", component, "Active", requester="HealthApi")
    answer = await trio.to_thread.run_sync(_pop_login, s.host, s.ports["pop"])
    assert answer == b"+OK User successfully logged on."


def _smtp_send(host: str, port: int, ctx: ssl.SSLContext, submission: bool) -> list[object]:
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        seen: list[object] = []
        code, _ = smtp.ehlo("client.lab.local")
        seen.append(code)
        seen.append(smtp.has_extn("starttls"))
        seen.append(smtp.starttls(context=ctx)[0])
        smtp.ehlo("client.lab.local")
        seen.append(smtp.has_extn("starttls"))
        if submission:
            seen.append(smtp.login("user@lab.local", "pw")[0])
        refused = smtp.sendmail("a@lab.local", ["b@lab.local"], b"Subject: hi\r\n\r\nbody\r\n")
        seen.append(refused)
        seen.append(smtp.rset()[0])
        seen.append(smtp.noop()[0])
    return seen


@pytest.mark.parametrize(("kind", "submission"), [("smtp", False), ("submission", True)])
async def test_smtp_ehlo_starttls_and_a_message(
    farm: casfarm.Farm, kind: str, submission: bool
) -> None:
    s = farm.server("cas1")
    seen = await trio.to_thread.run_sync(_smtp_send, s.host, s.ports[kind], _ctx(farm), submission)
    expected: list[object] = [250, True, 220, False]
    if submission:
        expected.append(235)
    expected += [{}, 250, 250]
    assert seen == expected
    assert farm.counts("cas1").requests == {"smtp": 1}


def _smtp_in_maintenance(host: str, port: int) -> tuple[bytes, int, tuple[int, bytes]]:
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        code, _ = smtp.ehlo("client.lab.local")
        banner = smtp.ehlo_resp or b""
        mail = smtp.mail("a@lab.local")
        smtp.quit()
    return banner, code, mail


@pytest.mark.parametrize(
    ("component", "state"),
    [
        ("FrontendTransport", "Inactive"),
        ("ServerWideOffline", "Inactive"),
        ("HubTransport", "Draining"),
        ("HubTransport", "Inactive"),
    ],
)
async def test_smtp_in_maintenance_accepts_ehlo_then_452_after_mail_from(
    farm: casfarm.Farm, component: str, state: str
) -> None:
    farm.set_component("cas2", component, state)
    s = farm.server("cas2")
    banner, code, mail = await trio.to_thread.run_sync(
        _smtp_in_maintenance, s.host, s.ports["smtp"]
    )
    assert code == 250 and banner.startswith(b"cas2.lab.local Hello")
    assert mail == (452, b"4.3.2 Service not active")
    farm.set_component("cas2", component, "Active")
    sent = await trio.to_thread.run_sync(_smtp_send, s.host, s.ports["smtp"], _ctx(farm), False)
    assert sent[-3:] == [{}, 250, 250]


async def test_maintenance_drains_hub_transport_first_and_stops_imap_pop(
    farm: casfarm.Farm,
) -> None:
    s = farm.server("cas3")
    farm.start_maintenance("cas3")
    components = farm.describe_server("cas3")["components"]
    assert isinstance(components, dict)
    hub, offline = components["HubTransport"], components["ServerWideOffline"]
    assert hub == {"state": "Draining", "requesters": {"Maintenance": "Draining"}}
    assert offline == {"state": "Inactive", "requesters": {"Maintenance": "Inactive"}}
    entries = farm.runtime("cas3").states.entries
    hub_at = entries[casfarm.Component.HUB_TRANSPORT, casfarm.Requester.MAINTENANCE].timestamp
    off_at = entries[casfarm.Component.SERVER_WIDE_OFFLINE, casfarm.Requester.MAINTENANCE].timestamp
    assert hub_at <= off_at
    _, _, mail = await trio.to_thread.run_sync(_smtp_in_maintenance, s.host, s.ports["smtp"])
    assert mail[0] == 452
    with pytest.raises(ConnectionRefusedError):
        await trio.to_thread.run_sync(_imap_login, s.host, s.ports["imaps"])
    farm.end_maintenance("cas3")
    assert farm.component_state("cas3", "HubTransport") is casfarm.ComponentState.ACTIVE
    assert await trio.to_thread.run_sync(_imap_login, s.host, s.ports["imap"]) == "OK"


async def test_smtp_out_of_order_and_unknown_commands(farm: casfarm.Farm) -> None:
    s = farm.server("cas3")
    stream = await trio.open_tcp_stream(s.host, s.ports["smtp"])
    buffer = b""

    async def reply() -> bytes:
        nonlocal buffer
        while b"\r\n" not in buffer:
            piece = await stream.receive_some(4096)
            assert piece
            buffer += piece
        line, _, buffer = buffer.partition(b"\r\n")
        return line

    assert (await reply()).startswith(b"220 cas3.lab.local Microsoft ESMTP MAIL Service ready")
    for command, answer in [
        (b"MAIL FROM:<a@b>", b"503 5.5.2 Send hello first"),
        (b"HELO x", b"250 cas3.lab.local Hello"),
        (b"RCPT TO:<a@b>", b"503 5.5.2 Need mail command"),
        (b"DATA", b"503 5.5.2 Need rcpt command"),
        (b"BOGUS", b"500 5.3.3 Unrecognized command"),
        (b"QUIT", b"221 2.0.0"),
    ]:
        await stream.send_all(command + b"\r\n")
        assert (await reply()).startswith(answer), command
    assert await stream.receive_some(10) == b""
    await stream.aclose()


async def test_overlong_line_ends_only_that_session(farm: casfarm.Farm) -> None:
    s = farm.server("cas1")
    stream = await trio.open_tcp_stream(s.host, s.ports["pop"])
    assert (await stream.receive_some(4096)).startswith(b"+OK")
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(10):
            await stream.send_all(b"x" * 65536)
    await stream.aclose()
    welcome = await trio.to_thread.run_sync(_pops_welcome, s.host, s.ports["pops"], _ctx(farm))
    assert welcome.startswith(b"+OK")
    assert farm.counts("cas1").errors == 0
