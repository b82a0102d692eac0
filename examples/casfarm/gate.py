"""Authentication on the wire: what IIS answers before a vdir's application runs.

Theory of operation: `admit` is called for every request that is not a health
check (those stay anonymous, as in Exchange). With the farm's authentication
off it admits everything. Otherwise it asks `casfarm.auth` (Basic, NTLM,
Negotiate) or `casfarm.forms` (OWA, ECP) for a decision and, unless the
decision is to serve, answers the request itself: 401 with the challenges,
the logon redirect, the logon page and form post, or 440 Login Timeout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from casfarm import forms
from casfarm.auth import FORMS_VDIRS, LAB_USERS, VDIR_SCHEMES, Accounts, Allow, ConnectionAuth
from casfarm.http import HttpExchange
from casfarm.ntlm import ServerNames
from casfarm.vdirs import Vdir

if TYPE_CHECKING:
    from casfarm.server import ServerRuntime

_HTML = ("Content-Type", "text/html; charset=utf-8")
UNAUTHORIZED_BODY = b"<h1>401 - Unauthorized: Access is denied due to invalid credentials.</h1>"


@dataclass(frozen=True)
class FarmAuth:
    """The farm's authentication: its accounts and its OWA sessions.

    Attributes:
        accounts: the users who may log on.
        sessions: OWA/ECP session cookies, shared by every server.
        vdirs: the vdirs that authenticate (None: all, as Exchange); the others
            serve anonymously, so a lab can authenticate one protocol's clients
            and leave the rest as they were.
    """

    accounts: Accounts
    sessions: forms.Sessions = field(default_factory=forms.Sessions)
    vdirs: frozenset[str] | None = None

    def covers(self, vdir: str) -> bool:
        """Whether requests to `vdir` must authenticate."""
        return self.vdirs is None or vdir in self.vdirs

    @classmethod
    def lab(
        cls,
        dns_domain: str,
        users: Mapping[str, str] | None = None,
        owa_session_timeout: float = forms.PRIVATE_TIMEOUT,
        vdirs: frozenset[str] | None = None,
    ) -> FarmAuth:
        """The farm's authentication for `dns_domain` (default users: `LAB_USERS`)."""
        accounts = Accounts.for_domain(dns_domain, LAB_USERS if users is None else users)
        return cls(accounts, forms.Sessions(timeout=owa_session_timeout), vdirs)

    def logins(self) -> list[str]:
        """Each user as curl's -u takes it: DOMAIN\\name:password."""
        domain = self.accounts.netbios_domain
        return [
            f"{domain}\\{name}:{password}" for name, password in self.accounts.passwords.items()
        ]

    def describe(self) -> dict[str, object]:
        """JSON-ready: the domain, the user names (never passwords), the session timeout."""
        return {
            "domain": self.accounts.netbios_domain,
            "users": sorted(self.accounts.passwords),
            "owa_session_timeout": self.sessions.timeout,
        }


def server_names(server: ServerRuntime, accounts: Accounts) -> ServerNames:
    """The names one server puts in its NTLM challenges."""
    return ServerNames(
        accounts.netbios_domain, server.name.upper(), accounts.dns_domain, server.fqdn
    )


async def unauthorized(ex: HttpExchange, challenges: tuple[str, ...]) -> None:
    """401 with one WWW-Authenticate per challenge; the connection stays open."""
    await ex.read_body(0)
    headers = [_HTML, *(("WWW-Authenticate", c) for c in challenges)]
    await ex.respond(401, UNAUTHORIZED_BODY, headers, reason="Unauthorized")


async def admit(ex: HttpExchange, server: ServerRuntime, vdir: Vdir, conn: ConnectionAuth) -> bool:
    """True when the request may reach `vdir`'s application; else it has been answered."""
    auth = server.auth
    if auth is None or not auth.covers(vdir.name):
        return True
    if vdir.name in FORMS_VDIRS:
        return await _forms(ex, auth, trio.current_time())
    schemes = VDIR_SCHEMES.get(vdir.name)
    if schemes is None:
        return True
    names = server_names(server, auth.accounts)
    decision = conn.authorize(
        schemes, ex.header("Authorization"), auth.accounts, names, time.time()
    )
    if isinstance(decision, Allow):
        return True
    await unauthorized(ex, decision.challenges)
    return False


def _host(ex: HttpExchange) -> str:
    return (ex.header("Host") or "localhost").strip()


async def _forms(ex: HttpExchange, auth: FarmAuth, now: float) -> bool:
    path = ex.target.split("?", 1)[0].lower()
    host = _host(ex)
    if path.startswith("/owa/auth/"):
        await _logon_page(ex)
    elif path == forms.LOGON_POST and ex.method == "POST":
        await _logon_post(ex, auth, host, now)
    elif path == forms.LOGOFF:
        await ex.read_body(0)
        location = forms.logon_redirect(host, "/owa/", reason=0)
        headers = [("Location", location), ("Set-Cookie", forms.expired_cookie())]
        await ex.respond(302, b"", headers, reason="Found")
    elif auth.sessions.user_of(ex.header("Cookie"), now) is not None:
        return True
    elif forms.is_script_request(ex.method, ex.target, _lower_headers(ex)):
        await ex.read_body(0)
        await ex.respond(440, b"", [_HTML], reason="Login Timeout")
    else:
        await ex.read_body(0)
        location = forms.logon_redirect(host, ex.target)
        await ex.respond(302, b"", [("Location", location)], reason="Found")
    return False


def _lower_headers(ex: HttpExchange) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in ex.request.headers}


async def _logon_page(ex: HttpExchange) -> None:
    await ex.read_body(0)
    page = (
        b"<!DOCTYPE html><html><head><title>Outlook</title></head><body>"
        b'<form action="/owa/auth.owa" method="POST" name="logonForm">'
        b'<input type="hidden" name="destination" value=""/>'
        b'<input name="username"/><input name="password" type="password"/>'
        b'<input type="hidden" name="flags" value="4"/></form></body></html>'
    )
    await ex.respond(200, page, [_HTML, ("Cache-Control", "no-cache, no-store")], reason="OK")


async def _logon_post(ex: HttpExchange, auth: FarmAuth, host: str, now: float) -> None:
    logon = forms.parse_logon(await ex.read_body(64 * 1024), host)
    if not auth.accounts.check_password(logon.username, logon.password):
        location = forms.logon_redirect(host, "/owa/", reason=2)
        await ex.respond(302, b"", [("Location", location)], reason="Found")
        return
    user = auth.accounts.canonical(logon.username)
    cookie = forms.session_cookie(auth.sessions.issue(user, now))
    headers = [("Location", logon.destination), ("Set-Cookie", cookie)]
    await ex.respond(302, b"", headers, reason="Found")
