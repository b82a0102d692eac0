"""Backends that break HTTP on the response side: what the client gets, what is reused.

RFC 9112 §6.3: a response with an invalid or ambiguous framing is an
unrecoverable error; a proxy closes the server connection, discards the
response and sends 502. A response cut mid-body cannot become a 502 once
its head went out: the client connection is cut instead, never finished
with a made-up end. A server that writes more than one response per request
has poisoned its connection: the next request must go over a fresh one.
"""

from __future__ import annotations

import logging

import pytest
import trio

from tests.farmclient import HttpClient
from tests.hostile.frontend_rig import NAMESPACE, hostile_front
from tests.hostile.judge import assert_quiet_logs
from tests.hostile.misbehaving_responders import (
    INJECTED,
    first_connection_only,
    in_two_writes,
    raw_answer,
    response_head,
)
from tests.hostile.recording_backend import fixed_body
from tests.hostile.wire import HANG_BOUND, ResponseStream, send_and_read

GET_OWA = b"GET /owa/a HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"
GET_OWA_TWICE = GET_OWA + b"GET /owa/b HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"

BAD_HEADS = {
    "cl-and-te": response_head(b"Content-Length: 5", b"Transfer-Encoding: chunked")
    + b"5\r\nhello\r\n0\r\n\r\n",
    "te-and-cl": response_head(b"Transfer-Encoding: chunked", b"Content-Length: 5")
    + b"5\r\nhello\r\n0\r\n\r\n",
    "cl-conflicting": response_head(b"Content-Length: 5", b"Content-Length: 6") + b"hello!",
    "cl-not-digits": response_head(b"Content-Length: +5") + b"hello",
    "te-not-chunked-final": response_head(b"Transfer-Encoding: chunked, gzip") + b"hello",
    "5000-fields": response_head(*(b"a%d: b" % i for i in range(5000)), b"Content-Length: 0"),
    "5000-fields-spread": response_head(
        *(b"X-Field-%04d: %s" % (i, b"v" * 10) for i in range(5000)), b"Content-Length: 0"
    ),
    "head-over-64k": response_head(b"X-Big: " + b"a" * 70_000, b"Content-Length: 0"),
    "head-over-1m": response_head(b"X-Big: " + b"a" * 1_100_000, b"Content-Length: 0"),
    "status-line-garbage": b"HTTP/1.1 OK 200\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_HEADS))
async def test_a_response_with_bad_framing_or_head_is_a_502(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    async with hostile_front(responders={"owa": raw_answer(BAD_HEADS[name])}) as front:
        # Two pipelined requests: the second must not travel over the poisoned connection.
        reply = await send_and_read(front.port, GET_OWA_TWICE)
        await front.settle()
        owa = front.backends["owa"]
    assert reply.malformed is None, reply.describe()
    assert reply.statuses == [502], reply.describe()
    assert reply.ending in ("eof", "reset"), reply.describe()
    assert [r.connection for r in owa.complete] == [0], "the poisoned connection was reused"
    assert_quiet_logs(caplog)


async def test_an_obs_fold_in_a_response_is_unfolded_or_502(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    folded = response_head(b"X-Test: a", b" b", b"Content-Length: 2") + b"ok"
    async with hostile_front(responders={"owa": raw_answer(folded)}) as front:
        reply = await send_and_read(front.port, GET_OWA)
        await front.settle()
    assert reply.malformed is None, reply.describe()
    assert reply.statuses in ([502], [200]), reply.describe()
    assert b"\r\n b" not in reply.raw, "the fold reached the client as it was"  # RFC 9112 §5.2
    if reply.statuses == [200]:
        assert reply.answers[0].header(b"x-test") == b"a b"
    assert_quiet_logs(caplog)


async def test_a_bad_chunk_in_the_same_write_as_the_head_is_502_or_a_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    bad = response_head(b"Transfer-Encoding: chunked") + b"5\r\nhelloXX0\r\n\r\n"
    async with hostile_front(responders={"owa": raw_answer(bad)}) as front:
        reply = await send_and_read(front.port, GET_OWA_TWICE, answers=2)
        await front.settle()
        owa = front.backends["owa"]
    assert reply.ending in ("eof", "reset"), reply.describe()
    complete = [a.status for a in reply.answers if a.complete]
    # Either nothing reached the client and it got a 502, or the head did and it was cut.
    assert complete == [502] or (complete == [] and len(reply.answers) == 1), reply.describe()
    assert [r.connection for r in owa.complete] == [0]
    assert_quiet_logs(caplog)


async def test_a_bad_chunk_after_the_body_started_cuts_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    go = trio.Event()
    started = response_head(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n"
    responder = in_two_writes(started, b"zz\r\nworld\r\n0\r\n\r\n", go=go)
    async with hostile_front(responders={"owa": responder}) as front:
        stream = await trio.open_tcp_stream("127.0.0.1", front.port)
        parser = ResponseStream()
        with trio.fail_after(HANG_BOUND):
            await stream.send_all(GET_OWA)
            while not (parser.reply.answers and parser.reply.answers[0].body == b"hello"):
                parser.feed(bytes(await stream.receive_some(65536)))
            go.set()
            while (data := await _receive_or_empty(stream)) != b"":
                parser.feed(data)
        await trio.aclose_forcefully(stream)
        await front.settle()
    [answer] = parser.reply.answers
    assert answer.status == 200
    assert not answer.complete, "the balancer finished a body the server never finished"
    assert answer.body == b"hello"
    assert_quiet_logs(caplog)


async def _receive_or_empty(stream: trio.SocketStream) -> bytes:
    try:
        return bytes(await stream.receive_some(65536))
    except trio.BrokenResourceError:
        return b""


def _real(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("when", ["same-write", "later-write"])
async def test_an_unsolicited_second_response_never_reaches_the_client(
    when: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    go, written = trio.Event(), trio.Event()
    if when == "same-write":
        bad = raw_answer(_real(b"first") + INJECTED)
        written.set()
    else:  # once the first answer reached the client
        bad = in_two_writes(_real(b"first"), INJECTED, go=go, written=written)
    async with hostile_front(responders={"owa": first_connection_only(bad)}) as front:
        client = HttpClient(await trio.open_tcp_stream("127.0.0.1", front.port), NAMESPACE)
        try:
            with trio.fail_after(HANG_BOUND):
                first = await client.request("GET", "/owa/a")
                go.set()
                await written.wait()  # the extra bytes are on their way before request two
                second = await client.request("GET", "/owa/b")
        finally:
            await client.aclose()
        await front.settle()
        owa = front.backends["owa"]
    assert first.body == b"first"
    assert second.body != b"INJECTED"
    assert second.header("x-backend") == "owa"
    assert [(r.target, r.connection) for r in owa.complete] == [(b"/owa/a", 0), (b"/owa/b", 1)]
    assert second.body == fixed_body("owa", owa.complete[1])
    assert_quiet_logs(caplog)


async def test_an_http_1_0_response_reaches_the_client_as_http_1_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"  # a server, or its proxy, on 1.0
    async with hostile_front(responders={"owa": raw_answer(old, keep=False)}) as front:
        reply = await send_and_read(front.port, GET_OWA)
        await front.settle()
    assert reply.malformed is None, reply.describe()
    assert reply.statuses == [200], reply.describe()
    assert reply.raw.startswith(b"HTTP/1.1 200 ") and reply.raw.endswith(b"\r\n\r\nok")
    assert_quiet_logs(caplog)
