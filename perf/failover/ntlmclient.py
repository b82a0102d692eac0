"""An Outlook-style EWS client that logs on with NTLM once per connection.

Theory of operation. Outlook opens a connection, runs the NTLM handshake on it
(NEGOTIATE → 401 with a CHALLENGE → AUTHENTICATE → 200; pyspnego computes the
messages, as it does for requests_ntlm and exchangelib), then sends request
after request on that connection with no Authorization: the connection is
the logon. What a design costs such a client shows in three counts the
anonymous clients cannot show:

- a 401 to a request on a logged-on connection: the balancer moved the
  connection, or shared it, and the server it reached does not know it. The
  client logs on again on the same connection and resends, once, as
  requests_ntlm does;
- a logon after the first: a new connection after a failure, or the 401 above;
- a failed request: an error, or a 401 even after logging on again.

Each request ends as one RequestRecord (protocol NTLM_EWS, so the generic
figures cover it) and one AuthAttempt with its logons and refusals.
A kept-alive connection the server dropped before answering is replaced and
the request resent once, as WinHTTP does, at the price of a logon.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import h11
import spnego
import trio
from casfarm.ewsxml import SAMPLE_REQUEST

from perf.failover.connect import ClientError, Endpoint, map_os_error, open_stream
from perf.failover.http import HttpConnection, exchange, header
from perf.failover.model import NTLM_EWS, AuthAttempt
from perf.failover.recorder import Recorder

USER = "LAB\\alice"
PASSWORD = "Passw0rd"  # casfarm's lab user (casfarm.auth.LAB_USERS)
EWS = "/EWS/Exchange.asmx"
SOAP_HEADERS = (("Content-Type", "text/xml; charset=utf-8"),)
SOAP = SAMPLE_REQUEST  # a whole GetFolder: casfarm answers anything less with a SOAP fault
STALE = frozenset({"reset", "eof"})


@dataclass
class _Tally:
    """What one request cost so far."""

    logons: int = 0
    refused: int = 0
    server: str | None = field(default=None)


class NtlmClient:
    """One authenticating EWS client: one connection while it works, one logon on it."""

    def __init__(
        self, endpoint: Endpoint, recorder: Recorder, connect_timeout: float,
        request_timeout: float, think: float, index: int,
    ) -> None:
        self.endpoint = endpoint
        self.recorder = recorder
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.think = think
        self.index = index
        self._conn: HttpConnection | None = None
        self._logged_on = False
        self._rotation = index

    async def run(self) -> None:
        """Request, think, request... until cancelled."""
        try:
            while True:
                await self._attempt()
                await trio.sleep(self.think)
        finally:
            await self._drop()

    async def _attempt(self) -> None:
        started = self.recorder.now()
        tally = _Tally()
        error: str | None = None
        try:
            await self._request(tally)
        except ClientError as exc:
            error = exc.kind
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = map_os_error(exc).kind
        if error is not None:
            await self._drop()
        self.recorder.add(NTLM_EWS, started, tally.server, error)
        self.recorder.add_auth(AuthAttempt(
            self.index, started, self.recorder.now(), error is None, tally.logons, tally.refused
        ))

    async def _request(self, tally: _Tally) -> None:
        reused = self._conn is not None
        try:
            await self._serve(tally)
        except ClientError as exc:
            if not (reused and exc.kind in STALE and exc.before_response):
                raise
            await self._drop()  # dropped while idle: a new connection, and a new logon
            await self._serve(tally)

    async def _serve(self, tally: _Tally) -> None:
        conn = await self._connection()
        for _ in range(2):  # one logon again after a refusal, then give up
            if not self._logged_on:
                tally.logons += 1
                await self._logon(conn, tally)
            head = await self._post(conn, ())
            if head.status_code == 401:
                tally.refused += 1
                self._logged_on = False
                continue
            if head.status_code >= 400:
                raise ClientError(f"http {head.status_code}")
            tally.server = self.recorder.server_named(header(head, "X-FEServer"))
            return
        raise ClientError("http 401", "refused after logging on again")

    async def _logon(self, conn: HttpConnection, tally: _Tally) -> None:
        """The NTLM handshake on `conn`; raises unless it ends logged on."""
        ntlm = spnego.client(USER, PASSWORD, protocol="ntlm")
        offer = await self._post(conn, _authorization(ntlm.step()))
        challenge = (header(offer, "WWW-Authenticate") or "").partition(" ")
        if offer.status_code != 401 or challenge[0] != "NTLM" or not challenge[2]:
            tally.refused += offer.status_code == 401
            raise ClientError(f"http {offer.status_code}", "no NTLM challenge")
        answer = ntlm.step(base64.b64decode(challenge[2]))
        head = await self._post(conn, _authorization(answer))
        if head.status_code == 401:
            tally.refused += 1
            raise ClientError("http 401", "logon refused")
        if head.status_code >= 400:
            raise ClientError(f"http {head.status_code}")
        self._logged_on = True

    async def _post(self, conn: HttpConnection, auth: tuple[tuple[str, str], ...]) -> h11.Response:
        head, _ = await exchange(conn, "POST", EWS, (*SOAP_HEADERS, *auth), SOAP,
                                 self.request_timeout)
        if not conn.reusable() and head.status_code < 400:
            raise ClientError("eof", "the server closed the connection", before_response=False)
        return head

    async def _connection(self) -> HttpConnection:
        if self._conn is None:
            stream, _ = await open_stream(self.endpoint, self.connect_timeout, self._rotation)
            self._rotation += 1
            self._conn = HttpConnection(stream, self.endpoint.server_name)
            self._logged_on = False
        return self._conn

    async def _drop(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
        self._conn, self._logged_on = None, False


def _authorization(message: bytes | None) -> tuple[tuple[str, str], ...]:
    return (("Authorization", "NTLM " + base64.b64encode(message or b"").decode("ascii")),)
