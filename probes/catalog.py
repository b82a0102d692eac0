"""The Exchange client protocols as data.

One row per protocol a CAS front end serves: where it lives (virtual directory or
port), how its health is checked, and the timeouts a balancer in front of it should
use. Everything Exchange-specific that the shorthand config, the probes and the
frontends need comes from here, so a fact about Exchange is written once.

The facts and their Microsoft sources are in docs/exchange.md §1 (ports,
traffic, idle timeouts) and §2 (vdir → component). Idle timeouts sit above
Exchange's own keep-alives (15–30 min) so that Exchange, not the balancer,
ends idle sessions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CheckKind(enum.Enum):
    """How a protocol's health is checked."""

    HEALTHCHECK = "healthcheck"  # GET /<vdir>/healthcheck.htm over TLS
    TCP = "tcp"  # connect only
    IMAP = "imap"  # banner, CAPABILITY, optional STARTTLS, LOGOUT
    POP = "pop"  # banner, CAPA, optional STLS, QUIT
    SMTP = "smtp"  # banner, EHLO, optional STARTTLS, MAIL FROM, RSET, QUIT


@dataclass(frozen=True)
class ExchangeProtocol:
    """One Exchange client protocol as a balancer sees it.

    Attributes:
        name: short lowercase name used in configs, metrics and the CLI.
        component: the server component whose state gates its health check.
        vdir: the virtual directory (HTTP protocols), None for mail protocols.
        port: the client-facing port.
        implicit_tls: True when the port speaks TLS from the first byte.
        check: how its health is checked.
        check_timeout: default timeout of one check, in seconds.
        idle_timeout: idle timeout a balancer should allow, in seconds.
        first_response_timeout: how long a healthy server may stay silent after
            the connection opens (banner protocols) or after the client's first
            flight (TLS) before the attempt is abandoned, in seconds.
        long_lived: True when requests or sessions routinely outlive a drain
            grace (long polls, endless channels, IDLE), so a server going DOWN
            should have its connections reset.
        server_speaks_first: True for banner protocols (IMAP, POP, SMTP in clear).
        starttls_port: the port where a mail protocol is offered in clear with
            an upgrade (IMAP STARTTLS 143, POP STLS 110, SMTP STARTTLS 25); None
            for HTTP protocols.
    """

    name: str
    component: str
    vdir: str | None
    port: int
    implicit_tls: bool
    check: CheckKind
    check_timeout: float
    idle_timeout: float
    first_response_timeout: float
    long_lived: bool
    server_speaks_first: bool = False
    starttls_port: int | None = None

    @property
    def healthcheck_path(self) -> str | None:
        """The path Exchange answers health on, or None for mail protocols."""
        return None if self.vdir is None else f"{self.vdir}/healthcheck.htm"


_MIN = 60.0


def _http(
    name: str, component: str, vdir: str, idle_minutes: float, long_lived: bool
) -> ExchangeProtocol:
    return ExchangeProtocol(
        name=name,
        component=component,
        vdir=vdir,
        port=443,
        implicit_tls=True,
        check=CheckKind.HEALTHCHECK,
        check_timeout=2.0,
        idle_timeout=idle_minutes * _MIN,
        first_response_timeout=1.0,
        long_lived=long_lived,
    )


def _mail(
    name: str,
    component: str,
    port: int,
    tls: bool,
    check: CheckKind,
    idle_minutes: float,
    starttls_port: int,
) -> ExchangeProtocol:
    return ExchangeProtocol(
        name=name,
        component=component,
        vdir=None,
        port=port,
        implicit_tls=tls,
        check=check,
        check_timeout=3.0,
        idle_timeout=idle_minutes * _MIN,
        first_response_timeout=1.0,
        long_lived=name == "imap",
        server_speaks_first=not tls,
        starttls_port=starttls_port,
    )


PROTOCOLS: dict[str, ExchangeProtocol] = {
    p.name: p
    for p in (
        _http("owa", "OwaProxy", "/owa", 15, long_lived=True),
        _http("ecp", "EcpProxy", "/ecp", 15, long_lived=False),
        _http("ews", "EwsProxy", "/EWS", 30, long_lived=True),
        _http("autodiscover", "AutoDiscoverProxy", "/Autodiscover", 5, long_lived=False),
        _http("eas", "ActiveSyncProxy", "/Microsoft-Server-ActiveSync", 60, long_lived=True),
        _http("oab", "OabProxy", "/OAB", 15, long_lived=False),
        _http("rpc", "RpcProxy", "/rpc", 30, long_lived=True),
        _http("mapi", "MapiProxy", "/mapi", 30, long_lived=True),
        _mail("imap", "ImapProxy", 993, True, CheckKind.IMAP, 30, starttls_port=143),
        _mail("pop", "PopProxy", 995, True, CheckKind.POP, 10, starttls_port=110),
        _mail("smtp", "FrontendTransport", 25, False, CheckKind.SMTP, 15, starttls_port=25),
    )
}

HTTP_PROTOCOLS: tuple[str, ...] = tuple(n for n, p in PROTOCOLS.items() if p.vdir is not None)
MAIL_PROTOCOLS: tuple[str, ...] = tuple(n for n, p in PROTOCOLS.items() if p.vdir is None)


def protocol(name: str) -> ExchangeProtocol:
    """Look a protocol up by name, case-insensitively.

    Raises:
        KeyError: with a message listing the known names.
    """
    try:
        return PROTOCOLS[name.lower()]
    except KeyError:
        known = ", ".join(PROTOCOLS)
        raise KeyError(f"unknown protocol {name!r} (known: {known})") from None


def protocol_for_path(path: str) -> ExchangeProtocol | None:
    """The protocol whose virtual directory prefixes `path`, case-insensitively.

    Only the path is looked at, never the query string: routing on the query is
    what ProxyShell abused (`/autodiscover/autodiscover.json?@x/mapi/...`).
    """
    bare = path.split("?", 1)[0].lower()
    for p in PROTOCOLS.values():
        if p.vdir is None:
            continue
        vdir = p.vdir.lower()
        if bare == vdir or bare.startswith(vdir + "/"):
            return p
    return None
