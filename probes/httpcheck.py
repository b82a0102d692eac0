"""The Exchange healthcheck.htm probe over h11.

``GET /<vdir>/healthcheck.htm HTTP/1.1`` with ``Host`` (and, by the session,
SNI) set to the server's FQDN, and ``Connection: close`` unless the caller
keeps the connection for the next check (probes.kept). Healthy means status
200 and a body starting ``200 OK``; with ``expect_fqdn`` the name after
``<br/>`` must be the server's own, which catches a probe that a NAT or a
misconfigured address sent to the wrong server (docs/exchange.md §2.2, §6 #13).
An unhealthy Exchange vdir resets the connection after reading the request;
the session reports that as RESET or CLOSED.
"""

from __future__ import annotations

import h11

from probes.wire import CheckFailed, Reason, Session

_MAX_BODY = 4096  # a healthy body is ~40 bytes; a foreign page needs only its start
_HEALTHY = b"200 OK"


def _request(fqdn: str, path: str, keep_alive: bool) -> h11.Request:
    headers = [("Host", fqdn), ("User-Agent", "caslb-probe"), ("Accept", "*/*")]
    if not keep_alive:
        headers.append(("Connection", "close"))
    return h11.Request(method="GET", target=path, headers=headers)


async def _next_event(conn: h11.Connection, session: Session) -> h11.Event:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise CheckFailed(Reason.PROTOCOL_ERROR, f"bad HTTP response: {exc}") from None
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:  # pragma: no cover - only after our own EndOfMessage
            raise CheckFailed(Reason.PROTOCOL_ERROR, "response after the end of the exchange")
        data = await session.receive_some()
        if not data and conn.their_state is h11.SEND_RESPONSE:
            raise CheckFailed(Reason.CLOSED, "server closed the connection without a response")
        conn.receive_data(data)


async def _exchange(conn: h11.Connection, session: Session) -> tuple[h11.Response, bytes]:
    response: h11.Response | None = None
    body = bytearray()
    while len(body) < _MAX_BODY:
        event = await _next_event(conn, session)
        if isinstance(event, h11.Response):
            response = event
            session.phase = "reading the response body"
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if response is None:  # pragma: no cover - h11 yields a Response before any body
        raise CheckFailed(Reason.PROTOCOL_ERROR, "no response head")
    return response, bytes(body[:_MAX_BODY])


async def healthcheck(
    session: Session, path: str, *, expect_fqdn: bool, keep_alive: bool = False
) -> str:
    """Run the GET on an open (TLS) session; returns a success detail.

    With `keep_alive`, `session.reusable` says afterwards whether the exchange
    ended cleanly on a connection both sides keep open.

    Raises:
        CheckFailed: BAD_STATUS, BAD_BODY, WRONG_SERVER, or a wire failure.
    """
    session.reusable = False
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16384)
    session.phase = "sending the request"
    request = _request(session.fqdn, path, keep_alive)
    await session.send(conn.send(request) + conn.send(h11.EndOfMessage()))
    session.phase = "waiting for the response"
    response, body = await _exchange(conn, session)
    session.reusable = (
        conn.our_state is h11.DONE and conn.their_state is h11.DONE and not conn.trailing_data[0]
    )
    if response.status_code != 200:
        reason = response.reason.decode("latin-1")
        raise CheckFailed(Reason.BAD_STATUS, f"HTTP {response.status_code} {reason}".rstrip())
    if not body.startswith(_HEALTHY):
        raise CheckFailed(Reason.BAD_BODY, f"body starts {body[:40]!r}, not '200 OK'")
    named = body[len(_HEALTHY) :].partition(b"<br/>")[2].strip().decode("utf-8", "replace")
    if expect_fqdn and named.lower() != session.fqdn.lower():
        raise CheckFailed(Reason.WRONG_SERVER, f"answered by {named!r}, expected {session.fqdn!r}")
    return f"HTTP 200 {named}".rstrip()
