"""lb.l7.wire reading bodies: counted, chunked and to-EOF, and where a message ends."""

from __future__ import annotations

import pytest

from lb.l7.wire.bodies import MAX_CHUNK
from lb.l7.wire.connection import WireConnection
from lb.l7.wire.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Request,
    Response,
    Sentinel,
    WireError,
)

POST = b"POST /ews/ HTTP/1.1\r\nHost: m\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


def _events(conn: WireConnection) -> list[Event | Sentinel]:
    """Every event until the codec needs bytes, pauses, or the connection closes."""
    out: list[Event | Sentinel] = []
    while True:
        event = conn.next_event()
        out.append(event)
        if event in (NEED_DATA, PAUSED) or isinstance(event, ConnectionClosed):
            return out


def _body(events: list[Event | Sentinel]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def _server(raw: bytes) -> WireConnection:
    conn = WireConnection(server=True)
    conn.receive_data(raw)
    return conn


def _client(*, method: bytes = b"GET") -> WireConnection:
    conn = WireConnection(server=False)
    conn.send(Request(method, b"/", [(b"host", b"x")]))
    conn.send(EndOfMessage())
    return conn


def test_a_counted_body_ends_at_its_count_and_what_follows_waits() -> None:
    conn = _server(POST + b"Content-Length: 5\r\n\r\nhel")
    assert _body(_events(conn)) == b"hel"
    conn.receive_data(b"loGET / HTTP/1.1\r\n")
    events = _events(conn)
    assert _body(events) == b"lo"
    assert isinstance(events[-2], EndOfMessage) and events[-1] is PAUSED
    assert conn.buffered() == len(b"GET / HTTP/1.1\r\n")


def test_a_counted_body_cut_short_by_eof_is_an_error() -> None:
    conn = _server(POST + b"Content-Length: 5\r\n\r\nhel")
    _events(conn)
    conn.receive_data(b"")
    with pytest.raises(WireError, match="closed"):
        conn.next_event()


def test_a_request_without_length_or_chunked_has_no_body() -> None:
    conn = _server(b"POST / HTTP/1.1\r\nHost: m\r\n\r\nGET")
    events = _events(conn)
    assert isinstance(events[0], Request) and isinstance(events[1], EndOfMessage)
    assert events[2] is PAUSED


def test_a_chunked_body_in_pieces_with_extensions_and_trailers() -> None:
    conn = _server(CHUNKED)
    pieces = [b"5;name=va", b"l\r\nhel", b"lo\r", b"\n3\r\nabc\r\n0\r\nX-T", b"rail: yes\r\n\r\n"]
    events: list[Event | Sentinel] = []
    for piece in pieces:
        conn.receive_data(piece)
        events += _events(conn)
    assert _body(events) == b"helloabc"
    end = events[-2]
    assert isinstance(end, EndOfMessage) and end.headers == [(b"x-trail", b"yes")]


@pytest.mark.parametrize(
    "body",
    [
        b"5\nhello\r\n0\r\n\r\n",  # a size line ending in a bare LF
        b"5\r\nhelloX\r\n0\r\n\r\n",  # data not followed by CRLF
        b"5\r\nhello\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5 ;x\r\nhello\r\n0\r\n\r\n",
        b"1" * 21 + b"\r\n",  # more than 20 hex digits
        b"0\r\nContent-Length: 5\r\n\r\n",  # framing in the trailers
        b"0\r\nX-A : b\r\n\r\n",  # a malformed trailer line
        b"0\r\nX-A: a\x01b\r\n\r\n",  # a control character in a trailer
        b"0\r\n\n",  # a bare LF ends the last chunk
    ],
)
def test_malformed_chunked_framing_is_refused(body: bytes) -> None:
    conn = _server(CHUNKED + body)
    with pytest.raises(WireError):
        _events(conn)


def test_a_chunk_over_the_size_limit_is_refused_before_its_data() -> None:
    conn = _server(CHUNKED + b"%x\r\n" % (MAX_CHUNK + 1))
    with pytest.raises(WireError, match="over the limit"):
        _events(conn)
    ok = _server(CHUNKED + b"%x\r\nab" % MAX_CHUNK)
    assert _body(_events(ok)) == b"ab"


def test_eof_inside_a_chunked_body_is_an_error() -> None:
    conn = _server(CHUNKED + b"5\r\nhel")
    _events(conn)
    conn.receive_data(b"")
    with pytest.raises(WireError):
        conn.next_event()


def test_a_response_without_framing_is_read_to_eof_and_ends_the_connection() -> None:
    conn = _client()
    conn.receive_data(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert _body(_events(conn)) == b"some"
    conn.receive_data(b" more")
    conn.receive_data(b"")
    events = _events(conn)
    assert _body(events) == b" more"
    assert isinstance(events[-2], EndOfMessage) and isinstance(events[-1], ConnectionClosed)
    assert not conn.ready_for_next_cycle()


@pytest.mark.parametrize(("status", "method"), [(204, b"GET"), (304, b"GET"), (200, b"HEAD")])
def test_responses_that_have_no_body_whatever_their_fields_say(status: int, method: bytes) -> None:
    conn = _client(method=method)
    conn.receive_data(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nHTTP/1.1" % status)
    events = _events(conn)
    assert isinstance(events[0], Response) and isinstance(events[1], EndOfMessage)
    assert events[2] is PAUSED  # what follows is never read as this response's body


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x, Close\r\n\r\n"],
)
def test_an_http_1_0_or_close_response_ends_the_upstream_connection(head: bytes) -> None:
    conn = _client()
    conn.receive_data(head)
    _events(conn)
    assert not conn.ready_for_next_cycle()


def test_a_kept_alive_exchange_starts_the_next_cycle() -> None:
    conn = _client()
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    _events(conn)
    assert conn.ready_for_next_cycle()
    conn.start_next_cycle()
    assert conn.our_state.value == conn.their_state.value == "idle"


@pytest.mark.parametrize("pieces", [[b"5\r\nhelloXY0\r\n\r\n"], [b"5\r\nhello\r", b"X0\r\n\r\n"]])
def test_chunk_data_must_be_followed_by_exactly_crlf(pieces: list[bytes]) -> None:
    conn = _server(CHUNKED)
    with pytest.raises(WireError, match="CRLF"):
        for piece in pieces:
            conn.receive_data(piece)
            _events(conn)


def _dripped(conn: WireConnection, raw: bytes) -> list[Event | Sentinel]:
    """Feed `raw` a byte at a time (a slow or hostile peer), collecting the events."""
    events: list[Event | Sentinel] = []
    for index in range(len(raw)):
        conn.receive_data(raw[index : index + 1])
        events += [e for e in _events(conn) if e is not NEED_DATA]
    return events


def test_messages_that_arrive_a_byte_at_a_time_read_as_a_whole_and_as_bytes() -> None:
    chunked = CHUNKED + b"5;x=y\r\nhello\r\n0\r\nX-Trail: 1\r\n\r\n"
    counted = b"POST /b HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc"
    events = _dripped(WireConnection(server=True), chunked)
    assert _body(events) == b"hello"
    head, end = events[0], events[-1]
    assert isinstance(head, Request) and head.headers[1] == (b"transfer-encoding", b"chunked")
    assert isinstance(end, EndOfMessage) and end.headers == [(b"x-trail", b"1")]
    conn = WireConnection(server=True)
    events = _dripped(conn, counted)
    assert isinstance(events[0], Request) and events[0].headers[2] == (b"x-a", b"b")
    assert _body(events) == b"abc"
    for event in events:
        for value in (getattr(event, "data", b""), getattr(event, "target", b"")):
            assert type(value) is bytes  # never a view of the buffer that grows
        for name, value in getattr(event, "headers", []):
            assert type(name) is bytes and type(value) is bytes


def test_a_head_that_came_in_pieces_leaves_the_next_one_intact() -> None:
    conn = WireConnection(server=True)
    conn.receive_data(b"GET /a HTTP/1.1\r\nHo")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"st: m\r\n\r\nGET /b HTTP/1.1\r\nHost: m\r")
    first = conn.next_event()
    assert isinstance(first, Request) and first.target == b"/a"
    assert isinstance(conn.next_event(), EndOfMessage)
    conn.send(Response(204, []))
    conn.send(EndOfMessage())
    conn.start_next_cycle()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\n\r\n")
    second = conn.next_event()
    assert isinstance(second, Request) and second.target == b"/b"


def test_a_bare_cr_is_found_across_pieces() -> None:
    conn = WireConnection(server=True)
    conn.receive_data(b"GET / HTTP/1.1\r\nX: a\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"b\r\n")
    with pytest.raises(WireError, match="bare CR"):
        conn.next_event()
