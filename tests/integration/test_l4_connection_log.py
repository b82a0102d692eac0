"""The L4 connection log: HAProxy's tcplog line as text, the same fields as JSON."""

from __future__ import annotations

import json
import logging
import re
from functools import partial

import pytest
import trio
import trio.testing

from lb.config.model import PoolConfig, ServerConfig
from lb.l4.events import ConnectionRecord
from lb.l4.frontend import Route, TcpFrontend
from lb.l4.settings import TcpFrontendSettings, UpstreamPolicy
from lb.logs import JsonFormatter, TextFormatter
from lb.pool import Pool
from tests.integration.l4_rig import RecordingEvents, echo_on_data, hung, make_pool, make_rig

# HAProxy's tcplog format (configuration.txt §8.2.2, `option tcplog`), as log tools read it.
TCPLOG = re.compile(
    r"(?P<client_ip>[\d.]+):(?P<client_port>\d+) "
    r"\[(?P<accept_date>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] "
    r"(?P<frontend_name>\S+) (?P<backend_name>\S+)/(?P<server_name>\S+) "
    r"(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tt>\+?\d+) (?P<bytes_read>\+?\d+) "
    r"(?P<termination_state>[-\w]{2}) "
    r"(?P<actconn>\d+)/(?P<feconn>\d+)/(?P<beconn>\d+)/(?P<srv_conn>\d+)/(?P<retries>\+?\d+) "
    r"(?P<srv_queue>\d+)/(?P<backend_queue>\d+)$"
)


def connection_records(caplog: pytest.LogCaptureFixture) -> list[ConnectionRecord]:
    records = [getattr(r, "tcp", None) for r in caplog.records if r.name == "caslb.access"]
    return [r for r in records if isinstance(r, ConnectionRecord)]


async def test_a_real_connection_logs_a_tcplog_line_and_the_same_fields_as_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="caslb.access")

    async def echo(stream: trio.SocketStream) -> None:
        await echo_on_data("cas1", stream)

    async with trio.open_nursery() as n:
        server = (await n.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1")))[0]
        port = server.socket.getsockname()[1]
        pool = Pool(PoolConfig(name="imap", servers=(
            ServerConfig("cas1", "127.0.0.1", port, "cas1.lab.local"),)))
        frontend = TcpFrontend(TcpFrontendSettings("imap-fe"),
                               default=Route(pool, UpstreamPolicy(first_response_timeout=5.0)),
                               events=RecordingEvents(), report=lambda *r: None)
        listener = (await n.start(partial(trio.serve_tcp, frontend.handle, 0,
                                             host="127.0.0.2")))[0]
        client = await trio.open_tcp_stream(*listener.socket.getsockname()[:2])
        await client.send_all(b"a1 NOOP\r\n")
        assert await client.receive_some(100) == b"cas1:a1 NOOP\r\n"
        await client.aclose()
        with trio.fail_after(10):
            while not connection_records(caplog):
                await trio.sleep(0.01)
        n.cancel_scope.cancel()

    (line,) = [r for r in caplog.records if getattr(r, "tcp", None) is not None]
    text = TextFormatter().format(line).split(" caslb.access ", 1)[1]
    match = TCPLOG.fullmatch(text)
    assert match, text
    fields = match.groupdict()
    assert fields["client_ip"] == "127.0.0.1" and fields["frontend_name"] == "imap-fe"
    assert (fields["backend_name"], fields["server_name"]) == ("imap", "cas1")
    assert fields["termination_state"] == "--" and fields["retries"] == "0"
    assert fields["bytes_read"] == str(len(b"cas1:a1 NOOP\r\n"))
    assert int(fields["Tc"]) >= 0 and int(fields["Tt"]) >= int(fields["Tc"])
    assert fields["feconn"] == fields["beconn"] == fields["srv_conn"] == "1"

    document = json.loads(JsonFormatter().format(line))
    assert list(document)[:3] == ["time", "level", "logger"]
    logged = {k: str(v) for k, v in document.items() if k in fields}
    assert list(logged) == list(fields)  # HAProxy's field order, HAProxy's names
    assert logged == fields


@pytest.mark.parametrize(
    ("refuse", "silent", "state", "server", "retries"),
    [
        ((), (), "--", "cas1", 0),
        (("cas1",), (), "--", "cas2", 1),  # a retry that succeeded ends normally
        (("cas1", "cas2", "cas3"), (), "SC", "cas3", 2),
        ((), ("cas1", "cas2", "cas3"), "sD", "cas3", 2),
    ],
)
async def test_the_termination_state_says_how_the_connection_ended(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
    refuse: tuple[str, ...], silent: tuple[str, ...], state: str, server: str, retries: int,
) -> None:
    caplog.set_level(logging.INFO, logger="caslb.access")
    behaviour = {s: hung if s in silent else echo_on_data for s in ("cas1", "cas2", "cas3")}
    async with trio.open_nursery() as n:
        rig = make_rig(n, behaviour, policy=UpstreamPolicy(first_response_timeout=1.0, retries=2))
        rig.backends.refuse.update(refuse)
        client = await rig.client()
        await client.send_all(b"x")
        await client.receive_some(100)
        await client.aclose()
        await trio.sleep(5)
        n.cancel_scope.cancel()
    (record,) = connection_records(caplog)
    assert (record.termination, record.server, record.retries) == (state, server, retries)
    assert (record.pool, record.frontend) == ("p", "fe")
    assert (record.t_connect >= 0) == (state != "SC")
    assert record.bytes_read == (len(f"{server}:x") if state == "--" else 0)


async def test_a_connection_without_a_route_logs_pr(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="caslb.access")
    route = Route(make_pool(), UpstreamPolicy())
    frontend = TcpFrontend(TcpFrontendSettings("sni-fe", sni_timeout=1.0), default=None,
                           sni={"mail.contoso.test": route}, events=RecordingEvents(),
                           report=lambda *r: None)
    client, ours = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as n:
        n.start_soon(frontend.handle, ours)
        await client.send_all(b"not a hello")
        assert await client.receive_some(100) == b""
        n.cancel_scope.cancel()
    (record,) = connection_records(caplog)
    assert (record.termination, record.pool, record.server) == ("PR", None, None)
    assert record.fe_conn == 1


async def test_no_line_is_written_with_the_access_log_off(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="caslb.access")
    async with trio.open_nursery() as n:
        rig = make_rig(n, {"cas1": echo_on_data})
        client = await rig.client()
        await client.send_all(b"x")
        assert await client.receive_some(100) == b"cas1:x"
        await client.aclose()
        await trio.sleep(1)
        n.cancel_scope.cancel()
    assert connection_records(caplog) == []
