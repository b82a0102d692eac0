"""The suite's own instruments can fail: the strict reader, the target predicate, the reply parser.

If the recording backend accepted what the balancer must never forward, or
the reply parser accepted a broken response, every hostile case would pass
for the wrong reason. These checks pin down that they do not.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.hostile.normalised import normalisation_problems
from tests.hostile.strict_reader import ReceivedRequest, StrictReader, Violation
from tests.hostile.wire import ResponseStream


async def read_all(data: bytes) -> list[ReceivedRequest]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(data)
    await send.aclose()
    reader = StrictReader(receive, 0)
    requests = []
    while (request := await reader.next_request()) is not None:
        requests.append(request)
    return requests


async def test_the_strict_reader_reads_both_framings_and_pipelined_requests() -> None:
    data = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\nTrailer-A: 1\r\n\r\n"
        b"GET /c HTTP/1.0\r\nX-Folded-Not: a\tb\r\n\r\n"
    )
    got = [(r.target, r.body, r.framing) for r in await read_all(data)]
    assert got == [(b"/a", b"hello", "length"), (b"/b", b"hello", "chunked"), (b"/c", b"", "none")]


async def test_the_strict_reader_marks_a_cut_body() -> None:
    [request] = await read_all(b"POST /a HTTP/1.1\r\nContent-Length: 9\r\n\r\nhello")
    assert (request.complete, request.body) == (False, b"hello")


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nX: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_the_strict_reader_refuses_what_a_proxy_must_not_forward(head: bytes) -> None:
    with pytest.raises(Violation):
        await read_all(head)


@pytest.mark.parametrize(
    "target",
    [b"/owa/../ecp/", b"/owa/./x", b"//ecp/", b"/%7Euser", b"/a%2fb", b"/a%3fb", b"/a\\b", b"*"],
)
def test_the_target_predicate_finds_what_is_not_normalised(target: bytes) -> None:
    assert normalisation_problems(target)


@pytest.mark.parametrize(
    "target", [b"/owa/", b"/ecp;x/", b"/owa/a%20b%3F", b"/owa/?x=/../%7e", b"/", b"/EWS/x.asmx"]
)
def test_the_target_predicate_accepts_normalised_targets(target: bytes) -> None:
    assert normalisation_problems(target) == []


@pytest.mark.parametrize(
    "stream",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",  # cut body
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_the_reply_parser_refuses_broken_response_streams(stream: bytes) -> None:
    parser = ResponseStream()
    parser.feed(stream)
    parser.feed(b"")
    assert parser.reply.malformed is not None or not parser.reply.answers[-1].complete


def test_the_reply_parser_reads_pipelined_answers_and_a_clean_close() -> None:
    parser = ResponseStream()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 No\r\nContent-")
    parser.feed(b"Length: 0\r\n\r\n")
    parser.feed(b"")
    assert parser.reply.malformed is None
    assert [(a.status, a.body, a.complete) for a in parser.reply.answers] == [
        (200, b"a", True),
        (404, b"", True),
    ]
