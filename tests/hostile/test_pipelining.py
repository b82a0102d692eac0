"""Pipelined requests (RFC 9112 §9.3.2): answers in request order, bodies kept apart.

The requests go out in one write, so the balancer finds the second and third
already buffered while it relays the first.
"""

from __future__ import annotations

import logging

import pytest

from tests.hostile.case import request
from tests.hostile.frontend_rig import hostile_front
from tests.hostile.judge import assert_quiet_logs
from tests.hostile.recording_backend import fixed_body
from tests.hostile.wire import send_and_read


async def test_three_pipelined_gets_get_three_answers_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    targets = [(b"/owa/1", "owa"), (b"/ews/2", "ews"), (b"/mapi/3", "mapi")]
    data = b"".join(request(t) for t, _ in targets)
    async with hostile_front() as front:
        reply = await send_and_read(front.port, data, answers=3)
        await front.settle()
        got = {name: [r.target for r in b.complete] for name, b in front.backends.items()}
    assert reply.malformed is None, reply.describe()
    assert reply.statuses == [200, 200, 200], reply.describe()
    assert [a.body for a in reply.answers] == [b"%s GET %s\n" % (p.encode(), t) for t, p in targets]
    assert got == {"owa": [b"/owa/1"], "ews": [b"/ews/2"], "mapi": [b"/mapi/3"]}
    assert_quiet_logs(caplog)


async def test_three_pipelined_gets_to_one_pool_share_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    data = b"".join(request(b"/owa/%d" % i) for i in range(3))
    async with hostile_front() as front:
        reply = await send_and_read(front.port, data, answers=3)
        await front.settle()
        owa = front.backends["owa"].complete
    assert reply.statuses == [200, 200, 200], reply.describe()
    assert [(r.target, r.connection) for r in owa] == [(b"/owa/%d" % i, 0) for i in range(3)]
    assert [a.body for a in reply.answers] == [fixed_body("owa", r) for r in owa]
    assert_quiet_logs(caplog)


async def test_a_body_ends_where_its_content_length_says(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    post = request(b"/owa/p", b"Content-Length: 5", method=b"POST", body=b"helloGET")
    data = post + b" /ews/after HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"
    async with hostile_front() as front:
        reply = await send_and_read(front.port, data, answers=2)
        await front.settle()
        owa, ews = front.backends["owa"].complete, front.backends["ews"].complete
    assert reply.statuses == [200, 200], reply.describe()
    assert [(r.method, r.body) for r in owa] == [(b"POST", b"hello")]
    # "GET" after the five body bytes starts the next request: it is not part of the body.
    assert [(r.method, r.target) for r in ews] == [(b"GET", b"/ews/after")]
    assert_quiet_logs(caplog)


async def test_a_bad_request_behind_a_good_one_ends_the_pipeline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    bad = request(b"/ews/x", b"Content-Length: 3", b"Transfer-Encoding: chunked", method=b"POST")
    data = request(b"/owa/first") + bad + b"0\r\n\r\n" + request(b"/mapi/never")
    async with hostile_front() as front:
        reply = await send_and_read(front.port, data, answers=3)
        await front.settle()
        got = {name: [r.target for r in b.requests] for name, b in front.backends.items()}
    assert reply.statuses == [200, 400], reply.describe()
    assert reply.ending in ("eof", "reset"), reply.describe()
    assert got == {"owa": [b"/owa/first"], "ews": [], "mapi": []}
    assert_quiet_logs(caplog)
