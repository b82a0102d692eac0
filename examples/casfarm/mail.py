"""IMAP4, POP3 and SMTP sessions as an Exchange front end speaks them.

Theory of operation: each session is a line dialogue over a trio stream with
Exchange's banners and answers. A server-side STARTTLS (IMAP STARTTLS, POP
STLS, SMTP STARTTLS) wraps the same transport in TLS and drops anything the
client pipelined in clear. Maintenance shows as Exchange shows it
(docs/exchange.md §2.5): IMAP and POP are stopped when ServerWideOffline or
their proxy component is Inactive, so their ports refuse connections
(casfarm.slotplan); a session accepted just before the stop is greeted with
`* BYE` / `-ERR` and closed. SMTP keeps its banner and EHLO and answers
`452 4.3.2 Service not active` to MAIL FROM while FrontendTransport or
ServerWideOffline is Inactive or HubTransport is not Active.
Logins are accepted whatever the credentials: the farm proves reachability,
not mailboxes.
"""

from __future__ import annotations

import base64
import email.utils
from typing import TYPE_CHECKING

import trio

from casfarm.components import Component
from casfarm.wire import LineReader

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime

_MAX_MESSAGE = 10 << 20
_IMAP_CAPS = (
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=NTLM UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
)


class _Session:
    """A line dialogue whose transport may be upgraded to TLS mid-way."""

    def __init__(self, stream: trio.abc.Stream, server: ServerRuntime) -> None:
        self.stream = stream
        self.server = server
        self.reader = LineReader(stream)
        self.tls = isinstance(stream, trio.SSLStream)

    async def send(self, *lines: str) -> None:
        await self.stream.send_all("".join(f"{line}\r\n" for line in lines).encode("utf-8"))

    async def line(self) -> str | None:
        raw = await self.reader.line()
        return None if raw is None else raw.decode("utf-8", "replace")

    async def start_tls(self) -> None:
        tls = self.server.wrap_tls(self.stream)
        await tls.do_handshake()
        self.stream = tls
        self.reader.replace_stream(tls)
        self.tls = True


def _verb(line: str) -> tuple[str, str]:
    verb, _, rest = line.strip().partition(" ")
    return verb.upper(), rest


def _exchange_tag(server: ServerRuntime) -> str:
    # Exchange appends its server name, base64 of UTF-16LE, to the mail banners.
    return base64.b64encode(server.fqdn.upper().encode("utf-16-le")).decode("ascii")


# -- IMAP4 -----------------------------------------------------------------


async def serve_imap(stream: trio.abc.Stream, server: ServerRuntime, *, starttls: bool) -> None:
    """Run one IMAP4 session (port 143 with STARTTLS, or 993 in TLS)."""
    session = _Session(stream, server)
    await server.gate()
    if not server.visible_states().accepts_sessions(Component.IMAP_PROXY):
        await session.send("* BYE Microsoft Exchange Server IMAP4 service is not available.")
        return
    server.counters.request("imap")
    await session.send(
        f"* OK The Microsoft Exchange IMAP4 service is ready. [{_exchange_tag(server)}]"
    )
    while (line := await session.line()) is not None:
        tag, _, rest = line.partition(" ")
        verb, _ = _verb(rest)
        if not tag or not verb:
            await session.send("* BAD Command Error. 10")
        elif verb == "CAPABILITY":
            caps = _IMAP_CAPS
            if starttls and not session.tls:
                caps += " STARTTLS"
            await session.send(f"* CAPABILITY {caps}", f"{tag} OK CAPABILITY completed.")
        elif verb == "STARTTLS" and starttls and not session.tls:
            await session.send(f"{tag} OK Begin TLS negotiation now.")
            await session.start_tls()
        elif verb == "LOGIN":
            await session.send(f"{tag} OK LOGIN completed.")
        elif verb == "NOOP":
            await session.send(f"{tag} OK NOOP completed.")
        elif verb == "LOGOUT":
            await session.send(
                "* BYE Microsoft Exchange Server IMAP4 server signing off.",
                f"{tag} OK LOGOUT completed.",
            )
            return
        else:
            await session.send(f"{tag} BAD Command Error. 10")


# -- POP3 ------------------------------------------------------------------


async def serve_pop(stream: trio.abc.Stream, server: ServerRuntime, *, starttls: bool) -> None:
    """Run one POP3 session (port 110 with STLS, or 995 in TLS)."""
    session = _Session(stream, server)
    await server.gate()
    if not server.visible_states().accepts_sessions(Component.POP_PROXY):
        await session.send("-ERR Microsoft Exchange Server POP3 service is not available.")
        return
    server.counters.request("pop")
    await session.send(
        f"+OK The Microsoft Exchange POP3 service is ready. [{_exchange_tag(server)}]"
    )
    while (line := await session.line()) is not None:
        verb, _ = _verb(line)
        if verb == "CAPA":
            caps = ["TOP", "UIDL", "SASL NTLM GSSAPI PLAIN", "USER"]
            if starttls and not session.tls:
                caps.append("STLS")
            await session.send("+OK", *caps, ".")
        elif verb == "STLS" and starttls and not session.tls:
            await session.send("+OK Begin TLS negotiation.")
            await session.start_tls()
        elif verb == "USER":
            await session.send("+OK")
        elif verb == "PASS":
            await session.send("+OK User successfully logged on.")
        elif verb == "STAT":
            await session.send("+OK 0 0")
        elif verb == "NOOP":
            await session.send("+OK")
        elif verb == "QUIT":
            await session.send("+OK Microsoft Exchange Server POP3 server signing off.")
            return
        else:
            await session.send("-ERR Protocol error. 14")


# -- SMTP ------------------------------------------------------------------


class _Envelope:
    def __init__(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []


def _ehlo_lines(server: ServerRuntime, session: _Session, submission: bool) -> list[str]:
    lines = [f"{server.fqdn} Hello [{server.host}]", "SIZE 37748736", "PIPELINING", "DSN"]
    lines += ["ENHANCEDSTATUSCODES"]
    if not session.tls:
        lines.append("STARTTLS")
    lines.append("AUTH LOGIN PLAIN" if submission else "AUTH NTLM")
    lines += ["8BITMIME", "BINARYMIME", "CHUNKING"]
    return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]


async def _read_data(session: _Session) -> bool:
    """Read a DATA body up to the lone dot; False when it ran over the size cap."""
    size = 0
    while (line := await session.reader.line()) is not None:
        if line == b".":
            return size <= _MAX_MESSAGE
        size += len(line) + 2
    raise trio.BrokenResourceError("client closed during DATA")


async def serve_smtp(stream: trio.abc.Stream, server: ServerRuntime, *, submission: bool) -> None:
    """Run one SMTP session (25: Default Frontend, 587: Client Frontend)."""
    session = _Session(stream, server)
    await server.gate()
    server.counters.request("smtp")
    when = email.utils.formatdate(localtime=False)
    await session.send(f"220 {server.fqdn} Microsoft ESMTP MAIL Service ready at {when}")
    envelope, greeted = _Envelope(), False
    while (line := await session.line()) is not None:
        verb, arg = _verb(line)
        if verb == "EHLO":
            greeted, envelope = True, _Envelope()
            await session.send(*_ehlo_lines(server, session, submission))
        elif verb == "HELO":
            greeted, envelope = True, _Envelope()
            await session.send(f"250 {server.fqdn} Hello [{server.host}]")
        elif verb == "STARTTLS" and not session.tls:
            await session.send("220 2.0.0 SMTP server ready")
            await session.start_tls()
            greeted, envelope = False, _Envelope()
        elif verb == "AUTH":
            await session.send("235 2.7.0 Authentication successful")
        elif verb == "MAIL":
            if not greeted:
                await session.send("503 5.5.2 Send hello first")
            elif not server.visible_states().accepts_mail():
                await session.send("452 4.3.2 Service not active")
            else:
                envelope = _Envelope()
                envelope.sender = arg
                await session.send("250 2.1.0 Sender OK")
        elif verb == "RCPT":
            if envelope.sender is None:
                await session.send("503 5.5.2 Need mail command")
            else:
                envelope.recipients.append(arg)
                await session.send("250 2.1.5 Recipient OK")
        elif verb == "DATA":
            if not envelope.recipients:
                await session.send("503 5.5.2 Need rcpt command")
                continue
            await session.send("354 Start mail input; end with <CRLF>.<CRLF>")
            if await _read_data(session):
                await session.send(
                    f"250 2.6.0 <{trio.current_time():.6f}@{server.fqdn}> Queued mail for delivery"
                )
            else:
                await session.send("552 5.3.4 Message size exceeds fixed maximum message size")
            envelope = _Envelope()
        elif verb == "RSET":
            envelope = _Envelope()
            await session.send("250 2.0.0 Resetting")
        elif verb == "NOOP":
            await session.send("250 2.0.0 OK")
        elif verb == "QUIT":
            await session.send("221 2.0.0 Service closing transmission channel")
            return
        else:
            await session.send("500 5.3.3 Unrecognized command")
