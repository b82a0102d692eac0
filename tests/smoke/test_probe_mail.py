"""IMAP, POP and SMTP checks against scripted loopback servers."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable

import pytest
import trio
import trustme

from probes.catalog import CheckKind
from probes.checks import CheckSpec, Reason, Target, run_check

FQDN = "cas1.lab.local"
# a reply function: command line → (reply, upgrade to TLS after sending it)
Replies = Callable[[str], tuple[str, bool]]



class MailServer:
    """A scripted line server: banner, then one reply per command line."""

    def __init__(self, ca: trustme.CA, banner: str, replies: Replies) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(FQDN).configure_cert(self.context)
        self.context.sni_callback = lambda _obj, name, _ctx: self.snis.append(name)
        self.banner = banner
        self.replies = replies
        self.snis: list[str | None] = []
        self.commands: list[str] = []  # "TLS" marks the upgrade
        self.pipelined: list[str] = []  # commands that came in the same flight as the last

    async def start(self, nursery: trio.Nursery, *, implicit_tls: bool = False) -> Target:
        async def handler(raw: trio.SocketStream) -> None:
            async with raw:
                try:
                    stream: trio.abc.Stream = raw
                    if implicit_tls:
                        stream = trio.SSLStream(raw, self.context, server_side=True)
                    await self.converse(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        return Target(FQDN, "127.0.0.1", listeners[0].socket.getsockname()[1])

    async def converse(self, stream: trio.abc.Stream) -> None:
        await stream.send_all(self.banner.encode())
        buffer = b""
        for _ in range(50):
            buffered = b"\n" in buffer
            while b"\n" not in buffer:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                buffer += chunk
            line, _, buffer = buffer.partition(b"\n")
            command = line.decode().strip()
            if buffered:
                self.pipelined.append(command)
            self.commands.append(command)
            reply, upgrade = self.replies(command)
            await stream.send_all(reply.encode())
            if upgrade:
                self.commands.append("TLS")
                stream = trio.SSLStream(stream, self.context, server_side=True)


def imap_replies(capabilities: str = "IMAP4rev1 STARTTLS") -> Replies:
    def reply(command: str) -> tuple[str, bool]:
        tag, _, verb = command.partition(" ")
        if verb == "CAPABILITY":
            return f"* CAPABILITY {capabilities}\r\n{tag} OK CAPABILITY completed.\r\n", False
        if verb == "STARTTLS":
            return f"{tag} OK Begin TLS negotiation now.\r\n", True
        if verb == "LOGOUT":
            return (
                f"* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n{tag} OK\r\n",
                False,
            )
        return f"{tag} BAD Command Error.\r\n", False

    return reply


def pop_replies(capabilities: tuple[str, ...] = ("TOP", "UIDL", "STLS")) -> Replies:
    def reply(command: str) -> tuple[str, bool]:
        if command == "CAPA":
            return "+OK\r\n" + "".join(f"{c}\r\n" for c in capabilities) + ".\r\n", False
        if command == "STLS":
            return "+OK Begin TLS negotiation\r\n", True
        if command == "QUIT":
            return "+OK Microsoft Exchange Server POP3 server signing off.\r\n", False
        return "-ERR Protocol error.\r\n", False

    return reply


def smtp_replies(
    mail_from: str = "250 2.1.0 Sender OK", starttls: str = "220 2.0.0 SMTP server ready",
    pipelining: bool = False,
) -> Replies:
    offered = "250-PIPELINING\r\n" if pipelining else ""

    def reply(command: str) -> tuple[str, bool]:
        verb = command.split(":")[0].split(" ")[0].upper()
        if verb == "EHLO":
            return (
                f"250-{FQDN} Hello [127.0.0.1]\r\n250-SIZE 37748736\r\n{offered}"
                "250-STARTTLS\r\n250 CHUNKING\r\n",
                False,
            )
        if verb == "STARTTLS":
            return f"{starttls}\r\n", starttls.startswith("220")
        if verb == "MAIL":
            return f"{mail_from}\r\n", False
        if verb == "RSET":
            return "250 2.0.0 Resetting\r\n", False
        if verb == "QUIT":
            return "221 2.0.0 Service closing transmission channel\r\n", False
        return "500 5.3.3 Unrecognized command\r\n", False

    return reply


IMAP_BANNER = "* OK The Microsoft Exchange IMAP4 service is ready.\r\n"
POP_BANNER = "+OK The Microsoft Exchange POP3 service is ready.\r\n"
SMTP_BANNER = f"220 {FQDN} Microsoft ESMTP MAIL Service ready\r\n"


async def test_imap_starttls_upgrades_then_asks_again(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: str
) -> None:
    server = MailServer(ca, IMAP_BANNER, imap_replies())
    target = await server.start(nursery)
    result = await run_check(
        CheckSpec(CheckKind.IMAP, tls=False, starttls=True, ca_file=ca_file), target
    )
    assert (result.ok, result.reason) == (True, Reason.OK)
    assert server.commands == ["p1 CAPABILITY", "p2 STARTTLS", "TLS", "p3 CAPABILITY", "p4 LOGOUT"]
    assert server.snis == [FQDN]


async def test_imap_and_pop_over_implicit_tls(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: str
) -> None:
    imap = await MailServer(ca, IMAP_BANNER, imap_replies()).start(nursery, implicit_tls=True)
    pop = await MailServer(ca, POP_BANNER, pop_replies()).start(nursery, implicit_tls=True)
    for kind, target in ((CheckKind.IMAP, imap), (CheckKind.POP, pop)):
        result = await run_check(CheckSpec(kind, ca_file=ca_file), target)
        assert result.ok, result


async def test_pop_stls(nursery: trio.Nursery, ca: trustme.CA, ca_file: str) -> None:
    server = MailServer(ca, POP_BANNER, pop_replies())
    target = await server.start(nursery)
    result = await run_check(
        CheckSpec(CheckKind.POP, tls=False, starttls=True, ca_file=ca_file), target
    )
    assert result.ok, result
    assert server.commands == ["CAPA", "STLS", "TLS", "CAPA", "QUIT"]


@pytest.mark.parametrize(
    ("kind", "banner", "replies", "starttls", "reason", "detail"),
    [
        (
            CheckKind.IMAP,
            "* BYE Service not available\r\n",
            imap_replies(),
            False,
            Reason.NOT_ACTIVE,
            "BYE",
        ),
        (
            CheckKind.IMAP,
            "HTTP/1.1 400 Bad\r\n",
            imap_replies(),
            False,
            Reason.BAD_BANNER,
            "HTTP/1.1",
        ),
        (
            CheckKind.IMAP,
            IMAP_BANNER,
            imap_replies("IMAP4rev1"),
            True,
            Reason.BAD_REPLY,
            "STARTTLS not offered",
        ),
        (
            CheckKind.POP,
            "-ERR Server unavailable\r\n",
            pop_replies(),
            False,
            Reason.NOT_ACTIVE,
            "-ERR",
        ),
        (CheckKind.POP, "SSH-2.0-OpenSSH\r\n", pop_replies(), False, Reason.BAD_BANNER, "SSH"),
        (
            CheckKind.POP,
            POP_BANNER,
            pop_replies(("TOP",)),
            True,
            Reason.BAD_REPLY,
            "STLS not offered",
        ),
        (
            CheckKind.POP,
            POP_BANNER,
            pop_replies(("X",) * 150),
            False,
            Reason.PROTOCOL_ERROR,
            "over 100",
        ),
        (
            CheckKind.SMTP,
            "554 5.3.2 Service not active\r\n",
            smtp_replies(),
            False,
            Reason.NOT_ACTIVE,
            "554",
        ),
        (CheckKind.SMTP, "hello there\r\n", smtp_replies(), False, Reason.BAD_BANNER, "malformed"),
        (
            CheckKind.SMTP,
            SMTP_BANNER,
            smtp_replies("550 5.7.1 No"),
            False,
            Reason.BAD_REPLY,
            "MAIL: 550",
        ),
        (
            CheckKind.SMTP,
            SMTP_BANNER,
            smtp_replies(starttls="454 4.7.0 TLS not available"),
            True,
            Reason.BAD_REPLY,
            "STARTTLS: 454",
        ),
        (
            CheckKind.SMTP,
            SMTP_BANNER,
            smtp_replies(starttls="220 go\r\n250 injected"),
            True,
            Reason.PROTOCOL_ERROR,
            "ahead of the TLS",
        ),
        (
            CheckKind.SMTP,
            "220-" + "x" * 5000 + "\r\n",
            smtp_replies(),
            False,
            Reason.PROTOCOL_ERROR,
            "line over",
        ),
    ],
)
async def test_mail_dialogue_failures(
    nursery: trio.Nursery,
    ca: trustme.CA,
    ca_file: str,
    kind: CheckKind,
    banner: str,
    replies: Replies,
    starttls: bool,
    reason: Reason,
    detail: str,
) -> None:
    target = await MailServer(ca, banner, replies).start(nursery)
    result = await run_check(CheckSpec(kind, tls=False, starttls=starttls, ca_file=ca_file), target)
    assert result.reason is reason and not result.ok
    assert detail in result.detail


async def test_smtp_sees_maintenance_that_a_tcp_check_misses(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: str
) -> None:
    server = MailServer(ca, SMTP_BANNER, smtp_replies("421 4.3.2 Service not active"))
    target = await server.start(nursery)
    tcp = await run_check(CheckSpec(CheckKind.TCP, tls=False), target)
    smtp = await run_check(
        CheckSpec(CheckKind.SMTP, tls=False, starttls=True, ca_file=ca_file), target
    )
    assert tcp.ok
    assert (smtp.ok, smtp.reason, smtp.detail) == (
        False,
        Reason.NOT_ACTIVE,
        "MAIL: 421 4.3.2 Service not active",
    )
    assert server.commands[-1] == "MAIL FROM:<>"


async def test_smtp_healthy_goes_through_mail_from_and_rset(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: str
) -> None:
    server = MailServer(ca, SMTP_BANNER, smtp_replies())
    target = await server.start(nursery)
    result = await run_check(
        CheckSpec(CheckKind.SMTP, tls=False, starttls=True, ca_file=ca_file), target
    )
    assert result.ok, result
    assert [c.split(" ")[0] for c in server.commands] == [
        "EHLO",
        "STARTTLS",
        "TLS",
        "EHLO",
        "MAIL",
        "RSET",
        "QUIT",
    ]


async def test_silent_mail_server_times_out_waiting_for_the_banner(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    target = await MailServer(ca, "", smtp_replies()).start(nursery)
    result = await run_check(CheckSpec(CheckKind.SMTP, tls=False, timeout=0.3), target)
    assert (result.reason, result.detail) == (
        Reason.TIMEOUT,
        "0.3s passed waiting for the banner reply",
    )


async def test_smtp_sends_mail_from_rset_and_quit_in_one_flight_when_pipelining(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server = MailServer(ca, SMTP_BANNER, smtp_replies(pipelining=True))
    result = await run_check(CheckSpec(CheckKind.SMTP, tls=False), await server.start(nursery))
    assert result.ok, result
    assert [c.split(" ")[0] for c in server.commands] == ["EHLO", "MAIL", "RSET", "QUIT"]
    assert server.pipelined == ["RSET", "QUIT"]


async def test_smtp_without_pipelining_waits_for_each_reply(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server = MailServer(ca, SMTP_BANNER, smtp_replies())
    result = await run_check(CheckSpec(CheckKind.SMTP, tls=False), await server.start(nursery))
    assert result.ok and server.pipelined == []


async def test_a_pipelined_mail_from_still_sees_a_server_in_maintenance(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    replies = smtp_replies(mail_from="421 4.3.2 Service not active", pipelining=True)
    server = MailServer(ca, SMTP_BANNER, replies)
    result = await run_check(CheckSpec(CheckKind.SMTP, tls=False), await server.start(nursery))
    assert (result.ok, result.reason) == (False, Reason.NOT_ACTIVE)


async def test_imaps_sends_logout_behind_capability(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: str
) -> None:
    server = MailServer(ca, IMAP_BANNER, imap_replies("IMAP4rev1"))
    target = await server.start(nursery, implicit_tls=True)
    result = await run_check(CheckSpec(CheckKind.IMAP, ca_file=ca_file), target)
    assert result.ok, result
    assert server.commands == ["p1 CAPABILITY", "p4 LOGOUT"]
    assert server.pipelined == ["p4 LOGOUT"]
