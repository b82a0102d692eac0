"""The client mix: one trio task per simulated client, each a bounded loop.

Theory of operation. Each client behaves like its real counterpart where it
matters for failover: it connects through `connect.open_stream` (so a DNS
round-robin client pays its OS's connect timeout on a silent address and moves
on at once after a reset), reuses its connection while it can (OWA and EWS keep
alive, so a server that stays reachable keeps getting their requests), holds
long polls open (MAPI NotificationWait, ActiveSync Ping, the Outlook Anywhere
channel pair) under its own timeouts, and reconnects after any error. Every
request, session or long poll ends as one RequestRecord: success, or the kind
of error the user would have seen.

HTTP success is any status below 500: an unauthenticated OWA GET earns a 401 or
302 from real Exchange, and that is the server answering. A request on a reused
keep-alive connection that is reset before any answer is retried once on a new
connection and not counted, as browsers and WinHTTP do.

The kept-alive OWA clients (KEPT_ALIVE) never close their connection on their
own, as Outlook keeps its EWS and MAPI connections for hours: after a server
recovers they show whether the balancer sends them back to it, or only new
connections.

Besides the long-lived clients, a "new connections" load opens fresh TLS
connections at a steady rate, as browsers and Outlook do all day: each does a
full handshake (SNI = the design's OWA name), one OWA GET, and closes. One task
launches them on a schedule; a CapacityLimiter bounds how many are in flight.
A balancer that hands such a connection to a silent server costs the client
its whole handshake timeout; this is what makes that cost visible.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio
from casfarm.ewsxml import SAMPLE_REQUEST

from perf.failover.connect import ClientError, Endpoint, map_os_error, open_stream
from perf.failover.http import HttpConnection, exchange, header
from perf.failover.mail import imap_session, pop_session, smtp_session
from perf.failover.model import CHOSEN_AS, KEPT_ALIVE, NEW_CONNECTIONS, NTLM_EWS
from perf.failover.ntlmclient import NtlmClient
from perf.failover.recorder import Recorder


@dataclass(frozen=True)
class ClientTimeouts:
    """The clients' own timeouts, in seconds.

    Attributes:
        connect: per address; Windows gives up on a silent host after ~21 s.
        request: for a short request (OWA, EWS, Autodiscover, mail dialogues).
        long_poll: extra patience beyond a long poll's expected duration.
        think: pause between a client's requests, and before reconnecting.
        handshake: connect plus TLS handshake of a new-connections client, the
            patience of a browser or Outlook before it gives up on a connection.
    """

    connect: float = 21.0
    request: float = 10.0
    long_poll: float = 5.0
    think: float = 0.25
    handshake: float = 5.0


@dataclass(frozen=True)
class LoadMix:
    """How many clients of each protocol run at once.

    Attributes:
        clients: protocol -> number of concurrent clients.
        per_connection: requests a keep-alive client sends on one connection.
        long_poll: how long the farm holds a Ping / NotificationWait (its heartbeat).
        channel_life: how long an Outlook Anywhere channel pair is kept open.
        new_connections_per_second: fresh TLS connections (one OWA GET each)
            opened per second, in total; 0 for none.
        new_connections_in_flight: at most this many of them open at once; a
            connection due while the limit is reached waits for a slot.
    """

    clients: Mapping[str, int]
    per_connection: int = 8
    long_poll: float = 2.0
    channel_life: float = 4.0
    new_connections_per_second: float = 0.0
    new_connections_in_flight: int = 200

    def __post_init__(self) -> None:
        if self.new_connections_per_second < 0:
            raise ValueError(
                f"new_connections_per_second {self.new_connections_per_second} is negative"
            )
        if self.new_connections_in_flight < 1:
            raise ValueError(
                f"new_connections_in_flight {self.new_connections_in_flight} is below 1"
            )


SOAP = SAMPLE_REQUEST  # a whole GetFolder: casfarm answers anything less with a SOAP fault
POX = (
    b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
    b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>user1@lab.local'
    b"</EMailAddress></Request></Autodiscover>"
)
ONE_GB = 1 << 30


@dataclass(frozen=True)
class ShortRequest:
    """A short HTTP request some protocol's clients repeat."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    long_poll: bool = False


def _mapi(request_type: str) -> ShortRequest:
    return ShortRequest(
        "POST",
        "/mapi/emsmdb/?MailboxId=user1@lab.local",
        (("Content-Type", "application/mapi-http"), ("X-RequestType", request_type)),
        b"\x00" * 64,
        long_poll=request_type == "NotificationWait",
    )


# Each keep-alive client cycles through its protocol's requests; MAPI clients
# alternate an Execute with a NotificationWait long poll, as Outlook does.
SHORT: dict[str, tuple[ShortRequest, ...]] = {
    "owa": (ShortRequest("GET", "/owa/"),),
    KEPT_ALIVE: (ShortRequest("GET", "/owa/"),),
    "ews": (
        ShortRequest(
            "POST", "/EWS/Exchange.asmx", (("Content-Type", "text/xml; charset=utf-8"),), SOAP
        ),
    ),
    "autodiscover": (
        ShortRequest(
            "POST", "/Autodiscover/Autodiscover.xml", (("Content-Type", "text/xml"),), POX
        ),
    ),
    "mapi": (_mapi("Execute"), _mapi("NotificationWait")),
}
KEEP_ALIVE = frozenset({"owa", "ews", "mapi", KEPT_ALIVE})
STALE = frozenset({"reset", "eof"})  # how a dropped kept-alive connection shows


class Client:
    """One simulated client of one protocol."""

    def __init__(
        self,
        protocol: str,
        endpoint: Endpoint,
        recorder: Recorder,
        timeouts: ClientTimeouts,
        mix: LoadMix,
        index: int,
    ) -> None:
        self.protocol = protocol
        self.endpoint = endpoint
        self.recorder = recorder
        self.timeouts = timeouts
        self.mix = mix
        self._rotation = itertools.count(index)

    async def _open(self) -> trio.abc.Stream:
        stream, _ = await open_stream(
            self.endpoint, self.timeouts.connect, next(self._rotation)
        )
        return stream

    async def _http(self) -> HttpConnection:
        return HttpConnection(await self._open(), self.endpoint.server_name)

    async def _attempt(self, body: Callable[[], Awaitable[str | None]]) -> bool:
        """Run one request; record it; True when it succeeded."""
        started = self.recorder.now()
        try:
            server = await body()
        except ClientError as exc:
            self.recorder.add(self.protocol, started, None, exc.kind)
            return False
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.recorder.add(self.protocol, started, None, map_os_error(exc).kind)
            return False
        self.recorder.add(self.protocol, started, server, None)
        return True

    async def run(self) -> None:
        """Loop until cancelled."""
        if self.protocol in SHORT:
            await self._short_loop(SHORT[self.protocol])
        elif self.protocol == "eas":
            await self._simple_loop(self._ping)
        elif self.protocol == "rpc":
            await self._simple_loop(self._channel_pair)
        elif self.protocol in ("imap", "pop", "smtp"):
            session = {"imap": imap_session, "pop": pop_session, "smtp": smtp_session}
            await self._simple_loop(lambda: self._mail(session[self.protocol]))
        else:
            raise ValueError(f"no client for protocol {self.protocol!r}")

    async def _simple_loop(self, body: Callable[[], Awaitable[str | None]]) -> None:
        while True:
            await self._attempt(body)
            await trio.sleep(self.timeouts.think)

    async def _short_loop(self, requests: tuple[ShortRequest, ...]) -> None:
        per_conn = self.mix.per_connection if self.protocol in KEEP_ALIVE else 1
        cycle = itertools.cycle(requests)
        while True:
            held: list[HttpConnection] = []  # the connection, once opened
            try:
                turns = itertools.count() if self.protocol == KEPT_ALIVE else range(per_conn)
                for _ in turns:
                    ok = await self._attempt(functools.partial(self._on, held, next(cycle)))
                    if not ok or not held or not held[0].reusable():
                        break
                    await trio.sleep(self.timeouts.think)
            finally:
                for conn in held:
                    await conn.aclose()
            await trio.sleep(self.timeouts.think)

    async def _on(self, held: list[HttpConnection], req: ShortRequest) -> str | None:
        if held:
            try:
                return await self._request(held[0], req)
            except ClientError as exc:
                if exc.kind not in STALE or not exc.before_response:
                    raise
                # a kept-alive connection the server dropped: browsers and
                # WinHTTP retry once on a fresh connection without telling the user
                await held.pop().aclose()
        held.append(await self._http())
        return await self._request(held[0], req)

    async def _request(self, conn: HttpConnection, req: ShortRequest) -> str | None:
        timeout = self.timeouts.request
        if req.long_poll:
            timeout += self.mix.long_poll + self.timeouts.long_poll
        head, _ = await exchange(conn, req.method, req.target, req.headers, req.body, timeout)
        if head.status_code >= 500:
            raise ClientError(f"http {head.status_code}")
        return self.recorder.server_named(header(head, "X-FEServer"))

    async def _ping(self) -> str | None:
        conn = await self._http()
        try:
            target = (
                "/Microsoft-Server-ActiveSync?Cmd=Ping&User=user1&DeviceId=perf1&DeviceType=Perf"
            )
            head, _ = await exchange(
                conn,
                "POST",
                target,
                (("Content-Type", "application/vnd.ms-sync.wbxml"),),
                b"\x03\x01\x6a\x00",
                self.mix.long_poll + self.timeouts.long_poll,
            )
        finally:
            await conn.aclose()
        if head.status_code >= 500:
            raise ClientError(f"http {head.status_code}")
        return self.recorder.server_named(header(head, "X-FEServer"))

    async def _channel_pair(self) -> str | None:
        """Open RPC_OUT_DATA then RPC_IN_DATA, keep both alive for a while."""
        target = "/rpc/rpcproxy.dll?cas1.lab.local:6001"
        out = await self._http()
        inn: HttpConnection | None = None
        try:
            await out.send_head("RPC_OUT_DATA", target, [("Content-Length", "76")])
            await out.send_body(b"\x05" * 76)
            await out.end_body()
            head = await out.read_head(self.timeouts.request)
            if head.status_code >= 500:
                raise ClientError(f"http {head.status_code}")
            server = self.recorder.server_named(header(head, "X-FEServer"))
            inn = await self._http()
            await inn.send_head("RPC_IN_DATA", target, [("Content-Length", str(ONE_GB))])
            await self._keep_channels(out, inn)
            return server
        finally:
            for conn in (out, inn):
                if conn is not None:
                    await conn.aclose()

    async def _keep_channels(self, out: HttpConnection, inn: HttpConnection) -> None:
        """Send IN keep-alives and read OUT data until the channel's life ends."""
        idle = self.timeouts.request

        async def send_in() -> None:
            while True:
                await inn.send_body(b"\x05\x00\x14\x03" + b"\x00" * 24)
                await trio.sleep(0.5)

        try:
            with trio.move_on_after(self.mix.channel_life):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_in)
                    async for _ in out.body_chunks(idle):
                        pass
                    raise ClientError("eof", "out channel ended")
        except* (ClientError, OSError, trio.BrokenResourceError) as group:
            # either channel failing ends the pair; report the first failure
            raise map_os_error(group.exceptions[0]) from None

    async def _mail(
        self, session: Callable[[trio.abc.Stream, Recorder], Awaitable[str | None]]
    ) -> str | None:
        stream = await self._open()
        try:
            with trio.fail_after(self.timeouts.request):
                return await session(stream, self.recorder)
        except trio.TooSlowError:
            raise ClientError("timeout", f"{self.protocol} dialogue") from None
        finally:
            await trio.aclose_forcefully(stream)


class NewConnections(Client):
    """The new-connections load: fresh TLS connections, one OWA GET each, on a schedule."""

    def __init__(
        self, endpoint: Endpoint, recorder: Recorder, timeouts: ClientTimeouts, mix: LoadMix
    ) -> None:
        super().__init__(NEW_CONNECTIONS, endpoint, recorder, timeouts, mix, 0)

    async def run_for(self, duration: float) -> None:
        """Launch `rate × duration` connections, evenly spaced, and wait for them."""
        rate = self.mix.new_connections_per_second
        if rate <= 0:
            return
        limiter = trio.CapacityLimiter(self.mix.new_connections_in_flight)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for index in range(math.floor(duration * rate)):
                await trio.sleep_until(start + index / rate)
                nursery.start_soon(self._one, limiter, index)

    async def _one(self, limiter: trio.CapacityLimiter, index: int) -> None:
        async with limiter:
            await self._attempt(functools.partial(self._fresh_get, index))

    async def _fresh_get(self, index: int) -> str | None:
        patience = self.timeouts.handshake
        stream: trio.abc.Stream | None = None
        with trio.move_on_after(patience):
            # index rotates DNS answers, so a DNS client starts on each address in turn
            stream, _ = await open_stream(self.endpoint, patience, index)
        if stream is None:
            raise ClientError("timeout", f"connect and TLS handshake over {patience:g} s")
        conn = HttpConnection(stream, self.endpoint.server_name)
        try:
            head, _ = await exchange(conn, "GET", "/owa/", (), b"", self.timeouts.request)
        finally:
            await conn.aclose()
        if head.status_code >= 500:
            raise ClientError(f"http {head.status_code}")
        return self.recorder.server_named(header(head, "X-FEServer"))


async def run_clients(
    endpoints: Mapping[str, Endpoint],
    recorder: Recorder,
    timeouts: ClientTimeouts,
    mix: LoadMix,
    duration: float,
) -> None:
    """Run the whole mix for `duration` seconds, then cancel every client."""
    with trio.move_on_after(duration):
        async with trio.open_nursery() as nursery:
            if "owa" in endpoints:
                fresh = NewConnections(endpoints["owa"], recorder, timeouts, mix)
                nursery.start_soon(fresh.run_for, duration)
            index = 0
            for protocol, count in mix.clients.items():
                endpoint = endpoints.get(CHOSEN_AS.get(protocol, protocol))
                if endpoint is None:
                    continue
                for _ in range(count):
                    client: Client | NtlmClient = (
                        NtlmClient(endpoint, recorder, timeouts.connect, timeouts.request,
                                   timeouts.think, index) if protocol == NTLM_EWS
                        else Client(protocol, endpoint, recorder, timeouts, mix, index))
                    nursery.start_soon(client.run)
                    index += 1
