"""lb.l7.wire reading heads: each rule of the request and response grammar, one test."""

from __future__ import annotations

import pytest

from lb.l7.wire.connection import WireConnection
from lb.l7.wire.events import (
    NEED_DATA,
    ConnectionClosed,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
    WireError,
)


def _request(raw: bytes, **kwargs: int) -> Request:
    conn = WireConnection(server=True, **kwargs)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, Request)
    return event


def _refused(raw: bytes, *, server: bool = True) -> WireError:
    conn = WireConnection(server=server)
    if not server:
        conn.send(Request(b"GET", b"/", [(b"host", b"x")]))
        conn.send(EndOfMessage())
    conn.receive_data(raw)
    with pytest.raises(WireError) as caught:
        conn.next_event()
    with pytest.raises(WireError):  # kept: the connection never reads on
        conn.next_event()
    return caught.value


def test_a_request_head_is_read_with_names_lowercased_and_ows_trimmed() -> None:
    request = _request(b"GET /owa/?a=b HTTP/1.1\r\nHost: mail\r\nX-Test: \t a  b \t\r\n\r\n")
    assert (request.method, request.target, request.http_version) == (
        b"GET", b"/owa/?a=b", b"1.1")
    assert request.headers == [(b"host", b"mail"), (b"x-test", b"a  b")]


def test_lines_may_end_in_a_bare_lf() -> None:
    request = _request(b"GET / HTTP/1.1\nHost: mail\nAccept: */*\n\n")
    assert request.headers == [(b"host", b"mail"), (b"accept", b"*/*")]


def test_an_empty_value_is_a_field() -> None:
    assert _request(b"GET / HTTP/1.1\r\nHost: m\r\nX-Empty:\r\n\r\n").headers[1] == (
        b"x-empty", b"")


@pytest.mark.parametrize(
    "line",
    [
        b"GET  / HTTP/1.1",  # two spaces
        b"GET / HTTP/1.1 ",  # something after the version
        b"GET / http/1.1",
        b"GET / HTTP/11",
        b"GET /a b HTTP/1.1",
        b"G(T / HTTP/1.1",  # a method that is not a token
        b"GET /\x7f HTTP/1.1",
    ],
)
def test_a_request_line_not_exactly_method_target_version_is_refused(line: bytes) -> None:
    assert _refused(line + b"\r\nHost: m\r\n\r\n").status == 400


def test_a_head_that_starts_with_a_blank_line_is_refused() -> None:
    assert "blank line" in str(_refused(b"\r\nGET / HTTP/1.1\r\nHost: m\r\n\r\n"))


@pytest.mark.parametrize(
    "field",
    [
        b"Host : m",  # whitespace before the colon
        b"Ho(st: m",  # a name that is not a token
        b"X-A: a\x00b",
        b"X-A: a\rb",
        b"X-A: a\x0bb",
        b"no colon at all",
        b": no name",
    ],
)
def test_a_malformed_field_line_is_refused(field: bytes) -> None:
    assert _refused(b"GET / HTTP/1.1\r\nHost: m\r\n" + field + b"\r\n\r\n").status == 400


def test_obs_fold_is_refused_after_a_field_and_as_the_first_line() -> None:
    _refused(b"GET / HTTP/1.1\r\nHost: m\r\nX-A: a\r\n b\r\n\r\n")
    _refused(b"GET / HTTP/1.1\r\n Host: m\r\n\r\n")
    _refused(b"GET / HTTP/1.1\r\nHost: m\r\nX-A: a\r\n\tb\r\n\r\n")


def test_a_bare_cr_is_refused_before_the_head_is_complete() -> None:
    conn = WireConnection(server=True)
    conn.receive_data(b"GET / HTTP/1.1\rHost: m\r")  # no blank line would ever come
    with pytest.raises(WireError, match="bare CR"):
        conn.next_event()


def test_a_cr_at_the_end_of_what_arrived_may_be_half_a_crlf() -> None:
    conn = WireConnection(server=True)
    conn.receive_data(b"GET / HTTP/1.1\r")
    assert conn.next_event() is NEED_DATA


def test_content_length_repeated_or_listed_with_one_value_is_folded_into_one_field() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3, 3\r\nX: y\r\nContent-Length: 3\r\n\r\n"
    assert _request(raw).headers == [(b"host", b"m"), (b"content-length", b"3"), (b"x", b"y")]


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\nContent-Length: 4",
        b"Content-Length: 3, 4",
        b"Content-Length: +3",
        b"Content-Length: 0x3",
        b"Content-Length: 3 3",
        b"Content-Length: ",
        b"Content-Length: " + b"1" * 21,
    ],
)
def test_a_content_length_that_is_not_one_number_is_refused(fields: bytes) -> None:
    assert _refused(b"POST / HTTP/1.1\r\nHost: m\r\n" + fields + b"\r\n\r\n").status == 400


def test_twenty_digits_of_content_length_are_read() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 00000000000000000003\r\n\r\n"
    assert _request(raw).headers[1] == (b"content-length", b"3")


def test_transfer_encoding_chunked_in_any_case_is_read_as_chunked() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"
    assert _request(raw).headers[1] == (b"transfer-encoding", b"chunked")


@pytest.mark.parametrize(
    "fields",
    [
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked, chunked",
        b"Transfer-Encoding: identity",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding: xchunked",
    ],
)
def test_a_transfer_encoding_other_than_one_chunked_is_refused(fields: bytes) -> None:
    assert _refused(b"POST / HTTP/1.1\r\nHost: m\r\n" + fields + b"\r\n\r\n").status == 400


def test_an_http_1_1_request_needs_exactly_one_host() -> None:
    assert "no Host" in str(_refused(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"))
    assert "more than one" in str(_refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"))
    assert _request(b"GET / HTTP/1.0\r\n\r\n").headers == []
    _refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")


def test_an_incomplete_head_over_the_limit_is_431() -> None:
    conn = WireConnection(server=True, max_head_bytes=100)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: m\r\n" + b"X-A: aaaaaaaaaa\r\n" * 4)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"X-A: aaaaaaaaaa\r\n" * 5)
    with pytest.raises(WireError) as caught:
        conn.next_event()
    assert caught.value.status == 431


def test_a_complete_head_over_the_limit_is_left_to_the_proxy_to_measure() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: m\r\n" + b"X-A: aaaaaaaaaa\r\n" * 20 + b"\r\n"
    assert len(_request(raw, max_head_bytes=100).headers) == 21


def test_eof_between_requests_is_connection_closed_and_inside_a_head_an_error() -> None:
    idle = WireConnection(server=True)
    idle.receive_data(b"")
    assert isinstance(idle.next_event(), ConnectionClosed)
    cut = WireConnection(server=True)
    cut.receive_data(b"GET / HTTP/1.1\r\nHo")
    cut.receive_data(b"")
    with pytest.raises(WireError, match="closed"):
        cut.next_event()


def test_a_head_in_pieces_is_read_once_it_is_whole() -> None:
    conn = WireConnection(server=True)
    for piece in (b"GET / HT", b"TP/1.1\r\nHost: m\r", b"\n"):
        conn.receive_data(piece)
        assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\r\n")
    assert isinstance(conn.next_event(), Request)
    assert isinstance(conn.next_event(), EndOfMessage)


def test_a_status_line_is_version_code_and_an_optional_reason() -> None:
    for line, reason in ((b"HTTP/1.1 200 OK", b"OK"), (b"HTTP/1.1 200", b""),
                         (b"HTTP/1.1 404 Not  Found\xe9", b"Not  Found\xe9")):
        conn = WireConnection(server=False)
        conn.send(Request(b"GET", b"/", [(b"host", b"x")]))
        conn.send(EndOfMessage())
        conn.receive_data(line + b"\r\nContent-Length: 0\r\n\r\n")
        response = conn.next_event()
        assert isinstance(response, Response) and response.reason == reason


@pytest.mark.parametrize("line", [b"HTTP/1.1 20 OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 200OK",
                                  b"HTTP/1.1 2000 OK", b"ICY 200 OK"])
def test_a_malformed_status_line_is_refused(line: bytes) -> None:
    _refused(line + b"\r\nContent-Length: 0\r\n\r\n", server=False)


def test_informational_responses_come_before_the_final_one() -> None:
    conn = WireConnection(server=False)
    conn.send(Request(b"GET", b"/", [(b"host", b"x")]))
    conn.send(EndOfMessage())
    conn.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert isinstance(conn.next_event(), InformationalResponse)
    final = conn.next_event()
    assert type(final) is Response and final.status_code == 200
    assert isinstance(conn.next_event(), EndOfMessage)


def test_a_response_to_no_request_is_refused() -> None:
    conn = WireConnection(server=False)
    conn.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(WireError, match="no request"):
        conn.next_event()
