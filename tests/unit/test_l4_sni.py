"""The ClientHello parser on real stdlib-ssl hellos, re-fragmented, truncated and garbled."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.l4.sni import HelloResult, HelloStatus, parse_client_hello


def captured_hello(
    server_name: str | None, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
) -> bytes:
    """The bytes a stdlib ssl client sends first, captured through memory BIOs."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refragment(hello: bytes, size: int) -> bytes:
    """The same handshake message re-split into records of at most `size` bytes."""
    version, payload = hello[1:3], hello[5:]
    out = bytearray()
    for start in range(0, len(payload), size):
        piece = payload[start : start + size]
        out += bytes((22,)) + version + len(piece).to_bytes(2, "big") + piece
    return bytes(out)


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_finds_the_name_a_stdlib_client_sends(maximum: ssl.TLSVersion) -> None:
    hello = captured_hello("Mail.Contoso.example", maximum)
    assert parse_client_hello(hello) == HelloResult(HelloStatus.FOUND, "mail.contoso.example")


def test_a_hello_without_sni_is_complete_and_nameless() -> None:
    # ssl sends no SNI for an IP literal.
    assert parse_client_hello(captured_hello("127.0.0.1")).status is HelloStatus.NO_SNI
    assert parse_client_hello(captured_hello(None)).status is HelloStatus.NO_SNI


def test_every_strict_prefix_asks_for_more() -> None:
    hello = captured_hello("owa.contoso.example")
    for end in range(len(hello)):
        assert parse_client_hello(hello[:end]).status is HelloStatus.NEED_MORE, end


@pytest.mark.parametrize("size", [1, 7, 100, 512])
def test_a_hello_split_over_many_records_is_reassembled(size: int) -> None:
    fragmented = refragment(captured_hello("eas.contoso.example"), size)
    assert parse_client_hello(fragmented).server_name == "eas.contoso.example"
    assert parse_client_hello(fragmented[:-1]).status is HelloStatus.NEED_MORE


def test_bytes_after_the_hello_are_ignored() -> None:
    hello = captured_hello("imap.contoso.example") + b"\x17\x03\x03\x00\x05hello"
    assert parse_client_hello(hello).server_name == "imap.contoso.example"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n", HelloStatus.NOT_TLS),
        (b"* OK IMAP4rev1\r\n", HelloStatus.NOT_TLS),
        (b"\x16\x02\x01\x00\x10" + bytes(16), HelloStatus.MALFORMED),  # record major 2
        (b"\x16\x03\x01\x00\x00", HelloStatus.MALFORMED),  # empty record
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", HelloStatus.MALFORMED),  # ServerHello
        (b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", HelloStatus.MALFORMED),  # empty hello
        (b"\x16\x03\x01\x00\x02\x01\x00\x15\x03\x01", HelloStatus.MALFORMED),  # alert midway
    ],
)
def test_garbage_gets_a_final_answer(data: bytes, status: HelloStatus) -> None:
    result = parse_client_hello(data)
    assert result.status is status
    assert result.detail


def test_a_name_with_control_bytes_is_malformed() -> None:
    hello = captured_hello("aaaa.example")
    bad = hello.replace(b"aaaa.example", b"aa\x00a.example")
    assert parse_client_hello(bad).status is HelloStatus.MALFORMED


def test_corrupted_inner_lengths_are_malformed_not_short() -> None:
    hello = bytearray(captured_hello("ews.contoso.example"))
    hello[5 + 4 + 34] = 0xFF  # session id length far past the message end
    assert parse_client_hello(bytes(hello)).status is HelloStatus.MALFORMED


@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), HelloResult)


_HELLO = captured_hello("fuzz.contoso.example")


@given(st.integers(0, len(_HELLO) - 1), st.integers(0, 255), st.integers(1, 600))
def test_never_raises_on_a_corrupted_hello(index: int, value: int, size: int) -> None:
    corrupted = bytearray(refragment(_HELLO, size))
    corrupted[min(index, len(corrupted) - 1)] = value
    result = parse_client_hello(bytes(corrupted))
    assert result.status.final or result.status is HelloStatus.NEED_MORE
    if result.status is HelloStatus.FOUND:
        assert result.server_name and result.server_name.isascii()
