"""Checks against tiny loopback servers that misbehave on purpose.

Each server plays one way an Exchange front end can fail (docs/exchange.md §6) and
the test asserts the reason the check reports. casfarm covers the same faults
end to end in test_probe_farm.py; these pin the wire details (Host, SNI,
STARTTLS sequencing, malformed peers) that a farm would not exercise.
"""

from __future__ import annotations

import datetime
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trustme

from probes.catalog import CheckKind, protocol
from probes.checks import CheckSpec, Reason, Target, run_check

FQDN = "cas1.lab.local"
Behaviour = Callable[[trio.abc.Stream], Awaitable[None]]



def server_context(ca: trustme.CA, *names: str, expired: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    not_after = past if expired else None
    not_before = past - datetime.timedelta(days=30) if expired else None
    cert = ca.issue_cert(*(names or (FQDN,)), not_before=not_before, not_after=not_after)
    cert.configure_cert(ctx)
    return ctx


class Rig:
    """Starts one-behaviour servers on 127.0.0.1 and records what they saw."""

    def __init__(self, nursery: trio.Nursery, ca: trustme.CA) -> None:
        self.nursery = nursery
        self.context = server_context(ca)
        self.snis: list[str | None] = []
        self.requests: list[bytes] = []
        self.context.sni_callback = lambda _obj, name, _ctx: self.snis.append(name)

    async def start(self, behaviour: Behaviour, *, tls: bool = True) -> Target:
        async def handler(raw: trio.SocketStream) -> None:
            async with raw:
                try:
                    stream: trio.abc.Stream = raw
                    if tls:
                        stream = trio.SSLStream(raw, self.context, server_side=True)
                    await behaviour(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the probe hung up first: fine

        serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        listeners = await self.nursery.start(serve)
        return Target(FQDN, "127.0.0.1", listeners[0].socket.getsockname()[1])

    async def read_request(self, stream: trio.abc.Stream) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        self.requests.append(data)
        return data


@pytest.fixture
def rig(nursery: trio.Nursery, ca: trustme.CA) -> Rig:
    return Rig(nursery, ca)


def response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def answering(rig: Rig, data: bytes) -> Behaviour:
    async def behaviour(stream: trio.abc.Stream) -> None:
        await rig.read_request(stream)
        await stream.send_all(data)

    return behaviour


def resetting(rig: Rig) -> Behaviour:
    """Exchange's unhealthy responder: read the request, then RST."""

    async def behaviour(stream: trio.abc.Stream) -> None:
        await rig.read_request(stream)
        raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        assert isinstance(raw, trio.SocketStream)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await trio.aclose_forcefully(raw)

    return behaviour


async def silent(stream: trio.abc.Stream) -> None:
    await trio.sleep_forever()


def owa(**overrides: object) -> CheckSpec:
    return CheckSpec.for_protocol(protocol("owa"), **overrides)


async def test_healthcheck_sends_fqdn_as_host_and_sni_and_passes_on_200(
    rig: Rig, ca_file: str
) -> None:
    target = await rig.start(answering(rig, response("200 OK", f"200 OK<br/>{FQDN}".encode())))
    result = await run_check(owa(ca_file=ca_file, expect_fqdn=True), target)
    assert (result.ok, result.reason, result.detail) == (True, Reason.OK, f"HTTP 200 {FQDN}")
    assert rig.snis == [FQDN]
    request = rig.requests[0].decode().lower()
    assert request.startswith("get /owa/healthcheck.htm http/1.1\r\n")
    assert f"host: {FQDN}\r\n" in request and "connection: close\r\n" in request


@pytest.mark.parametrize(
    ("payload", "overrides", "reason", "detail"),
    [
        (response("503 Service Unavailable", b"x"), {}, Reason.BAD_STATUS, "HTTP 503 Service"),
        (response("302 Found", b""), {}, Reason.BAD_STATUS, "HTTP 302 Found"),
        (response("200 OK", b"<html>IIS</html>"), {}, Reason.BAD_BODY, "<html>IIS"),
        (
            response("200 OK", b"200 OK<br/>cas2.lab.local"),
            {"expect_fqdn": True},
            Reason.WRONG_SERVER,
            "answered by 'cas2.lab.local'",
        ),
        (response("200 OK", b"200 OK<br/>cas2.lab.local"), {}, Reason.OK, "cas2"),
        (b"garbage\r\n\r\n", {}, Reason.PROTOCOL_ERROR, "bad HTTP response"),
        (b"", {}, Reason.CLOSED, "without a response"),
    ],
)
async def test_healthcheck_answers(
    rig: Rig,
    ca_file: str,
    payload: bytes,
    overrides: dict[str, object],
    reason: Reason,
    detail: str,
) -> None:
    target = await rig.start(answering(rig, payload))
    result = await run_check(owa(ca_file=ca_file, **overrides), target)
    assert result.reason is reason and result.ok is (reason is Reason.OK)
    assert detail in result.detail


async def test_reset_after_request_is_reset(rig: Rig, ca_file: str) -> None:
    result = await run_check(owa(ca_file=ca_file), await rig.start(resetting(rig)))
    assert (result.ok, result.reason) == (False, Reason.RESET)


async def test_server_silent_after_request_times_out_naming_the_phase(
    rig: Rig, ca_file: str
) -> None:
    async def hang(stream: trio.abc.Stream) -> None:
        await rig.read_request(stream)
        await trio.sleep_forever()

    result = await run_check(owa(ca_file=ca_file, timeout=0.3), await rig.start(hang))
    assert result.reason is Reason.TIMEOUT
    assert result.detail == "0.3s passed waiting for the response"


async def test_server_silent_in_tls_handshake_times_out(rig: Rig, ca_file: str) -> None:
    result = await run_check(owa(ca_file=ca_file, timeout=0.3), await rig.start(silent, tls=False))
    assert result.reason is Reason.TIMEOUT
    assert "TLS handshake" in result.detail


async def test_plain_http_where_tls_expected_is_a_tls_error(rig: Rig, ca_file: str) -> None:
    async def plain(stream: trio.abc.Stream) -> None:
        await stream.send_all(response("400 Bad Request", b"") * 50)

    result = await run_check(owa(ca_file=ca_file), await rig.start(plain, tls=False))
    assert result.reason is Reason.TLS_ERROR


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


@pytest.mark.parametrize("kind", [CheckKind.HEALTHCHECK, CheckKind.TCP, CheckKind.SMTP])
async def test_closed_port_is_refused(closed_port: int, kind: CheckKind) -> None:
    spec = CheckSpec(kind, path="/owa/healthcheck.htm", tls=False)
    result = await run_check(spec, Target(FQDN, "127.0.0.1", closed_port))
    assert (result.ok, result.reason) == (False, Reason.REFUSED)
    assert result.reason.haproxy_status == "L4CON"


async def test_full_backlog_is_a_connect_timeout() -> None:
    # listen(0) takes one connection; the kernel then drops further SYNs: a black hole
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        target = Target(FQDN, "127.0.0.1", listener.getsockname()[1])
        result = await run_check(CheckSpec(CheckKind.TCP, tls=False, timeout=0.3), target)
    assert result.reason is Reason.CONNECT_TIMEOUT
    assert result.detail == "no connection within 0.3s"


@pytest.mark.parametrize(
    ("names", "expired", "verify", "reason", "detail"),
    [
        (("other.lab.local",), False, True, Reason.CERT_ERROR, "Hostname mismatch"),
        ((FQDN,), True, True, Reason.CERT_ERROR, "expired"),
        (("other.lab.local",), False, False, Reason.OK, "HTTP 200"),
    ],
)
async def test_certificate_problems(
    nursery: trio.Nursery,
    ca: trustme.CA,
    ca_file: str,
    names: tuple[str, ...],
    expired: bool,
    verify: bool,
    reason: Reason,
    detail: str,
) -> None:
    rig = Rig(nursery, ca)
    rig.context = server_context(ca, *names, expired=expired)
    target = await rig.start(answering(rig, response("200 OK", b"200 OK<br/>x")))
    spec = owa(ca_file=ca_file) if verify else owa(verify=False)
    result = await run_check(spec, target)
    assert result.reason is reason and detail in result.detail


async def test_unknown_ca_is_a_certificate_error(rig: Rig) -> None:
    target = await rig.start(answering(rig, response("200 OK", b"200 OK")))
    result = await run_check(owa(ca_file=None), target)  # system store: trustme CA unknown
    assert result.reason is Reason.CERT_ERROR


async def test_tcp_check_with_tls_does_the_handshake(rig: Rig, ca_file: str) -> None:
    async def handshake_only(stream: trio.abc.Stream) -> None:
        assert isinstance(stream, trio.SSLStream)
        await stream.do_handshake()
        await trio.sleep_forever()

    target = await rig.start(handshake_only)
    ok = await run_check(CheckSpec(CheckKind.TCP, ca_file=ca_file), target)
    assert (ok.ok, ok.detail) == (True, "TLS handshake ok")
    assert rig.snis == [FQDN]


def test_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="cannot load ca file"):
        owa(ca_file=missing).tls_context()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": CheckKind.HEALTHCHECK}, "path must start with '/'"),
        ({"kind": CheckKind.TCP, "timeout": 0}, "timeout must be positive, got 0"),
        ({"kind": CheckKind.TCP, "starttls": True, "tls": False}, "starttls applies to"),
        ({"kind": CheckKind.IMAP, "starttls": True}, "exclude each other"),
        ({"kind": CheckKind.TCP, "verify": False, "ca_file": "x"}, "ca_file 'x' given"),
        ({"kind": "tcp"}, "kind must be a CheckKind"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fqdn": "", "host": "h", "port": 1}, "fqdn must be"),
        ({"fqdn": "a", "host": "", "port": 1}, "host must not be empty"),
        ({"fqdn": "a", "host": "h", "port": 70000}, "port must be in 1..65535, got 70000"),
    ],
)
def test_target_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Target(**kwargs)  # type: ignore[arg-type]


def test_for_protocol_takes_the_catalog_and_starttls_turns_implicit_tls_off() -> None:
    imap = CheckSpec.for_protocol(protocol("imap"))
    assert (imap.kind, imap.tls, imap.timeout) == (CheckKind.IMAP, True, 3.0)
    upgraded = CheckSpec.for_protocol(protocol("imap"), starttls=True)
    assert (upgraded.tls, upgraded.starttls) == (False, True)
    assert owa().path == "/owa/healthcheck.htm"
