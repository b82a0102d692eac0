"""The network side of a check: connect, TLS, read lines, and name what went wrong.

Theory of operation
-------------------
A check is a short dialogue over one connection. :class:`Session` owns that
connection and is the single place where trio and ssl exceptions are turned
into a :class:`CheckFailed` carrying a :class:`Reason`, in the spirit of
HAProxy's check status codes (L4CON, L4TOUT, L6RSP, L7STS...): the dialogues
in ``httpcheck`` and ``mailchecks`` never see a raw socket error.

A session also records the *phase* it is in ("connecting", "TLS handshake",
"waiting for the banner"...), so when the caller's deadline cancels the check
the timeout can say where it struck: a timeout while connecting is
``CONNECT_TIMEOUT``, anywhere later it is ``TIMEOUT`` with the phase as detail.

TLS always runs with ``https_compatible=True``: a server that drops the
connection without a close_notify (as Exchange's health responder does) reads
as a plain end of stream, reported as ``CLOSED``, not as a TLS failure.
"""

from __future__ import annotations

import enum
import errno
import functools
import ipaddress
import socket
import ssl
from collections.abc import Collection

import trio

from probes.local_resources import describe_errno, local_resource_errno

_MAX_LINE = 4096


class Reason(enum.Enum):
    """Why a check passed or failed; the value is the human wording."""

    OK = "ok"
    REFUSED = "connection refused"
    CONNECT_TIMEOUT = "connect timeout"
    CONNECT_ERROR = "connect error"
    RESET = "connection reset"
    CLOSED = "connection closed"
    TLS_ERROR = "tls error"
    CERT_ERROR = "certificate error"
    TIMEOUT = "timeout"
    PROTOCOL_ERROR = "protocol error"
    BAD_STATUS = "unexpected status"
    BAD_BODY = "unexpected body"
    WRONG_SERVER = "wrong server"
    BAD_BANNER = "bad banner"
    BAD_REPLY = "unexpected reply"
    NOT_ACTIVE = "service not active"
    CHECK_ERROR = "check error"  # the check itself broke: a bug, reported not raised
    # The balancer ran out of fds or buffers: says nothing about the server, so
    # the runner skips the result (probes/local_resources.py).
    LOCAL_RESOURCES = "balancer out of resources"

    @property
    def haproxy_status(self) -> str:
        """The nearest HAProxy ``check_status`` code, for dashboards built on HAProxy's."""
        return _HAPROXY_STATUS[self]


_HAPROXY_STATUS = {
    Reason.OK: "L7OK",
    Reason.REFUSED: "L4CON",
    Reason.CONNECT_TIMEOUT: "L4TOUT",
    Reason.CONNECT_ERROR: "L4CON",
    Reason.RESET: "L7RSP",
    Reason.CLOSED: "L7RSP",
    Reason.TLS_ERROR: "L6RSP",
    Reason.CERT_ERROR: "L6RSP",
    Reason.TIMEOUT: "L7TOUT",
    Reason.PROTOCOL_ERROR: "L7RSP",
    Reason.BAD_STATUS: "L7STS",
    Reason.BAD_BODY: "L7RSP",
    Reason.WRONG_SERVER: "L7RSP",
    Reason.BAD_BANNER: "L7RSP",
    Reason.BAD_REPLY: "L7STS",
    Reason.NOT_ACTIVE: "L7STS",
    Reason.CHECK_ERROR: "UNK",
    Reason.LOCAL_RESOURCES: "UNK",
}


class CheckFailed(Exception):
    """A check failed for a known reason; raised inside a check, caught by run_check."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


_CONTEXTS: dict[tuple[bool, str | None], ssl.SSLContext] = {}


def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """A client TLS context: verified against ``ca_file`` (or the system CAs), or not at all.

    Contexts are cached: loading a CA file on every check would cost more than
    the check. A reload that finds a CA file renewed forgets it
    (`forget_tls_contexts`).

    Raises:
        ValueError: the CA file cannot be loaded, naming it.
    """
    key = (verify, ca_file)
    if (cached := _CONTEXTS.get(key)) is None:
        cached = _CONTEXTS[key] = _load_tls_context(verify, ca_file)
    return cached


def forget_tls_contexts(ca_files: Collection[str]) -> None:
    """Load these CA files again at their next check: they were renewed."""
    for key in [key for key in _CONTEXTS if key[1] in ca_files]:
        del _CONTEXTS[key]


def _load_tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load ca file {ca_file!r}: {exc}") from None


async def _open_tcp(host: str, port: int) -> trio.abc.Stream:
    # trio's open_tcp_stream races a name's addresses in a nursery of its own,
    # about 0.12 ms of CPU per connection here; a check mostly dials one literal.
    family = literal_family(host)
    if family is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@functools.lru_cache(maxsize=1024)
def literal_family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP literal, None for a host name.

    Memoised: parsing the address on every connection cost more than the
    connect's own Python work, and a farm has few distinct server addresses.
    """
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _connect_failure(exc: OSError, where: str) -> CheckFailed:
    resource = local_resource_errno(exc)
    if resource is not None:
        return CheckFailed(Reason.LOCAL_RESOURCES,
                           f"connecting to {where}: {describe_errno(resource)}")
    # open_tcp_stream wraps per-address errors in a group under a generic OSError
    cause = exc.__cause__
    errors = list(cause.exceptions) if isinstance(cause, BaseExceptionGroup) else [exc]
    first = errors[0]
    if isinstance(first, socket.gaierror):
        return CheckFailed(Reason.CONNECT_ERROR, f"cannot resolve {where}: {first}")
    if isinstance(first, ConnectionRefusedError):
        return CheckFailed(Reason.REFUSED, f"{where} refused the connection")
    if isinstance(first, ConnectionResetError):
        return CheckFailed(Reason.RESET, f"{where} reset the connection")
    if isinstance(first, OSError) and first.errno == errno.ETIMEDOUT:
        return CheckFailed(Reason.CONNECT_TIMEOUT, f"connecting to {where} timed out")
    text = first.strerror if isinstance(first, OSError) and first.strerror else str(first)
    return CheckFailed(Reason.CONNECT_ERROR, f"{where}: {text}")


def _broken(exc: BaseException, phase: str) -> CheckFailed:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return CheckFailed(Reason.CERT_ERROR, cause.verify_message or str(cause))
    if isinstance(cause, ssl.SSLError):
        return CheckFailed(Reason.TLS_ERROR, f"{cause.reason or cause} {phase}")
    if isinstance(cause, ConnectionResetError):
        return CheckFailed(Reason.RESET, f"reset {phase}")
    return CheckFailed(Reason.RESET, f"connection broken {phase}: {cause}")


class TlsSessions:
    """TLS sessions to resume, one per (context, server name, address), as HAProxy's
    checks do: a resumed handshake skips the certificate chain and its signature
    checks, the dearest part of a check that runs every second.

    A session comes only from a handshake that verified the server under the
    same context, and a server that changed its certificate (or its ticket keys)
    refuses the ticket, so the next handshake is a full, verified one.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._sessions: dict[tuple[int, str, str, int], ssl.SSLSession] = {}

    def get(self, key: tuple[int, str, str, int]) -> ssl.SSLSession | None:
        """The session to offer, if any."""
        return self._sessions.get(key)

    def keep(self, key: tuple[int, str, str, int], session: ssl.SSLSession | None) -> None:
        """Remember `session` (None forgets)."""
        self._sessions.pop(key, None)
        if session is not None:
            if len(self._sessions) >= self._limit:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[key] = session


SESSIONS = TlsSessions()


def ssl_object(stream: trio.SSLStream[trio.abc.Stream]) -> ssl.SSLObject | None:
    # trio does not take a session to offer; its SSLObject is where the stdlib
    # takes one, and setting it before the handshake is the documented way.
    obj = getattr(stream, "_ssl_object", None)
    return obj if isinstance(obj, ssl.SSLObject) else None


class Session:
    """One check's connection to one server.

    Args:
        fqdn: the server's name: TLS SNI and certificate name.
        host: the address to dial.
        port: the port to dial.
    """

    def __init__(self, fqdn: str, host: str, port: int) -> None:
        self.fqdn = fqdn
        self.host = host
        self.port = port
        self.phase = "connecting"
        self._stream: trio.abc.Stream | None = None
        self._buffer = bytearray()
        self._tls: tuple[tuple[int, str, str, int], ssl.SSLObject] | None = None
        self._offered: ssl.SSLSession | None = None
        # For probes.kept: when the connection was ready to carry checks, bytes
        # read so far, and whether the last exchange left it fit for another.
        self.opened_at = 0.0
        self.received = 0
        self.reusable = False

    @property
    def where(self) -> str:
        """The dialled endpoint, for messages."""
        return f"{self.host}:{self.port}"

    async def connect(self) -> None:
        """Open the TCP connection."""
        self.phase = "connecting"
        try:
            self._stream = await _open_tcp(self.host, self.port)
        except OSError as exc:
            raise _connect_failure(exc, self.where) from None
        self.opened_at = trio.current_time()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Run a TLS handshake over the open connection (implicit TLS or after STARTTLS)."""
        if self._buffer:
            # bytes sent before the handshake would be trusted as if encrypted
            raise CheckFailed(Reason.PROTOCOL_ERROR, "server sent data ahead of the TLS handshake")
        self.phase = "during the TLS handshake"
        tls = trio.SSLStream(
            self._opened(), context, server_hostname=self.fqdn, https_compatible=True
        )
        self._stream = tls
        key = (id(context), self.fqdn, self.host, self.port)
        obj = ssl_object(tls)
        offered = SESSIONS.get(key)
        if obj is not None and offered is not None:
            obj.session = offered
            self._offered = offered
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            SESSIONS.keep(key, None)
            raise _broken(exc, self.phase) from None
        if obj is not None:
            self._tls = (key, obj)
        self.opened_at = trio.current_time()

    async def send(self, data: bytes) -> None:
        """Send all of ``data``."""
        try:
            await self._opened().send_all(data)
        except trio.BrokenResourceError as exc:
            raise _broken(exc, f"sending, {self.phase}") from None

    async def receive_some(self) -> bytes:
        """Receive the next bytes, or b"" at end of stream (buffered bytes first)."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        try:
            data = bytes(await self._opened().receive_some(65536))
        except trio.BrokenResourceError as exc:
            raise _broken(exc, self.phase) from None
        self.received += len(data)
        return data

    async def readline(self) -> str:
        """One CRLF-terminated line, decoded leniently, without its line ending.

        Raises:
            CheckFailed: CLOSED at end of stream, PROTOCOL_ERROR on an overlong line.
        """
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_LINE:
                raise CheckFailed(Reason.PROTOCOL_ERROR, f"line over {_MAX_LINE} bytes")
            data = await self.receive_some()
            if not data:
                raise CheckFailed(Reason.CLOSED, f"server closed the connection {self.phase}")
            self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        if len(line) > _MAX_LINE:
            raise CheckFailed(Reason.PROTOCOL_ERROR, f"line over {_MAX_LINE} bytes")
        self._buffer[:] = rest
        return line.rstrip(b"\r").decode("utf-8", "replace")

    @property
    def resumed(self) -> bool:
        """Whether the TLS handshake resumed an earlier check's session."""
        return self._tls is not None and self._tls[1].session_reused

    def passed(self) -> None:
        """The check passed: keep its TLS session (a TLS 1.3 ticket arrives after
        the handshake, so only now is there one) for the next check to resume.

        Once per connection: later checks riding a kept connection have nothing
        new to keep, and reading the session again would cost the copy below."""
        if self._tls is not None:
            (key, obj), self._tls = self._tls, None
            if obj.session_reused and self._offered is not None:
                # The offered ticket still works: keep it rather than read the new
                # one, since the stdlib copies a session (its certificate chain
                # parsed again) on every read and write, ~0.4 ms each.
                SESSIONS.keep(key, self._offered)
            else:
                SESSIONS.keep(key, obj.session)

    async def aclose(self) -> None:
        """Close at once: a probe owes a broken server no graceful goodbye."""
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)
            self._stream = None

    def close_now(self) -> None:
        """Close without waiting (no goodbye, no checkpoint), for clean-up paths
        that cannot await."""
        stream = self._stream
        self._stream = None
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()

    def _opened(self) -> trio.abc.Stream:
        if self._stream is None:
            raise RuntimeError("session is not connected")
        return self._stream
