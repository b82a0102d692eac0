"""TLS sessions to resume toward each server, as HAProxy does by default.

A re-encrypting L7 frontend opens a TLS connection to a server for every client
connection (NTLM ties the two), so a new client costs a full handshake on both
sides. Offering the server's last session ticket skips the server's certificate
chain and its verification on caslb's side.

A session is kept per (server address, SNI): a ticket is never offered under
another name (HAProxy issue 3195: a check's SNI leaking into traffic through
reuse). Each connector owns one store, so a reload, which builds a new TLS
context, starts with none. TLS 1.3 sends its ticket after the handshake, so the
session is not read when the handshake ends but when the next connection to the
same server needs one: by then the last connection has read a response, and its
ticket with it. The stdlib copies a session on every read, so a ticket that was
resumed is kept as it is rather than read again.
"""

from __future__ import annotations

import ssl

import trio

from probes.wire import TlsSessions, ssl_object

Key = tuple[int, str, str, int]


class UpstreamSessions:
    """The sessions one connector resumes, and the connections still to read one from."""

    def __init__(self, limit: int = 1024) -> None:
        self._sessions = TlsSessions(limit)
        # per key, the last connection that made a full handshake: its ticket,
        # once it has one, is what the next connection offers
        self._unread: dict[Key, ssl.SSLObject] = {}

    def offer(self, stream: trio.SSLStream[trio.abc.Stream], key: Key) -> ssl.SSLSession | None:
        """Offer `key`'s session on `stream`, before its handshake; the one offered."""
        obj = ssl_object(stream)
        if obj is None:
            return None
        last = self._unread.pop(key, None)
        if last is not None:
            session = last.session
            if session is not None and session.has_ticket:
                self._sessions.keep(key, session)
        offered = self._sessions.get(key)
        if offered is not None:
            obj.session = offered
        return offered

    def handshaken(self, stream: trio.SSLStream[trio.abc.Stream], key: Key,
                   offered: ssl.SSLSession | None) -> None:
        """Note how `stream`'s handshake went: a refused ticket is forgotten, and a full
        handshake's own ticket is read when the next connection needs it."""
        obj = ssl_object(stream)
        if obj is None or (offered is not None and obj.session_reused):
            return
        if offered is not None:
            self._sessions.keep(key, None)
        self._unread[key] = obj

    def failed(self, key: Key) -> None:
        """The handshake failed: offer nothing from this server until one succeeds."""
        self._sessions.keep(key, None)
        self._unread.pop(key, None)


def session_key(context: ssl.SSLContext, sni: str | None, host: str, port: int) -> Key:
    """The key of a server's sessions under `context`."""
    return (id(context), sni or "", host, port)

