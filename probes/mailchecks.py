"""IMAP, POP and SMTP check dialogues over a :class:`~probes.wire.Session`.

Each dialogue reads the banner, asks for capabilities, optionally upgrades to
TLS (STARTTLS / STLS, certificate checked against the server's FQDN) and says
goodbye. The SMTP one goes on to ``MAIL FROM:<>`` and ``RSET`` because a server
in maintenance (ServerWideOffline Inactive) still accepts TCP and sends its
banner, and only refuses mail with ``4.3.2 Service not active`` (docs/exchange.md
§2.6): a check that stops at the banner is blind to it.

Round trips are what a check costs most after the TLS handshake, so IMAP's
LOGOUT rides behind the last CAPABILITY, and SMTP's MAIL FROM, RSET and QUIT
go in one write when the server offers PIPELINING (RFC 2920); every reply is
still read and checked in order.

Every loop over server lines is bounded, and a line is at most a few KiB
(``Session.readline``), so a chatty or malformed server cannot hold a check
beyond its timeout or its memory.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable

import trio

from probes.wire import CheckFailed, Reason, Session

_MAX_LINES = 100  # capability lists are ~20 lines; more is a broken or hostile peer
_EHLO_NAME = "caslb-probe"
_GOODBYE_TIMEOUT = 1.0


async def _goodbye(farewell: Awaitable[object]) -> None:
    # the verdict is in before the goodbye; a server that hangs up rudely is still healthy
    with contextlib.suppress(CheckFailed), trio.move_on_after(_GOODBYE_TIMEOUT):
        await farewell


# --- IMAP ---------------------------------------------------------------------------


async def _imap_command(session: Session, tag: str, command: str, then: bytes = b"") -> list[str]:
    """Send a tagged command (and `then`, pipelined behind it); return its
    untagged lines, fail unless tagged OK."""
    await session.send(f"{tag} {command}\r\n".encode() + then)
    return await _imap_reply(session, tag, command)


async def _imap_reply(session: Session, tag: str, command: str) -> list[str]:
    session.phase = f"waiting for the {command} reply"
    untagged = []
    for _ in range(_MAX_LINES):
        line = await session.readline()
        if not line.startswith(f"{tag} "):
            untagged.append(line)
            continue
        if line[len(tag) + 1 :].upper().startswith("OK"):
            return untagged
        raise CheckFailed(Reason.BAD_REPLY, f"{command}: {line[:120]}")
    raise CheckFailed(Reason.PROTOCOL_ERROR, f"{command}: over {_MAX_LINES} lines")


async def imap(session: Session, starttls: ssl.SSLContext | None) -> str:
    """Banner, CAPABILITY, optional STARTTLS (then CAPABILITY again), LOGOUT."""
    session.phase = "waiting for the banner"
    banner = await session.readline()
    if banner.upper().startswith("* BYE"):
        raise CheckFailed(Reason.NOT_ACTIVE, banner[:120])
    if not banner.upper().startswith(("* OK", "* PREAUTH")):
        raise CheckFailed(Reason.BAD_BANNER, banner[:120])
    if starttls is None:
        # LOGOUT rides behind CAPABILITY (RFC 3501 5.5): one round trip less
        await _imap_command(session, "p1", "CAPABILITY", then=b"p4 LOGOUT\r\n")
        await _goodbye(_imap_reply(session, "p4", "LOGOUT"))
        return banner[:80]
    capabilities = " ".join(await _imap_command(session, "p1", "CAPABILITY")).upper()
    if "STARTTLS" not in capabilities.split():
        raise CheckFailed(Reason.BAD_REPLY, "STARTTLS not offered")
    await _imap_command(session, "p2", "STARTTLS")
    await session.start_tls(starttls)
    await _imap_command(session, "p3", "CAPABILITY", then=b"p4 LOGOUT\r\n")
    await _goodbye(_imap_reply(session, "p4", "LOGOUT"))
    return banner[:80]


# --- POP3 ---------------------------------------------------------------------------


async def _pop_command(session: Session, command: str, *, multiline: bool) -> list[str]:
    session.phase = f"waiting for the {command} reply"
    await session.send(f"{command}\r\n".encode())
    status = await session.readline()
    if not status.startswith("+OK"):
        raise CheckFailed(Reason.BAD_REPLY, f"{command}: {status[:120]}")
    if not multiline:
        return []
    lines: list[str] = []
    for _ in range(_MAX_LINES):
        line = await session.readline()
        if line == ".":
            return lines
        lines.append(line)
    raise CheckFailed(Reason.PROTOCOL_ERROR, f"{command}: over {_MAX_LINES} lines")


async def pop(session: Session, starttls: ssl.SSLContext | None) -> str:
    """Banner, CAPA, optional STLS (then CAPA again), QUIT."""
    session.phase = "waiting for the banner"
    banner = await session.readline()
    if banner.startswith("-ERR"):
        raise CheckFailed(Reason.NOT_ACTIVE, banner[:120])
    if not banner.startswith("+OK"):
        raise CheckFailed(Reason.BAD_BANNER, banner[:120])
    capabilities = [c.upper() for c in await _pop_command(session, "CAPA", multiline=True)]
    if starttls is not None:
        if "STLS" not in capabilities:
            raise CheckFailed(Reason.BAD_REPLY, "STLS not offered")
        await _pop_command(session, "STLS", multiline=False)
        await session.start_tls(starttls)
        await _pop_command(session, "CAPA", multiline=True)
    await _goodbye(_pop_command(session, "QUIT", multiline=False))
    return banner[:80]


# --- SMTP ---------------------------------------------------------------------------


def _not_active(code: int, text: str) -> bool:
    return code == 421 or "4.3.2" in text


async def _smtp_reply(
    session: Session, what: str, malformed: Reason = Reason.PROTOCOL_ERROR
) -> tuple[int, str]:
    """Read one (possibly multi-line) reply: its code and its joined text."""
    session.phase = f"waiting for the {what} reply"
    texts = []
    for _ in range(_MAX_LINES):
        line = await session.readline()
        code, more, text = line[:3], line[3:4], line[4:]
        if not code.isdigit() or more not in ("-", " ", ""):
            raise CheckFailed(malformed, f"{what}: malformed reply {line[:120]!r}")
        texts.append(text)
        if more != "-":
            return int(code), "\n".join(texts)
    raise CheckFailed(Reason.PROTOCOL_ERROR, f"{what}: over {_MAX_LINES} lines")


async def _smtp_command(session: Session, command: str, expect: int) -> str:
    await session.send(f"{command}\r\n".encode())
    return await _smtp_expect(session, command, expect)


async def _smtp_expect(session: Session, command: str, expect: int) -> str:
    """Read the reply to `command`; its text if its code is `expect`."""
    verb = command.partition(":")[0].split()[0]  # "MAIL FROM:<>" -> "MAIL"
    code, text = await _smtp_reply(session, verb)
    if code == expect:
        return text
    detail = f"{verb}: {code} {text.splitlines()[0] if text else ''}".rstrip()
    raise CheckFailed(Reason.NOT_ACTIVE if _not_active(code, text) else Reason.BAD_REPLY, detail)


async def _ehlo(session: Session) -> set[str]:
    """EHLO; the extension keywords the server offers."""
    text = await _smtp_command(session, f"EHLO {_EHLO_NAME}", 250)
    return {line.split(" ")[0] for line in text.upper().splitlines()[1:]}


async def smtp(session: Session, starttls: ssl.SSLContext | None) -> str:
    """Banner, EHLO, optional STARTTLS (then EHLO again), MAIL FROM:<>, RSET, QUIT."""
    code, banner = await _smtp_reply(session, "banner", Reason.BAD_BANNER)
    if code != 220:
        refused = _not_active(code, banner) or code == 554
        reason = Reason.NOT_ACTIVE if refused else Reason.BAD_BANNER
        raise CheckFailed(reason, f"{code} {banner.splitlines()[0] if banner else ''}".rstrip())
    extensions = await _ehlo(session)
    if starttls is not None:
        if "STARTTLS" not in extensions:
            raise CheckFailed(Reason.BAD_REPLY, "STARTTLS not offered")
        await _smtp_command(session, "STARTTLS", 220)
        await session.start_tls(starttls)
        extensions = await _ehlo(session)
    if "PIPELINING" in extensions:
        # RFC 2920: the three go in one flight and their replies come in order,
        # each still read and checked: two round trips less
        await session.send(b"MAIL FROM:<>\r\nRSET\r\nQUIT\r\n")
        await _smtp_expect(session, "MAIL FROM:<>", 250)
        await _smtp_expect(session, "RSET", 250)
        await _goodbye(_smtp_expect(session, "QUIT", 221))
    else:
        await _smtp_command(session, "MAIL FROM:<>", 250)
        await _smtp_command(session, "RSET", 250)
        await _goodbye(_smtp_command(session, "QUIT", 221))
    return f"220 {banner.splitlines()[0] if banner else ''}"[:80]
