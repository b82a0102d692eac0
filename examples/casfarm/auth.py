"""Who may use a virtual directory: IIS's Basic and Windows authentication, decided.

Theory of operation: each vdir offers the schemes Exchange's defaults give it
(`VDIR_SCHEMES`). Basic authenticates one request. NTLM, bare or inside a
Negotiate header, authenticates the TCP connection: the NEGOTIATE → CHALLENGE
→ AUTHENTICATE exchange runs over one connection, the challenge is kept in that
connection's `ConnectionAuth`, and once it succeeds every later request on the
connection is that user's. An AUTHENTICATE on a connection that holds no
challenge fails, which is what a balancer that moves or shares connections
causes. The decisions are values (`Allow`, `Refuse`); `casfarm.gate` answers
them on the wire. OWA and ECP use forms instead (`casfarm.forms`).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from casfarm import ntlm

NEGOTIATE, NTLM, BASIC = "Negotiate", "NTLM", "Basic"
# Exchange 2016/2019 defaults (Get-*VirtualDirectory: *Authentication, IISAuthenticationMethods).
VDIR_SCHEMES: Mapping[str, tuple[str, ...]] = {
    "ews": (NEGOTIATE, NTLM),
    "oab": (NEGOTIATE, NTLM),
    "mapi": (NEGOTIATE, NTLM),
    "autodiscover": (NEGOTIATE, NTLM, BASIC),
    "rpc": (NEGOTIATE, NTLM, BASIC),
    "eas": (BASIC,),
}
FORMS_VDIRS = frozenset({"owa", "ecp"})
LAB_USERS: Mapping[str, str] = {"alice": "Passw0rd"}
LAB_DOMAIN = "LAB"  # the NetBIOS name of lab.local, the default namespace's domain


def netbios_name(dns_domain: str) -> str:
    """A domain's NetBIOS name: its first label, uppercased (lab.local → LAB)."""
    return dns_domain.split(".", 1)[0].upper()


@dataclass(frozen=True)
class Accounts:
    """The domain's users, as the farm's domain controller would know them.

    Attributes:
        netbios_domain: e.g. "LAB".
        dns_domain: e.g. "lab.local".
        passwords: password by lowercase user name.
    """

    netbios_domain: str
    dns_domain: str
    passwords: Mapping[str, str]

    @classmethod
    def for_domain(cls, dns_domain: str, users: Mapping[str, str]) -> Accounts:
        """The accounts of `dns_domain` (its NetBIOS name is its first label, uppercased)."""
        for user, password in users.items():
            if not user or any(c in user for c in "\\@:") or not password:
                raise ValueError(f"bad lab user {user!r}: want a bare name and a password")
        return cls(netbios_name(dns_domain), dns_domain, {u.lower(): p for u, p in users.items()})

    def password(self, user: str, domain: str = "") -> str | None:
        """The password of `user` in `domain`, or None when there is no such account.

        `user` may carry its domain: DOMAIN\\user or user@dns.domain. An empty
        domain means this one, as on a member server.
        """
        if "\\" in user:
            domain, user = user.split("\\", 1)
        elif "@" in user:
            user, domain = user.split("@", 1)
        if domain.lower() not in ("", ".", self.netbios_domain.lower(), self.dns_domain.lower()):
            return None
        return self.passwords.get(user.lower())

    def check_password(self, user: str, password: str) -> bool:
        """True for a right password (forms and Basic logons)."""
        known = self.password(user)
        return known is not None and known == password

    def canonical(self, user: str) -> str:
        """DOMAIN\\user, as IIS logs an authenticated user."""
        bare = user.split("\\", 1)[-1].split("@", 1)[0]
        return f"{self.netbios_domain}\\{bare.lower()}"


@dataclass(frozen=True)
class Allow:
    """Serve the request as `user` (DOMAIN\\name)."""

    user: str


@dataclass(frozen=True)
class Refuse:
    """Answer 401 with these WWW-Authenticate values, keeping the connection open."""

    challenges: tuple[str, ...]


@dataclass
class ConnectionAuth:
    """What one TCP connection has said about who it is. One per connection.

    Attributes:
        challenge: the CHALLENGE sent on it and not yet answered.
        scheme: the header scheme (NTLM or Negotiate) that challenge went under.
        user: whom the connection authenticated as, once it has.
    """

    challenge: ntlm.Challenge | None = None
    scheme: str = NTLM
    user: str | None = None
    random: Callable[[int], bytes] = field(default=os.urandom, repr=False)

    def authorize(
        self,
        schemes: tuple[str, ...],
        authorization: str | None,
        accounts: Accounts,
        names: ntlm.ServerNames,
        now: float,
    ) -> Allow | Refuse:
        """Decide one request on this connection, as IIS would.

        Args:
            schemes: what the vdir offers, e.g. ("Negotiate", "NTLM").
            authorization: the request's Authorization header, if any.
            accounts: who may log on.
            names: the server's names, for a challenge.
            now: Unix time, for the challenge's timestamp.
        """
        offer = Refuse(tuple(_offer(s, names) for s in schemes))
        scheme, _, token = (authorization or "").strip().partition(" ")
        wanted = next((s for s in schemes if s.lower() == scheme.lower()), None)
        if wanted is None:
            if self.user is not None and not authorization:
                return Allow(self.user)
            return offer
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return offer
        if wanted == BASIC:
            return _basic(raw, accounts, offer)
        return self._ntlm(wanted, raw, accounts, names, now, offer)

    def _ntlm(
        self,
        scheme: str,
        raw: bytes,
        accounts: Accounts,
        names: ntlm.ServerNames,
        now: float,
        offer: Refuse,
    ) -> Allow | Refuse:
        pending, self.challenge, self.user = self.challenge, None, None
        try:
            kind = ntlm.message_type(raw)
            if kind == ntlm.NEGOTIATE:
                flags = ntlm.negotiate_flags(raw)
                self.challenge = ntlm.build_challenge(flags, names, self.random(8), now)
                self.scheme = scheme
                encoded = base64.b64encode(self.challenge.message).decode("ascii")
                return Refuse((f"{scheme} {encoded}",))
            if kind != ntlm.AUTHENTICATE or pending is None:
                return offer
            answer = ntlm.parse_authenticate(raw, pending.flags)
        except ntlm.NtlmError:
            return offer  # SPNEGO (Kerberos) or garbage: start again, as IIS does
        password = accounts.password(answer.user, answer.domain)
        if password is None or not ntlm.verify_v2(answer, password, pending.server_challenge):
            return offer
        self.user = accounts.canonical(answer.user)
        return Allow(self.user)


def _offer(scheme: str, names: ntlm.ServerNames) -> str:
    return f'Basic realm="{names.dns_computer}"' if scheme == BASIC else scheme


def _basic(raw: bytes, accounts: Accounts, offer: Refuse) -> Allow | Refuse:
    user, sep, password = raw.decode("utf-8", "replace").partition(":")
    if sep and accounts.check_password(user, password):
        return Allow(accounts.canonical(user))
    return offer
