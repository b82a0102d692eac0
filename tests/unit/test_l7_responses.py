"""Canned error responses, written by caslb's codec, read back as valid HTTP by h11."""

from __future__ import annotations

import h11
import pytest

from lb.l7 import responses
from lb.l7.wire.connection import WireConnection, send_all


def serialise(events: responses.ErrorEvents) -> tuple[h11.Response, bytes]:
    server = WireConnection(server=True)
    server.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    server.next_event()
    server.next_event()
    wire = send_all(server, events)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    head = client.next_event()
    body = client.next_event()
    assert isinstance(head, h11.Response) and isinstance(body, h11.Data)
    assert isinstance(client.next_event(), h11.EndOfMessage)
    return head, bytes(body.data)


def test_no_server_names_the_pool() -> None:
    head, body = serialise(responses.no_server("ews"))
    assert head.status_code == 503
    assert b"'ews'" in body


@pytest.mark.parametrize(
    ("events", "status"),
    [
        (responses.bad_request("x"), 400),
        (responses.request_timeout(), 408),
        (responses.headers_too_large("x"), 431),
        (responses.bad_gateway("owa", "reset"), 502),
        (responses.gateway_timeout("owa"), 504),
    ],
)
def test_errors_that_end_the_connection_say_close(
    events: responses.ErrorEvents, status: int
) -> None:
    head, _ = serialise(events)
    assert head.status_code == status
    assert (b"connection", b"close") in list(head.headers)


def test_status_outside_errors_is_refused() -> None:
    with pytest.raises(ValueError, match="200"):
        responses.error_response(200, "fine")
