"""OWA and ECP forms-based authentication, decided: the logon redirect, the cookie, 440.

Theory of operation: a browser without a session is sent (302) to
`/owa/auth/logon.aspx?url=...&reason=0`; the form there POSTs the user's
credentials to `/owa/auth.owa`, which sets the `cadata` session cookie and
sends the browser back to where it was going. The cookie is signed with a key
the whole farm shares, as Exchange's is encrypted with the certificate every
front end shares, so a session survives landing on another server (no
affinity needed). A script request (OWA's XHRs) with a missing or expired
session gets 440 Login Timeout, which makes OWA show its logon page. The
session lasts `timeout` seconds from logon (Exchange's private-computer
default is 8 hours).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import urllib.parse
from dataclasses import dataclass, field

COOKIE = "cadata"
LOGON_PAGE = "/owa/auth/logon.aspx"
LOGON_POST = "/owa/auth.owa"
LOGOFF = "/owa/logoff.owa"
PRIVATE_TIMEOUT = 8 * 3600.0


@dataclass(frozen=True)
class Sessions:
    """Issues and checks OWA session cookies for the whole farm.

    Attributes:
        timeout: seconds a session lasts after logon.
        key: the farm's signing key.
    """

    timeout: float = PRIVATE_TIMEOUT
    key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"owa_session_timeout must be > 0, got {self.timeout!r}")

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.key, payload, hashlib.sha256).hexdigest()

    def issue(self, user: str, now: float) -> str:
        """A cookie value naming `user`, valid until `now` + timeout."""
        payload = f"{user}|{now + self.timeout:.3f}".encode()
        return base64.urlsafe_b64encode(payload).decode("ascii") + "." + self._sign(payload)

    def user_of(self, cookie_header: str | None, now: float) -> str | None:
        """The user of a live session named in a Cookie header, or None."""
        value = _cookie(cookie_header, COOKIE)
        if value is None or "." not in value:
            return None
        encoded, signature = value.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded.encode("ascii"))
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        user, _, expiry = payload.decode("utf-8", "replace").rpartition("|")
        try:
            live = now < float(expiry)
        except ValueError:
            return None
        return user if live else None


def _cookie(header: str | None, name: str) -> str | None:
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def is_script_request(method: str, target: str, headers: dict[str, str]) -> bool:
    """True for OWA's XHRs, which get 440 rather than a redirect when logged off."""
    path = target.split("?", 1)[0].lower()
    return (
        method == "POST"
        or "/service.svc" in path
        or headers.get("x-requested-with", "").lower() == "xmlhttprequest"
        or "x-owa-actionname" in headers
    )


def logon_redirect(host: str, target: str, reason: int = 0) -> str:
    """Where a browser without a session is sent: the logon page, with its way back."""
    back = urllib.parse.quote(f"https://{host}{target}", safe="").lower()
    return f"https://{host}{LOGON_PAGE}?url={back}&reason={reason}"


@dataclass(frozen=True)
class Logon:
    """The fields of a logon form post.

    Attributes:
        username: as typed (DOMAIN\\user, user@domain or user).
        password: as typed.
        destination: where to go after logon.
    """

    username: str
    password: str
    destination: str


def parse_logon(body: bytes, host: str) -> Logon:
    """The logon form's fields; a destination off this host becomes OWA's start page."""
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    destination = fields.get("destination", [""])[0]
    if not destination.lower().startswith(f"https://{host.lower()}/"):
        destination = f"https://{host}/owa/"
    return Logon(fields.get("username", [""])[0], fields.get("password", [""])[0], destination)


def session_cookie(value: str) -> str:
    """The Set-Cookie value carrying a session."""
    return f"{COOKIE}={value}; path=/; secure; HttpOnly"


def expired_cookie() -> str:
    """The Set-Cookie value that ends a session (logoff)."""
    return f"{COOKIE}=; expires=Thu, 01-Jan-1970 00:00:00 GMT; path=/; secure; HttpOnly"
