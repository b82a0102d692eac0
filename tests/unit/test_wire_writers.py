"""lb.l7.wire writing: heads, body framing toward each kind of client, and the checks
that keep a relayed body framed as its head says. h11 reads back what is written."""

from __future__ import annotations

import h11
import pytest

from lb.l7.heads import forwarded_request
from lb.l7.wire.connection import WireConnection, send_all
from lb.l7.wire.events import Data, EndOfMessage, LocalWireError, Request, Response


def _serving(request: bytes) -> WireConnection:
    conn = WireConnection(server=True)
    conn.receive_data(request)
    assert isinstance(conn.next_event(), Request)
    assert isinstance(conn.next_event(), EndOfMessage)
    return conn


GET_11 = b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"


def _read_back(wire: bytes, method: str = "GET", version: str = "1.1") -> list[h11.Event]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "m")],
                            http_version=version))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    events = []
    while (event := client.next_event()) is not h11.NEED_DATA:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    return events


def test_a_request_head_is_written_as_http_1_1_with_its_fields() -> None:
    conn = WireConnection(server=False)
    wire = send_all(conn, (Request(b"GET", b"/owa/", [(b"host", b"m"), (b"x-a", b"b")]),
                           EndOfMessage()))
    assert wire == b"GET /owa/ HTTP/1.1\r\nhost: m\r\nx-a: b\r\n\r\n"


def test_a_chunked_request_is_forwarded_chunked_with_its_trailers() -> None:
    conn = WireConnection(server=False)
    head = Request(b"POST", b"/", [(b"host", b"m"), (b"transfer-encoding", b"chunked")])
    wire = send_all(conn, (head, Data(b"hello"), Data(b""), EndOfMessage([(b"x-t", b"1")])))
    assert wire.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n")


def test_a_counted_body_must_get_exactly_its_count() -> None:
    conn = WireConnection(server=False)
    conn.send(Request(b"POST", b"/", [(b"host", b"m"), (b"content-length", b"3")]))
    with pytest.raises(LocalWireError, match="more body"):
        conn.send(Data(b"abcd"))
    conn.send(Data(b"ab"))
    with pytest.raises(LocalWireError, match="short"):
        conn.send(EndOfMessage())


def test_a_counted_response_keeps_its_length_and_reads_back() -> None:
    conn = _serving(GET_11)
    wire = send_all(conn, (Response(200, [(b"content-length", b"2")], b"OK"), Data(b"ok"),
                           EndOfMessage()))
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert conn.ready_for_next_cycle()


def test_a_response_of_unknown_length_goes_chunked_to_an_http_1_1_client() -> None:
    conn = _serving(GET_11)
    wire = send_all(conn, (Response(200, [(b"x", b"y")]), Data(b"part"), EndOfMessage()))
    events = _read_back(wire)
    assert isinstance(events[0], h11.Response)
    assert (b"transfer-encoding", b"chunked") in list(events[0].headers)
    assert bytes(events[1].data) == b"part"  # type: ignore[union-attr]
    assert conn.ready_for_next_cycle()


def test_a_response_of_unknown_length_goes_close_delimited_to_an_http_1_0_client() -> None:
    conn = _serving(b"GET / HTTP/1.0\r\n\r\n")
    wire = send_all(conn, (Response(200, [(b"transfer-encoding", b"chunked")]), Data(b"part"),
                           EndOfMessage()))
    assert wire == b"HTTP/1.1 200 \r\nconnection: close\r\n\r\npart"
    assert not conn.ready_for_next_cycle()


def test_a_client_that_said_close_gets_connection_close() -> None:
    conn = _serving(b"GET / HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
    wire = send_all(conn, (Response(204, []), EndOfMessage()))
    assert b"\r\nconnection: close\r\n" in wire
    assert not conn.ready_for_next_cycle()


def test_a_response_that_says_close_ends_the_client_connection() -> None:
    conn = _serving(GET_11)
    send_all(conn, (Response(400, [(b"content-length", b"0"), (b"connection", b"close")]),
                    EndOfMessage()))
    assert not conn.ready_for_next_cycle()


def test_a_response_to_head_keeps_its_head_and_sends_no_body() -> None:
    conn = _serving(b"HEAD / HTTP/1.1\r\nHost: m\r\n\r\n")
    wire = send_all(conn, (Response(200, [(b"content-length", b"10")]), EndOfMessage()))
    assert wire == b"HTTP/1.1 200 \r\ncontent-length: 10\r\n\r\n"
    assert isinstance(_read_back(wire, "HEAD")[-1], h11.EndOfMessage)
    with pytest.raises(LocalWireError):
        conn.send(Data(b"x"))  # the message is over


def test_a_head_while_a_message_is_open_is_refused() -> None:
    conn = _serving(GET_11)
    conn.send(Response(200, [(b"content-length", b"1")]))
    with pytest.raises(LocalWireError):
        conn.send(Response(200, [(b"content-length", b"1")]))


def test_the_next_cycle_waits_for_both_messages() -> None:
    conn = WireConnection(server=True)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n\r\no")
    conn.next_event()
    conn.next_event()
    send_all(conn, (Response(200, [(b"content-length", b"0")]), EndOfMessage()))
    assert not conn.ready_for_next_cycle()  # the request body is not all read
    with pytest.raises(LocalWireError):
        conn.start_next_cycle()


def test_a_value_caslb_made_up_is_checked_before_it_is_written() -> None:
    fields = [(b"host", b"evil\r\nX-Injected: 1")]
    with pytest.raises(LocalWireError, match="host"):
        forwarded_request(b"GET", b"/", fields, parsed=False)
    assert forwarded_request(b"GET", b"/", [(b"host", b"fine")], parsed=False).headers
